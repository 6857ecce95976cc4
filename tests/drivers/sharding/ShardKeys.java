// pgjdbc through pgshard over two shards: the tenant key as a Bind parameter (setLong), ten
// executions so that pgjdbc moves from unnamed to server-prepared statements
// (prepareThreshold 5), and a transaction with autocommit off. Run by
// tests/integration/t_sharding.sh: java ShardKeys PORT USER PASSWORD DB TENANT...
// Prints "sum TENANT jdbc VALUE" lines for the script to compare, then "RESULT ok".
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.util.Properties;

public final class ShardKeys {
    private ShardKeys() {}

    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.setProperty("user", args[1]);
        p.setProperty("password", args[2]);
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/" + args[3];
        try (Connection c = DriverManager.getConnection(url, p)) {
            for (int i = 4; i < args.length; i++) {
                long t = Long.parseLong(args[i]);
                long sum = -1;
                try (PreparedStatement ps = c.prepareStatement(
                        "/* pgshard: target=primary */ SELECT coalesce(sum(amount), 0)::int FROM orders WHERE tenant_id = ?")) {
                    for (int k = 0; k < 10; k++) {
                        ps.setLong(1, t);
                        try (ResultSet rs = ps.executeQuery()) {
                            rs.next();
                            long s = rs.getLong(1);
                            if (sum >= 0 && s != sum) {
                                throw new IllegalStateException("execution " + k + " gave " + s + ", not " + sum);
                            }
                            sum = s;
                        }
                    }
                }
                System.out.println("sum " + t + " jdbc " + sum);
                c.setAutoCommit(false);
                try (PreparedStatement ins = c.prepareStatement(
                        "INSERT INTO orders (tenant_id, id, amount) VALUES (?, 70, 1)")) {
                    ins.setLong(1, t);
                    ins.executeUpdate();
                }
                try (PreparedStatement upd = c.prepareStatement(
                        "UPDATE orders SET amount = 2 WHERE tenant_id = ? AND id = 70")) {
                    upd.setLong(1, t);
                    upd.executeUpdate();
                }
                c.commit();
                c.setAutoCommit(true);
            }
        }
        System.out.println("RESULT ok");
    }
}
