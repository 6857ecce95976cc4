#!/usr/bin/python3
"""Checks docker/ (Dockerfile, compose, Prometheus, Grafana, Kubernetes) without a container
engine: the files parse, and they agree with each other, with the sample pgshard.ini, with
the Makefile's `build` target, with the metric names proxy/metrics.c exports and with what
the binaries link; and `pgshard --check` accepts the image's config and the ConfigMap's.

Environment (tests/CMakeLists.txt sets it): PGSHARD_BIN, PGSHARD_MIGRATE_BIN, PGS_SRC, and
PGS_SANITIZE (ON in the sanitizer build, whose binaries link more than the image's do).
Every check runs; the failures are listed together and the exit status is 1 if any.
Needs PyYAML (Debian's python3-yaml, installed by scripts/deps.sh)."""
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

import yaml

SRC = os.environ.get("PGS_SRC") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOCKER = os.path.join(SRC, "docker")
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
    return bool(cond)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


# ---- pgshard.ini ---------------------------------------------------------------------

def parse_ini(text):
    """pgshard's INI as config/config.c reads it: [section], key = value starting in column
    1, ';' or '#' comments at the start of a line, ' ;' starting a comment after a value."""
    out, sec = {}, None
    for line in text.splitlines():
        s = line.strip()
        if not s or s[0] in ";#":
            continue
        if s.startswith("["):
            sec = s[1:s.index("]")]
            out.setdefault(sec, {})
            continue
        key, _, val = s.partition("=")
        val = re.split(r"\s;", val, maxsplit=1)[0].strip()
        out.setdefault(sec, {})[key.strip()] = val
    return out


def ini_ports(ini):
    pg = ini.get("pgshard", {})
    return int(pg.get("listen_port", "6432")), int(pg.get("metrics_port", "0"))


def shard_nodes(ini):
    """{shard: [(role, host, port)]} from [shard.N] primary and replicas."""
    out = {}
    for sec, keys in ini.items():
        m = re.fullmatch(r"shard\.(\d+)", sec or "")
        if not m:
            continue
        nodes = []
        if "primary" in keys:
            h, _, p = keys["primary"].rpartition(":")
            nodes.append(("primary", h, int(p)))
        for r in filter(None, (x.strip() for x in keys.get("replicas", "").split(","))):
            h, _, p = r.split("@")[0].rpartition(":")
            nodes.append(("replica", h, int(p)))
        out[int(m.group(1))] = nodes
    return out


def conninfo(dsn):
    return dict(kv.split("=", 1) for kv in shlex.split(dsn))


def pgshard_check(ini_text, name):
    """pgshard --check on the file. It resolves every node's host name (proxy/conf.c), and
    compose services and Kubernetes Services resolve only inside their own network: if a
    shard host cannot be resolved here, the check runs again on the same file with each
    such name replaced by a loopback address of its own (127.0.0.N), changing nothing else."""
    binary = os.environ.get("PGSHARD_BIN", "")
    if not check(binary and os.access(binary, os.X_OK), f"PGSHARD_BIN '{binary}' is not an executable"):
        return
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "pgshard.ini")
        with open(path, "w", encoding="utf-8") as f:
            f.write(ini_text)
        r = subprocess.run([binary, "--check", "-c", path], capture_output=True, text=True, check=False)
        hosts = sorted({h for nodes in shard_nodes(parse_ini(ini_text)).values() for _, h, _ in nodes})
        m = re.search(r"cannot resolve (\S+):", r.stderr)
        if r.returncode != 0 and m and m.group(1) in hosts:
            addr = {h: f"127.0.0.{i + 1}" for i, h in enumerate(hosts) if not re.fullmatch(r"[\d.]+|\[.*\]", h)}
            lines = []
            for line in ini_text.splitlines(keepends=True):
                if re.match(r"(primary|replicas)\s*=", line):
                    for h, a in addr.items():
                        line = re.sub(rf"(?<![\w.-]){re.escape(h)}:", f"{a}:", line)
                lines.append(line)
            with open(path, "w", encoding="utf-8") as f:
                f.write("".join(lines))
            r = subprocess.run([binary, "--check", "-c", path], capture_output=True, text=True, check=False)
        check(r.returncode == 0 and "configuration is valid" in r.stdout,
              f"pgshard --check rejects {name}: rc={r.returncode} {r.stderr.strip()}")
        # --check must be able to say no: the same file with an unknown key is refused.
        with open(path, "a", encoding="utf-8") as f:
            f.write("\n[pgshard.bogus]\n")
        r = subprocess.run([binary, "--check", "-c", path], capture_output=True, text=True, check=False)
        check(r.returncode != 0, f"pgshard --check accepts {name} with an unknown section added")


