#!/usr/bin/env python3
"""Checks tests/bench/report.py on fixed runs: medians per target, the pgshard/PgBouncer ratios
paired by repeat with their min-max, idle counts that were not all held, and the markdown and
CSV it writes. No server, no chart; well under a second."""
import csv
import io
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402

RUNS = """scenario,mode,clients,target,repeat,note,tps,lat_mean_ms,lat_p99_ms,cpu_s_per_1000tx,vcsw_per_tx,ivcsw_per_tx,idle_bytes_per_client,idle_held
select,simple,16,direct,1,select: pgbench -S,9000,1.0,2.0,,,,,
select,simple,16,pgbouncer,1,select: pgbench -S,8000,2.0,4.0,0.040,0.30,0.10,,
select,simple,16,pgshard,1,select: pgbench -S,8800,1.8,5.0,0.050,1.00,0.40,,
select,simple,16,direct,2,select: pgbench -S,9100,1.0,2.0,,,,,
select,simple,16,pgbouncer,2,select: pgbench -S,8000,2.0,4.0,0.050,0.30,0.10,,
select,simple,16,pgshard,2,select: pgbench -S,7200,2.2,6.0,0.050,1.20,0.50,,
select,simple,16,direct,3,select: pgbench -S,8900,1.0,2.0,,,,,
select,simple,16,pgbouncer,3,select: pgbench -S,8000,2.0,4.0,0.040,0.30,0.10,,
select,simple,16,pgshard,3,select: pgbench -S,8000,2.0,5.5,0.060,1.10,0.45,,
idle,-,1000,pgbouncer,1,idle: RSS,,,,,,,1000,yes
idle,-,1000,pgshard,1,idle: RSS,,,,,,,1300,yes
idle,-,10000,pgbouncer,1,idle: RSS,,,,,,,,no
idle,-,10000,pgshard,1,idle: RSS,,,,,,,1250,yes
"""


class ReportTest(unittest.TestCase):
    def setUp(self):
        self.rows = report.summarize(list(csv.DictReader(io.StringIO(RUNS))))

    def test_medians_and_paired_ratios(self):
        sel = self.rows[0]
        self.assertEqual((sel["scenario"], sel["mode"], sel["clients"], sel["repeats"]),
                         ("select", "simple", 16, 3))
        self.assertAlmostEqual(sel["direct_tps"], 9000)
        self.assertAlmostEqual(sel["pgshard_cpu_s_per_1000tx"], 0.050)
        self.assertIsNone(sel["direct_cpu_s_per_1000tx"])
        # Per repeat 0.05/0.04, 0.05/0.05, 0.06/0.04: median 1.25, spread 1.0 to 1.5.
        med, lo, hi = sel["cpu_ratio"]
        self.assertAlmostEqual(med, 1.25)
        self.assertAlmostEqual(lo, 1.0)
        self.assertAlmostEqual(hi, 1.5)
        med, lo, hi = sel["tps_ratio"]
        self.assertAlmostEqual(med, 1.0)
        self.assertAlmostEqual(lo, 0.9)
        self.assertAlmostEqual(hi, 1.1)

    def test_idle_not_held_has_no_ratio(self):
        idle = {r["clients"]: r for r in self.rows if r["scenario"] == "idle"}
        self.assertAlmostEqual(idle[1000]["idle_ratio"][0], 1.3)
        self.assertIsNone(idle[10000]["idle_ratio"])
        self.assertEqual(idle[10000]["pgbouncer_held"], "no")

    def test_markdown(self):
        md = report.markdown(self.rows)
        lines = md.splitlines()
        self.assertIn("| select simple | 16 | 9000 / 8000 / 8000 | 1.00 (0.90–1.10) |", md)
        row = next(ln for ln in lines if ln.startswith("| select simple"))
        self.assertIn("| 0.040 / 0.050 | 1.25 (1.00–1.50) |", row)
        self.assertIn("| 0.30 / 1.10 | 0.10 / 0.45 |", row)
        self.assertIn("| 1000 | 1000 | 1300 | 1.30 | yes / yes |", md)
        self.assertIn("| 10000 | – | 1250 | – | no / yes |", md)
        self.assertIn("- select: pgbench -S", lines)

    def test_files(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "runs.csv"), "w") as f:
                f.write(RUNS)
            rows = report.summarize(report.load_runs(os.path.join(d, "runs.csv")))
            report.write_summary(os.path.join(d, "summary.csv"), rows)
            with open(os.path.join(d, "summary.csv")) as f:
                summary = list(csv.DictReader(f))
            self.assertEqual(len(summary), 3)
            self.assertEqual(summary[0]["cpu_ratio_max"], "1.5")
            self.assertEqual(summary[2]["idle_ratio"], "")

    def test_callgrind_markdown(self):
        rows = [{"mode": "simple", "target": "pgshard", "instr_per_tx_all": "7000", "instr_per_tx_route": "6900"},
                {"mode": "simple", "target": "pgbouncer", "instr_per_tx_all": "4600", "instr_per_tx_route": "4600"}]
        md = report.callgrind_markdown(rows)
        self.assertIn("| pgshard | 7000 | 6900 | 1.50 |", md)


if __name__ == "__main__":
    unittest.main()
