#!/usr/bin/env python3
"""The policy x link sweep's table (docs/benchmarks.md): total time and bytes
on the wire per policy x link rate x content, and the ratio of each to
fixed:raw at the same rate and content. Reads the sweep's result documents
(results/policy-link/N.json, or the directories given); with several runs of
one point (repeated sweeps into several directories) it shows the median and
the range."""
import json, pathlib, statistics, sys

dirs = [pathlib.Path(d) for d in (sys.argv[1:] or ["results/policy-link"])]
runs = {}
for d in dirs:
    for f in sorted(d.glob("*.json")):
        if f.name == "summary.json":
            continue
        r = json.loads(f.read_text())
        c = r["config"]
        key = (c["link"]["rate"], c["workload"]["content"], c["policy"])
        ok = r["status"] == "completed" and r.get("verify", {}).get("ok")
        runs.setdefault(key, []).append((r["total-time"], r["ram"]["transferred"], ok, r.get("compression", {}).get("cpu-seconds-source", 0)))

def med(xs):
    return statistics.median(xs) if xs else float("nan")

def cell(xs, fmt):
    if len(xs) == 1:
        return fmt % xs[0]
    return (fmt + " [" + fmt + "–" + fmt + "]") % (med(xs), min(xs), max(xs))

rates = ["1gbit", "2.5gbit", "10gbit", "unlimited"]
policies = ["fixed:raw", "fixed:lz4", "fixed:zstd:1", "cbc", "adaptive"]
contents = ["mixed", "text", "ints", "random"]
print("| link | content | policy | total ms | vs raw | MiB on the wire | vs raw | src CPU s | ok |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for rate in rates:
    for content in contents:
        raw = runs.get((rate, content, "fixed:raw"), [])
        raw_t, raw_b = med([x[0] for x in raw]), med([x[1] for x in raw])
        for p in policies:
            rs = runs.get((rate, content, p))
            if not rs:
                continue
            t = [x[0] for x in rs]
            b = [x[1] / 1048576 for x in rs]
            cpu = [x[3] for x in rs]
            ok = all(x[2] for x in rs)
            print("| %s | %s | %s | %s | %+.0f%% | %s | %+.0f%% | %s | %s |" % (
                rate, content, p, cell(t, "%.0f"), (med(t) / raw_t - 1) * 100, cell(b, "%.1f"),
                (med(b) * 1048576 / raw_b - 1) * 100, cell(cpu, "%.2f"), "yes" if ok else "NO"))

# The target: adaptive within 1/0.95 of the best other policy's
# total time in every cell (medians).
print()
print("| link | content | adaptive / best other | best other | within 1/0.95 |")
print("| --- | --- | --- | --- | --- |")
for rate in rates:
    for content in contents:
        meds = {p: med([x[0] for x in runs[(rate, content, p)]]) for p in policies if (rate, content, p) in runs}
        if "adaptive" not in meds or len(meds) < 2:
            continue
        best = min((p for p in meds if p != "adaptive"), key=meds.get)
        ratio = meds["adaptive"] / meds[best]
        print("| %s | %s | %.2f | %s | %s |" % (rate, content, ratio, best, "yes" if ratio <= 1 / 0.95 else "**no**"))