# ---- Makefile and Dockerfile ------------------------------------------------------------

def make_build_commands():
    """The recipe of the Makefile's `build` target with its variables' defaults, as
    token lists: `@`, `>/dev/null` dropped; `-j N` kept as `-j *`."""
    text = read(os.path.join(SRC, "Makefile"))
    defaults = dict(re.findall(r"^(\w+)\s*\?=[ \t]*(.*)$", text, re.M))
    m = re.search(r"^build:.*\n((?:\t.*\n)+)", text, re.M)
    if not check(m, "Makefile: no `build:` target"):
        return None, defaults
    cmds = []
    for line in m.group(1).splitlines():
        line = re.sub(r"\$\((\w+)\)", lambda v: expand(defaults.get(v.group(1), ""), v.group(1)),
                      line.strip().lstrip("@"))
        cmds.append(normalize_cmd(shlex.split(line.replace(">/dev/null", ""))))
    return cmds, defaults


def expand(default, name):
    """A variable's default, or one word standing for it when make computes it ($(shell ...))."""
    return f"__{name}__" if "$(" in default else default


def normalize_cmd(tokens):
    out = []
    for i, t in enumerate(tokens):
        out.append("*" if i > 0 and tokens[i - 1] == "-j" else t)
    return out


def dockerfile_instructions(text):
    """[(INSTRUCTION, args)] with continuations joined and comments dropped."""
    out, cur = [], ""
    for line in text.splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if cur and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        cur += line
        word, _, rest = cur.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        cur = ""
    return out


def apt_packages(run_args):
    pkgs = []
    for part in run_args.split("&&"):
        toks = shlex.split(part)
        if "apt-get" in toks and "install" in toks:
            pkgs += [t for t in toks[toks.index("install") + 1:] if not t.startswith("-")]
    return pkgs


def deps_packages():
    m = re.search(r"^pkgs=\(([^)]*)\)", read(os.path.join(SRC, "scripts", "deps.sh")), re.M | re.S)
    return m.group(1).split() if check(m, "scripts/deps.sh: no pkgs=(...) list") else []


def needed_packages(binaries):
    """The Debian packages of the shared libraries the binaries link (readelf NEEDED, found
    with ldd, owned per dpkg -S, under /lib or /usr/lib); None when the tools are missing."""
    libs = {}
    try:
        for b in binaries:
            out = subprocess.run(["readelf", "-d", b], capture_output=True, text=True, check=True).stdout
            needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out))
            ldd = subprocess.run(["ldd", b], capture_output=True, text=True, check=True).stdout
            libs.update((so, path) for so, path in re.findall(r"^\s*(\S+) => (/\S+)", ldd, re.M) if so in needed)
            check(needed <= set(libs), f"ldd does not find {sorted(needed - set(libs))} that {b} links")
        cands = {}
        for so, path in libs.items():
            for p in {path, os.path.realpath(path)}:
                for q in (p, re.sub(r"^/usr/lib/", "/lib/", p), re.sub(r"^/lib/", "/usr/lib/", p)):
                    cands[q] = so
        out = subprocess.run(["dpkg", "-S", *sorted(cands)], capture_output=True, text=True, check=False).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    owner = {}
    for line in out.splitlines():
        pkg, _, path = line.partition(": ")
        if path in cands:
            owner[cands[path]] = pkg.split(":")[0]
    for so in sorted(set(libs) - set(owner)):
        check(False, f"no Debian package owns {libs[so]} ({so}), which the binaries link")
    return set(owner.values())


