#!/usr/bin/env python3
"""Turns the per-run rows that tests/bench/bench.py writes (runs.csv) into the benchmark's
summary: medians per scenario and target, the ratios pgshard/PgBouncer with their spread over
the repeats, a markdown table and a PNG chart. Starts nothing and measures nothing, so that it
can be checked on a fixed input (tests/bench/test_report.py). Stdlib only, but for the chart.

Usage: report.py RESULTS_DIR   (reads RESULTS_DIR/runs.csv, writes summary.csv, bench.md,
bench.png there and prints the markdown)
       report.py --callgrind RESULTS_DIR   (callgrind-*.csv to callgrind.md)."""
import csv
import math
import os
import shutil
import statistics
import subprocess
import sys

# One row of runs.csv per timed run (or per idle measurement). Empty cells are numbers that do
# not apply (no proxy CPU for a direct connection, no TPS for idle clients).
RUN_FIELDS = [
    "scenario", "mode", "clients", "target", "repeat", "note", "seconds", "transactions",
    "tps", "lat_mean_ms", "lat_p99_ms", "cpu_s", "cpu_s_per_1000tx", "vcsw_per_tx",
    "ivcsw_per_tx", "idle_bytes_per_client", "idle_held",
]
TARGETS = ("direct", "pgbouncer", "pgshard")
METRICS = ("tps", "lat_mean_ms", "lat_p99_ms", "cpu_s_per_1000tx", "vcsw_per_tx", "ivcsw_per_tx",
           "idle_bytes_per_client")


def load_runs(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_runs(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RUN_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)


def num(v):
    """A cell as a float, or None when empty or not a number."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def median_of(values):
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def scenario_key(r):
    return (r["scenario"], r["mode"], int(r["clients"]))


def spread(ratios):
    """(median, min, max) of a list of ratios, or None when there is none."""
    if not ratios:
        return None
    return (statistics.median(ratios), min(ratios), max(ratios))


def paired_ratios(runs, metric, target="pgshard"):
    """target/PgBouncer of one metric, one ratio per repeat in which both ran: a repeat pairs
    runs made minutes apart, so the spread over repeats says how much the machine moved."""
    by_repeat = {}
    for r in runs:
        v = num(r.get(metric))
        if v is not None:
            by_repeat.setdefault(r["repeat"], {})[r["target"]] = v
    out = []
    for pair in by_repeat.values():
        b, s = pair.get("pgbouncer"), pair.get(target)
        if b and s is not None:
            out.append(s / b)
    return out


def summarize(runs):
    """One summary row per scenario (scenario, mode, clients), in the order first seen: the
    median of each metric per target, and the ratios' (median, min, max)."""
    groups = {}
    for r in runs:
        groups.setdefault(scenario_key(r), []).append(r)
    rows = []
    for key, rs in groups.items():
        row = {"scenario": key[0], "mode": key[1], "clients": key[2],
               "note": next((r["note"] for r in rs if r.get("note")), ""),
               "repeats": len({r["repeat"] for r in rs})}
        for t in TARGETS:
            mine = [r for r in rs if r["target"] == t]
            for m in METRICS:
                row["%s_%s" % (t, m)] = median_of(num(r.get(m)) for r in mine)
            row[t + "_held"] = ",".join(sorted({r.get("idle_held", "") for r in mine} - {""}))
        for m, name in (("cpu_s_per_1000tx", "cpu_ratio"), ("tps", "tps_ratio"),
                        ("lat_p99_ms", "p99_ratio"), ("idle_bytes_per_client", "idle_ratio")):
            row[name] = spread(paired_ratios(rs, m))
        rows.append(row)
    return rows


def fmt(v, digits=2):
    if v is None:
        return "–"
    if digits == 0 or abs(v) >= 1000:
        return "%.0f" % v
    if abs(v) >= 100:
        return "%.1f" % v
    return "%.*f" % (digits, v)


def fmt_ratio(sp):
    if sp is None:
        return "–"
    med, lo, hi = sp
    if abs(hi - lo) < 0.005:
        return "%.2f" % med
    return "%.2f (%.2f–%.2f)" % (med, lo, hi)


def trio(row, metric, targets=TARGETS, digits=2):
    return " / ".join(fmt(row["%s_%s" % (t, metric)], digits) for t in targets)


def label(row):
    s = row["scenario"]
    return s if row["mode"] in ("", "-") else "%s %s" % (s, row["mode"])


def markdown(rows):
    """The load scenarios in one table, the idle-client measurements in a second."""
    load = [r for r in rows if r["scenario"] != "idle"]
    idle = [r for r in rows if r["scenario"] == "idle"]
    out = []
    if load:
        out.append("| scenario | clients | TPS direct / PgBouncer / pgshard | TPS ratio | "
                   "mean ms D / B / S | p99 ms D / B / S | CPU s/1000 tx B / S | CPU ratio | "
                   "vol cs/tx B / S | invol cs/tx B / S |")
        out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in load:
            bs = ("pgbouncer", "pgshard")
            out.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                label(r), r["clients"], trio(r, "tps", digits=0), fmt_ratio(r["tps_ratio"]),
                trio(r, "lat_mean_ms", digits=3), trio(r, "lat_p99_ms", digits=3),
                trio(r, "cpu_s_per_1000tx", bs, 3), fmt_ratio(r["cpu_ratio"]),
                trio(r, "vcsw_per_tx", bs), trio(r, "ivcsw_per_tx", bs)))
    if idle:
        if out:
            out.append("")
        out.append("| idle clients | PgBouncer bytes/client | pgshard bytes/client | ratio | "
                   "all held (B / S) |")
        out.append("| ---: | ---: | ---: | ---: | --- |")
        for r in idle:
            out.append("| %d | %s | %s | %s | %s / %s |" % (
                r["clients"], fmt(r["pgbouncer_idle_bytes_per_client"], 0),
                fmt(r["pgshard_idle_bytes_per_client"], 0), fmt_ratio(r["idle_ratio"]),
                r["pgbouncer_held"] or "–", r["pgshard_held"] or "–"))
    notes = sorted({r["note"] for r in rows if r["note"]})
    if notes:
        out.append("")
        out.extend("- %s" % n for n in notes)
    return "\n".join(out) + "\n"


