#!/usr/bin/env python3
"""The policy x link sweep's table (docs/benchmarks.md): total time and bytes
on the wire per policy x link rate x content, and the ratio of each to
fixed:raw at the same rate and content. Reads the sweep's result documents
(results/policy-link/N.json, or the directories given); with several runs of
one point (repeated sweeps into several directories) it shows the median and
the range.

Runs made on a slowed host are set aside as `livemig compare
--host-slowdown 30%` sets them aside: a run whose host.calibration-us
(before or after) is more than 30% above the median of every run's
(--host-slowdown PERCENT, or off). They
are listed below the tables. A repeated sweep's runs (N-<pass>.json) also
give adaptive's ratio pass by pass. The second table holds adaptive
against the best other policy and against the best fixed one (the issue's
target), with a count of the cells within 1/0.95."""
import argparse, json, pathlib, re, statistics

ap = argparse.ArgumentParser()
ap.add_argument("dirs", nargs="*", default=["results/policy-link"])
ap.add_argument("--host-slowdown", default="30%")
args = ap.parse_args()

docs = []
for d in map(pathlib.Path, args.dirs):
    for f in sorted(d.glob("*.json")):
        if f.name == "summary.json":
            continue
        docs.append((f, json.loads(f.read_text())))

def calibration(r):
    cal = r.get("host", {}).get("calibration-us", {})
    values = [v for v in (cal.get("before"), cal.get("after")) if isinstance(v, (int, float))]
    return max(values) if values else None

cals = {f: c for f, c in ((f, calibration(r)) for f, r in docs) if c}
slowed = []
if args.host_slowdown != "off" and cals:
    limit = 1 + float(args.host_slowdown.rstrip("%")) / 100
    median_cal = statistics.median(cals.values())
    slowed = [(f, c) for f, c in cals.items() if c > limit * median_cal]
aside = {f for f, _ in slowed}

runs = {}
by_pass = {}  # (rate, content, pass) -> {policy: total}
for f, r in docs:
    if f in aside:
        continue
    c = r["config"]
    key = (c["link"]["rate"], c["workload"]["content"], c["policy"])
    ok = r["status"] == "completed" and r.get("verify", {}).get("ok")
    runs.setdefault(key, []).append((r["total-time"], r["ram"]["transferred"], ok, r.get("compression", {}).get("cpu-seconds-source", 0)))
    m = re.fullmatch(r"\d+-(\d+)\.json", f.name)
    if m:
        by_pass.setdefault((key[0], key[1], int(m.group(1))), {})[key[2]] = r["total-time"]

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

# The target: adaptive within 1/0.95 of the best fixed policy's
# total time in every cell (medians); the best other policy (cbc included)
# is shown beside it. Per pass: adaptive against the best other policy of
# the same pass, where the pass ran them all.
def within(ratio):
    return ratio <= 1 / 0.95

def verdict(ratio):
    return "yes" if within(ratio) else "**no**"

print()
print("| link | content | adaptive / best other | best other | within 1/0.95 | per pass | adaptive / best fixed | within 1/0.95 |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
met = {"other": 0, "fixed": 0}
cells = 0
for rate in rates:
    for content in contents:
        meds = {p: med([x[0] for x in runs[(rate, content, p)]]) for p in policies if (rate, content, p) in runs}
        if "adaptive" not in meds or len(meds) < 2:
            continue
        cells += 1
        best = min((p for p in meds if p != "adaptive"), key=meds.get)
        ratio = meds["adaptive"] / meds[best]
        fixed = [p for p in meds if p.startswith("fixed:")]
        ratio_fixed = meds["adaptive"] / min(meds[p] for p in fixed) if fixed else float("nan")
        met["other"] += within(ratio)
        met["fixed"] += within(ratio_fixed)
        passes = []
        for (r_, c_, n), totals in sorted(by_pass.items()):
            if (r_, c_) == (rate, content) and "adaptive" in totals and len(totals) == len(meds):
                passes.append("%.2f" % (totals["adaptive"] / min(v for p, v in totals.items() if p != "adaptive")))
        print("| %s | %s | %.2f | %s | %s | %s | %.3f | %s |" % (
            rate, content, ratio, best, verdict(ratio), ", ".join(passes), ratio_fixed, verdict(ratio_fixed)))
print()
print("Within 1/0.95: %d of %d cells against the best other policy, %d against the best fixed one." % (
    met["other"], cells, met["fixed"]))

if slowed:
    print()
    print("Set aside, made on a slowed host (calibration more than %s above the median %.0f us):" % (
        args.host_slowdown, median_cal))
    for f, c in slowed:
        print("  %s: %.0f us" % (f, c))