def check_dockerfile(image_ini):
    text = read(os.path.join(DOCKER, "Dockerfile"))
    ins = dockerfile_instructions(text)
    froms = [i for i, (w, _) in enumerate(ins) if w == "FROM"]
    if not check(len(froms) >= 2, "Dockerfile: not multi-stage (fewer than 2 FROM)"):
        return
    stages = [ins[a:b] for a, b in zip(froms, froms[1:] + [len(ins)])]
    for st in stages:
        check(re.match(r"debian:bookworm(-slim)?(\s|$)", st[0][1]), f"Dockerfile: FROM {st[0][1]} is not Debian bookworm")
    build, final = stages[0], stages[-1]
    check(final[0][1].split()[0] == "debian:bookworm-slim", "Dockerfile: the runtime stage is not debian:bookworm-slim")
    stage_name = build[0][1].split()[-1] if " AS " in build[0][1].upper() else "0"

    # The build RUN: the same configure and build as the Makefile's `build` target.
    make_cmds, defaults = make_build_commands()
    runs = [a for w, a in build if w == "RUN" and re.search(r"\bcmake\s+-S\b", a)]
    if check(len(runs) == 1, "Dockerfile: the build stage needs exactly one RUN with cmake") and make_cmds:
        docker_cmds = [normalize_cmd(shlex.split(p)) for p in runs[0].split("&&")]
        check(docker_cmds == make_cmds,
              f"Dockerfile: build RUN {docker_cmds} is not the Makefile's build recipe {make_cmds}")
    build_dir = defaults.get("BUILD", "build")
    build_pkgs = [p for w, a in build if w == "RUN" for p in apt_packages(a)]
    want = [p for p in deps_packages() if p.endswith("-dev") and p.startswith("lib") and "clang" not in p
            and "jdbc" not in p] + ["build-essential", "cmake", "pkg-config"]
    for p in want:
        check(p in build_pkgs, f"Dockerfile: the build stage does not install {p} (scripts/deps.sh does)")

    # Runtime: the binaries from the build stage, runtime libraries only, not root.
    copies = [a for w, a in final if w == "COPY" and a.startswith(f"--from={stage_name}")]
    srcs = [s for a in copies for s in shlex.split(a)[1:-1]]
    for b in ("pgshard", "pgshard-migrate"):
        check(any(s.endswith(f"/{build_dir}/{b}") for s in srcs),
              f"Dockerfile: no COPY --from={stage_name} of {build_dir}/{b} into the runtime stage")
    run_pkgs = [p for w, a in final if w == "RUN" for p in apt_packages(a)]
    check(not [p for p in run_pkgs if p.endswith("-dev")], f"Dockerfile: -dev packages at runtime: {run_pkgs}")
    # A sanitizer build (clang, PGS_SANITIZE) links more than the image's gcc build does.
    sanitized = os.environ.get("PGS_SANITIZE", "OFF").upper() in ("ON", "1", "TRUE", "YES")
    needed = None if sanitized else needed_packages([os.environ.get("PGSHARD_BIN", ""),
                                                     os.environ.get("PGSHARD_MIGRATE_BIN", "")])
    if sanitized:
        print("t_packaging: sanitizer build: the runtime libraries are not compared with what it links")
    elif needed is None:
        print("t_packaging: readelf, ldd or dpkg missing: the runtime libraries are not compared")
    else:
        for p in sorted(needed - {"libc6"}):
            check(p in run_pkgs, f"Dockerfile: the runtime stage does not install {p}, which the binaries link")
    users = [a for w, a in final if w == "USER"]
    check(users and users[-1].split(":")[0] not in ("root", "0"), f"Dockerfile: runtime USER is root or unset: {users}")

    # The config it carries, its ports and its health check.
    listen, metrics = ini_ports(image_ini)
    check(any(w == "COPY" and shlex.split(a)[-2:] == ["docker/pgshard.ini", "/etc/pgshard/pgshard.ini"]
              for w, a in final), "Dockerfile: does not COPY docker/pgshard.ini to /etc/pgshard/pgshard.ini")
    cmd = " ".join(a for w, a in final if w in ("CMD", "ENTRYPOINT"))
    check("/etc/pgshard/pgshard.ini" in cmd and "pgshard" in cmd, f"Dockerfile: CMD/ENTRYPOINT do not run pgshard on its config: {cmd}")
    exposed = {int(p.split("/")[0]) for w, a in final if w == "EXPOSE" for p in a.split()}
    check({listen, metrics} <= exposed, f"Dockerfile: EXPOSE {sorted(exposed)}, config ports {listen}, {metrics}")
    hc = [a for w, a in final if w == "HEALTHCHECK"]
    if check(len(hc) == 1, "Dockerfile: the runtime stage needs one HEALTHCHECK"):
        check(re.search(rf"(127\.0\.0\.1|localhost):{metrics}/healthz", hc[0]),
              f"Dockerfile: HEALTHCHECK does not ask /healthz on metrics_port {metrics}: {hc[0]}")
        tool = re.search(r"CMD\s+(\[\s*\"([^\"]+)\"|(\S+))", hc[0])
        tool = tool and (tool.group(2) or tool.group(3))
        check(tool in run_pkgs, f"Dockerfile: HEALTHCHECK runs {tool}, which the runtime stage does not install")