def write_summary(path, rows):
    fields = ["scenario", "mode", "clients", "repeats", "note"]
    for t in TARGETS:
        fields += ["%s_%s" % (t, m) for m in METRICS]
    ratio_names = ("cpu_ratio", "tps_ratio", "p99_ratio", "idle_ratio")
    for name in ratio_names:
        fields += [name, name + "_min", name + "_max"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            flat = dict(r)
            for name in ratio_names:
                sp = r[name] or (None, None, None)
                flat[name], flat[name + "_min"], flat[name + "_max"] = sp
            w.writerow({k: ("" if v is None else v) for k, v in flat.items()})


def chart_points(rows):
    """(label, cpu spread, tps spread) of every load scenario with both proxies measured."""
    pts = []
    for r in rows:
        if r["scenario"] == "idle" or not r["cpu_ratio"]:
            continue
        name = "%s c%d" % (label(r), r["clients"])
        if r["mode"] == "prepared":
            name += " (PgB session)"
        pts.append((name, r["cpu_ratio"], r["tps_ratio"]))
    return pts


def chart_matplotlib(pts, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(pts)
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.35 * n + 1.8), sharey=True)
    ys = list(range(n))
    for ax, idx, name, good in ((axes[0], 1, "CPU per transaction, pgshard / PgBouncer", 0.8),
                                (axes[1], 2, "TPS, pgshard / PgBouncer", 1.2)):
        med = [p[idx][0] if p[idx] else 0 for p in pts]
        lo = [p[idx][0] - p[idx][1] if p[idx] else 0 for p in pts]
        hi = [p[idx][2] - p[idx][0] if p[idx] else 0 for p in pts]
        ax.barh(ys, med, xerr=[lo, hi], color="#4c72b0", capsize=2)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.axvline(good, color="#55a868", linestyle="--", linewidth=0.8, label="issue's target")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_yticks(ys)
    axes[0].set_yticklabels([p[0] for p in pts], fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def chart_gnuplot(pts, path, title):
    dat = path + ".dat"
    with open(dat, "w") as f:
        for i, (name, cpu, _) in enumerate(pts):
            f.write('%d "%s" %f %f %f\n' % (i, name, cpu[0], cpu[1], cpu[2]))
    script = ('set terminal png size 1000,%d\nset output "%s"\nset title "%s"\n'
              'set style fill solid\nset boxwidth 0.6\nset xtics rotate by -45\n'
              'set ylabel "CPU per transaction, pgshard / PgBouncer"\n'
              'plot "%s" using 1:3:4:5:xtic(2) with boxerrorbars notitle, 1 notitle\n'
              % (400 + 10 * len(pts), path, title, dat))
    subprocess.run(["gnuplot"], input=script, text=True, check=True, capture_output=True)
    os.unlink(dat)


def chart(rows, path, title="pgshard / PgBouncer (median, bars min–max over repeats)"):
    """Writes the PNG; returns a sentence saying what was written or why not."""
    pts = chart_points(rows)
    if not pts:
        return "chart: no scenario with both proxies, none drawn"
    try:
        chart_matplotlib(pts, path, title)
        return "chart: " + path
    except ImportError:
        pass
    if shutil.which("gnuplot"):
        chart_gnuplot(pts, path, title)
        return "chart (gnuplot): " + path
    return "chart: neither python3-matplotlib nor gnuplot is installed, none drawn"


def callgrind_markdown(rows):
    """Instructions per transaction by target and mode, from scripts/bench-callgrind.sh's CSV
    rows (mode, target, instr_per_tx_all, instr_per_tx_route)."""
    modes = sorted({r["mode"] for r in rows}, key=lambda m: (m != "simple", m))
    targets = []
    for r in rows:
        if r["target"] not in targets:
            targets.append(r["target"])
    cell = {(r["mode"], r["target"]): r for r in rows}
    out = ["| target | " + " | ".join("%s: all threads | %s: route path | %s: / PgBouncer" % (m, m, m)
                                       for m in modes) + " |",
           "| --- |" + " ---: | ---: | ---: |" * len(modes)]
    for t in targets:
        cells = []
        for m in modes:
            r = cell.get((m, t))
            b = cell.get((m, "pgbouncer"))
            if r is None:
                cells += ["–", "–", "–"]
                continue
            ratio = "%.2f" % (int(r["instr_per_tx_route"]) / int(b["instr_per_tx_route"])) if b else "–"
            cells += [r["instr_per_tx_all"], r["instr_per_tx_route"], ratio]
        out.append("| %s | %s |" % (t, " | ".join(cells)))
    out.append("")
    out.append("Instructions per transaction (callgrind, user space), pgbench -S at 4 clients. Route "
               "path: pgshard's worker thread, where a query is read, routed and forwarded (the "
               "monitor and main threads left out); PgBouncer's one thread.")
    return "\n".join(out) + "\n"


def main_callgrind(out):
    rows = []
    for name in sorted(os.listdir(out)):
        if name.startswith("callgrind-") and name.endswith(".csv"):
            rows += load_runs(os.path.join(out, name))
    if not rows:
        print("callgrind: no callgrind-*.csv in " + out, file=sys.stderr)
        return 1
    md = callgrind_markdown(rows)
    with open(os.path.join(out, "callgrind.md"), "w") as f:
        f.write(md)
    print()
    print(md, end="")
    return 0


def main(argv):
    if len(argv) == 3 and argv[1] == "--callgrind":
        return main_callgrind(argv[2])
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = argv[1]
    rows = summarize(load_runs(os.path.join(out, "runs.csv")))
    write_summary(os.path.join(out, "summary.csv"), rows)
    md = markdown(rows)
    with open(os.path.join(out, "bench.md"), "w") as f:
        f.write(md)
    print(chart(rows, os.path.join(out, "bench.png")))
    print()
    print(md, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