# ---- compose, haproxy, Prometheus, Grafana ------------------------------------------------

def published(service):
    """[(host_port, container_port)] of a compose service's ports."""
    out = []
    for p in service.get("ports", []):
        if isinstance(p, dict):
            out.append((int(p.get("published", 0)), int(p["target"])))
        else:
            parts = str(p).split("/")[0].split(":")
            out.append((int(parts[-2]) if len(parts) > 1 else 0, int(parts[-1])))
    return out


def bind_mounts(service):
    """{target: source} of the service's bind mounts (short syntax, source starting '.')."""
    out = {}
    for v in service.get("volumes", []):
        parts = v.split(":") if isinstance(v, str) else [v.get("source", ""), v.get("target", "")]
        if parts[0].startswith("."):
            out[parts[1]] = parts[0]
    return out


# PostgreSQL 15's defaults of the settings a hot standby needs at least as high as its primary.
HOT_STANDBY_MIN = {"max_connections": 100, "max_prepared_transactions": 0, "max_locks_per_transaction": 64,
                   "max_wal_senders": 10, "max_worker_processes": 8}


def pg_settings(service):
    """The -c NAME=VALUE settings a compose service passes to postgres."""
    cmd = service.get("command", [])
    cmd = shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]
    return dict(c.split("=", 1) for prev, c in zip([""] + cmd, cmd) if prev == "-c" and "=" in c)


def check_compose(ini):
    compose = yaml.safe_load(read(os.path.join(DOCKER, "compose.yaml")))
    svcs = compose.get("services", {})
    expected = {"shard0-primary", "shard0-replica", "shard1-primary", "shard1-replica", "pgshard-init",
                "pgshard-a", "pgshard-b", "lb", "prometheus", "grafana"}
    check(expected <= set(svcs), f"compose: services missing: {sorted(expected - set(svcs))}")
    listen, metrics = ini_ports(ini)

    for name, s in svcs.items():
        for target, source in bind_mounts(s).items():
            check(os.path.exists(os.path.join(DOCKER, source)), f"compose: {name} mounts {source}, which does not exist")
        b = s.get("build")
        if b:
            ctx = os.path.normpath(os.path.join(DOCKER, b.get("context", ".")))
            check(os.path.isfile(os.path.join(ctx, b.get("dockerfile", "Dockerfile"))),
                  f"compose: {name}'s build names no Dockerfile")
    hostports = [h for s in svcs.values() for h, _ in published(s) if h]
    check(len(hostports) == len(set(hostports)), f"compose: a host port is published twice: {sorted(hostports)}")

    # pgshard: the services that run the image's own entrypoint.
    images = {s.get("image") for s in svcs.values() if s.get("build")}
    proxies = sorted(n for n, s in svcs.items() if s.get("image") in images and "entrypoint" not in s)
    check(len(proxies) >= 2, f"compose: fewer than 2 pgshard services: {proxies}")
    for n in proxies:
        s = svcs[n]
        targets = sorted(c for _, c in published(s))
        check(targets == sorted({listen, metrics}),
              f"compose: {n} publishes container ports {targets}; pgshard.ini has listen_port {listen}, metrics_port {metrics}")
        check(bind_mounts(s).get("/etc/pgshard/pgshard.ini") == "./pgshard.ini",
              f"compose: {n} does not mount ./pgshard.ini at /etc/pgshard/pgshard.ini")
        dep = s.get("depends_on", {})
        check(isinstance(dep, dict) and dep.get("pgshard-init", {}).get("condition") == "service_completed_successfully",
              f"compose: {n} does not wait for pgshard-init to complete")
    init = svcs.get("pgshard-init", {})
    argv = list(init.get("entrypoint", [])) + list(init.get("command", []))
    check(argv[:1] == ["pgshard-migrate"] and argv[-1:] == ["init"], f"compose: pgshard-init runs {argv}")

    # The shards of pgshard.ini are the compose's PostgreSQL services.
    for shard, nodes in shard_nodes(ini).items():
        primary = next((h for r, h, _ in nodes if r == "primary"), None)
        for role, host, port in nodes:
            s = svcs.get(host)
            if not check(s, f"pgshard.ini: shard {shard} {role} {host} is not a compose service"):
                continue
            check(str(s.get("image", "")).startswith("postgres:15"), f"compose: {host} is not postgres:15")
            check(port == 5432 and "port=" not in " ".join(map(str, s.get("command", []))),
                  f"pgshard.ini: {host}:{port}, but PostgreSQL listens on 5432 in the container")
            if role == "replica":
                env = s.get("environment", {})
                check(env.get("PRIMARY_HOST") == primary, f"compose: {host} replicates {env.get('PRIMARY_HOST')}, not {primary}")
                # A hot standby does not start with these below its primary's.
                mine, theirs = pg_settings(s), pg_settings(svcs.get(primary, {}))
                for k, default in HOT_STANDBY_MIN.items():
                    check(int(mine.get(k, default)) >= int(theirs.get(k, default)),
                          f"compose: {host} has {k} {mine.get(k, default)}, below its primary's {theirs.get(k, default)}")
    cat = conninfo(ini.get("pgshard", {}).get("catalog_dsn", ""))
    check(cat.get("host") in svcs, f"pgshard.ini: catalog_dsn host {cat.get('host')} is not a compose service")

    # One port for the pgshard services: haproxy.
    lb = svcs.get("lb", {})
    hcfg = read(os.path.join(DOCKER, bind_mounts(lb).get("/usr/local/etc/haproxy/haproxy.cfg", "haproxy.cfg")))
    bind = re.search(r"^\s*bind\s+\S*:(\d+)", hcfg, re.M)
    check(bind and [int(bind.group(1))] == [c for _, c in published(lb)],
          f"haproxy.cfg: bind port is not lb's published container port {published(lb)}")
    servers = re.findall(r"^\s*server\s+\S+\s+([\w.-]+):(\d+)(.*)$", hcfg, re.M)
    check(sorted(h for h, _, _ in servers) == proxies, f"haproxy.cfg: servers {servers} are not the pgshard services {proxies}")
    for h, p, rest in servers:
        check(int(p) == listen, f"haproxy.cfg: {h}:{p} is not listen_port {listen}")
        check(re.search(rf"\bcheck\b.*\bport {metrics}\b", rest), f"haproxy.cfg: {h} is not checked on metrics_port {metrics}")
    check(re.search(r"option httpchk GET /healthz", hcfg), "haproxy.cfg: does not check /healthz")

    # Prometheus scrapes every pgshard service on metrics_port.
    prom = svcs.get("prometheus", {})
    src = bind_mounts(prom).get("/etc/prometheus/prometheus.yml")
    if check(src, "compose: prometheus does not mount a prometheus.yml"):
        pcfg = yaml.safe_load(read(os.path.join(DOCKER, src)))
        jobs = pcfg.get("scrape_configs", [])
        targets = sorted(t for j in jobs for sc in j.get("static_configs", []) for t in sc.get("targets", []))
        check(targets == sorted(f"{n}:{metrics}" for n in proxies),
              f"prometheus.yml: targets {targets}, pgshard services {proxies} on metrics_port {metrics}")
        check(all(j.get("metrics_path", "/metrics") == "/metrics" for j in jobs), "prometheus.yml: metrics_path is not /metrics")

    check_grafana(svcs)
    return proxies


def metric_names():
    """Every series name proxy/metrics.c can export: the names in its tables and in its
    "# TYPE" lines; a histogram's as _bucket, _sum and _count."""
    text = read(os.path.join(SRC, "proxy", "metrics.c"))
    found = re.findall(r'\{"(pgshard_\w+)",\s*"(\w+)"', text) + re.findall(r"# TYPE (pgshard_\w+) (\w+)", text)
    names = set()
    for n, t in found:
        names |= {n + s for s in ("_bucket", "_sum", "_count")} if t == "histogram" else {n}
    check(len(names) >= 20, f"proxy/metrics.c: only {len(names)} metric names found; the parser is out of date")
    return names


def check_grafana(svcs):
    g = svcs.get("grafana", {})
    mounts = bind_mounts(g)
    prov = mounts.get("/etc/grafana/provisioning")
    if not check(prov, "compose: grafana does not mount a provisioning folder"):
        return
    prov = os.path.join(DOCKER, prov)
    uids = set()
    for f in sorted(os.listdir(os.path.join(prov, "datasources"))):
        for ds in yaml.safe_load(read(os.path.join(prov, "datasources", f))).get("datasources", []):
            uids.add(ds.get("uid"))
            check(ds.get("type") != "prometheus" or re.fullmatch(r"https?://prometheus:9090/?", ds.get("url", "")),
                  f"grafana datasource {ds.get('name')}: url {ds.get('url')} is not the prometheus service")
    dash_files = []
    for f in sorted(os.listdir(os.path.join(prov, "dashboards"))):
        for p in yaml.safe_load(read(os.path.join(prov, "dashboards", f))).get("providers", []):
            path = p.get("options", {}).get("path")
            src = mounts.get(path)
            if check(src, f"grafana provider {p.get('name')}: path {path} is not a mount of the grafana service"):
                d = os.path.join(DOCKER, src)
                dash_files += [os.path.join(d, x) for x in sorted(os.listdir(d)) if x.endswith(".json")]
    check(dash_files, "grafana: no dashboard JSON provisioned")
    names = metric_names()
    funcs = {"sum", "rate", "irate", "increase", "max", "min", "avg", "by", "without", "histogram_quantile",
             "label_values", "le", "instance", "shard", "node", "role", "state", "kind", "result", "reason",
             "outcome", "side", "user", "database", "on", "ignoring", "count", "topk", "bottomk", "abs",
             "clamp_min", "clamp_max", "delta", "deriv", "changes", "resets", "time", "vector", "scalar",
             "job", "offset", "bool", "and", "or", "unless"}
    used = set()
    for path in dash_files:
        dash = json.loads(read(path))
        exprs = []

        def walk(o):
            if isinstance(o, dict):
                if isinstance(o.get("datasource"), dict) and o["datasource"].get("type") == "prometheus":
                    check(o["datasource"].get("uid") in uids | {"${DS_PROMETHEUS}"},
                          f"{os.path.basename(path)}: datasource uid {o['datasource'].get('uid')} is not provisioned")
                for k, v in o.items():
                    if k in ("expr", "definition") and isinstance(v, str):
                        exprs.append(v)
                    walk(v)
            elif isinstance(o, list):
                for v in o:
                    walk(v)
        walk(dash)
        check(exprs, f"{os.path.basename(path)}: no queries")
        for e in exprs:
            e = re.sub(r'"[^"]*"|\[[^\]]*\]|\{[^}]*\}|\$\w+', " ", e)  # label values, ranges, matchers, variables
            for ident in re.findall(r"[A-Za-z_:][\w:]*", e):
                if ident in funcs:
                    continue
                check(ident in names, f"{os.path.basename(path)}: {ident} is not a metric proxy/metrics.c exports")
                used.add(ident)
    main = {"pgshard_up", "pgshard_transactions_total", "pgshard_queries_total", "pgshard_errors_total",
            "pgshard_clients", "pgshard_servers", "pgshard_pool_saturation", "pgshard_transaction_seconds_bucket",
            "pgshard_replica_lag_bytes", "pgshard_node_up", "pgshard_map_version"}
    check(main <= used, f"grafana: the dashboards do not show {sorted(main - used)}")


# ---- Kubernetes ---------------------------------------------------------------------------

def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_k8s():
    kdir = os.path.join(DOCKER, "k8s")
    docs = {}
    files = sorted(f for f in os.listdir(kdir) if f.endswith((".yaml", ".yml")))
    for f in files:
        for d in yaml.safe_load_all(read(os.path.join(kdir, f))):
            if d and d.get("kind") != "Kustomization":
                docs.setdefault(d["kind"], []).append(d)
    for kind in ("Deployment", "Service", "ConfigMap", "PodDisruptionBudget"):
        check(len(docs.get(kind, [])) == 1, f"k8s: expected one {kind}, found {len(docs.get(kind, []))}")
    if failures and any(f.startswith("k8s: expected") for f in failures):
        return None
    if os.path.exists(os.path.join(kdir, "kustomization.yaml")):
        res = yaml.safe_load(read(os.path.join(kdir, "kustomization.yaml"))).get("resources", [])
        check(sorted(res) == sorted(f for f in files if f != "kustomization.yaml"),
              f"k8s/kustomization.yaml: resources {res} are not the manifests {files}")
    cm, dep, svc, pdb = (docs[k][0] for k in ("ConfigMap", "Deployment", "Service", "PodDisruptionBudget"))
    ini_key = next((k for k in cm.get("data", {}) if k.endswith(".ini")), None)
    if not check(ini_key, "k8s: the ConfigMap holds no .ini"):
        return None
    ini_text = cm["data"][ini_key]
    listen, metrics = ini_ports(parse_ini(ini_text))

    spec = dep["spec"]
    tpl = spec["template"]
    labels = tpl["metadata"].get("labels", {})
    check(spec.get("replicas", 1) >= 2, f"k8s: Deployment replicas {spec.get('replicas', 1)} < 2")
    check(labels_match(spec["selector"].get("matchLabels"), labels), "k8s: Deployment selector does not match its pods")
    check(labels_match(svc["spec"].get("selector"), labels), "k8s: Service selector does not match the Deployment's pods")
    check(labels_match(pdb["spec"].get("selector", {}).get("matchLabels"), labels),
          "k8s: PodDisruptionBudget selector does not match the Deployment's pods")
    check("minAvailable" in pdb["spec"] or "maxUnavailable" in pdb["spec"], "k8s: PDB has neither minAvailable nor maxUnavailable")
    if isinstance(pdb["spec"].get("minAvailable"), int):
        check(pdb["spec"]["minAvailable"] < spec.get("replicas", 1), "k8s: PDB minAvailable leaves no pod to evict")

    pod = tpl["spec"]
    containers = [c for c in pod["containers"] if "pgshard" in str(c.get("image", ""))]
    if not check(len(containers) == 1, "k8s: the Deployment needs one pgshard container"):
        return ini_text
    c = containers[0]
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}

    def port_of(p):
        return ports.get(p) if isinstance(p, str) else p
    for probe in ("readinessProbe", "livenessProbe"):
        get = c.get(probe, {}).get("httpGet", {})
        check(get.get("path") == "/healthz" and port_of(get.get("port")) == metrics,
              f"k8s: {probe} is not httpGet /healthz on metrics_port {metrics}: {get}")
    check(listen in ports.values(), f"k8s: no containerPort is listen_port {listen}")
    check(any(port_of(p.get("targetPort", p.get("port"))) == listen for p in svc["spec"].get("ports", [])),
          f"k8s: no Service port targets listen_port {listen}")
    res = c.get("resources", {})
    check(res.get("requests") and res.get("limits"), "k8s: the container sets no resource requests and limits")
    sc = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
    check(sc.get("runAsNonRoot") is True and sc.get("runAsUser", 1) != 0, f"k8s: not runAsNonRoot: {sc}")
    # The ini the pods read is the ConfigMap's.
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    mount = next((m for m in c.get("volumeMounts", [])
                  if vols.get(m["name"], {}).get("configMap", {}).get("name") == cm["metadata"]["name"]), None)
    if check(mount, "k8s: the pgshard container does not mount the ConfigMap"):
        argv = list(c.get("command", [])) + list(c.get("args", []))
        check(f"{mount['mountPath'].rstrip('/')}/{ini_key}" in argv, f"k8s: pgshard's -c is not the ConfigMap's {ini_key}: {argv}")
    for job in docs.get("Job", []):
        jc = job["spec"]["template"]["spec"]["containers"][0]
        argv = list(jc.get("command", [])) + list(jc.get("args", []))
        check(argv[:1] == ["pgshard-migrate"] and argv[-1:] == ["init"], f"k8s: Job {job['metadata']['name']} runs {argv}")
    return ini_text


def main():
    # Every YAML and JSON file under docker/ parses.
    for root, _, files in os.walk(DOCKER):
        for f in files:
            path = os.path.join(root, f)
            try:
                if f.endswith((".yaml", ".yml")):
                    list(yaml.safe_load_all(read(path)))
                elif f.endswith(".json"):
                    json.loads(read(path))
            except (yaml.YAMLError, ValueError) as e:
                check(False, f"{os.path.relpath(path, SRC)} does not parse: {e}")
    if failures:
        return report()
    image_ini_text = read(os.path.join(DOCKER, "pgshard.ini"))
    image_ini = parse_ini(image_ini_text)
    check_dockerfile(image_ini)
    check_compose(image_ini)
    cm_ini = check_k8s()
    pgshard_check(image_ini_text, "docker/pgshard.ini")
    if cm_ini is not None:
        pgshard_check(cm_ini, "the ConfigMap's pgshard.ini (docker/k8s)")
    return report()


def report():
    for f in failures:
        print("FAIL:", f)
    print(f"t_packaging: {len(failures)} failure(s)" if failures else "t_packaging: ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
