#!/usr/bin/env python3
"""Pre-copy benchmarks (issue: pre-copy end to end). Drives the livemig binary
and writes one JSON document under results/.

  A  migration throughput of an idle, fully populated guest (random content,
     fixed:raw) over uring, as a ratio to the transport's own ceiling measured
     in the same run (livemig bench transport, same backend and channels);
  B  total time of a populated mixed-content guest with adaptive vs fixed:raw
     vs fixed:zstd in the same run;
  C  a dirty-rate sweep (hotspot pattern) from 10% to 90% of the link's page
     rate measured in A: rounds, total time, downtime, and the analytic
     model's prediction beside them.

Every figure is a median over --repeat runs; ratios are computed per
repetition and then their median is taken.
"""
import argparse, json, os, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import med, migrate, run_json, wire_gbps, work_dir, write_doc  # noqa: E402

def ceiling_gbps(args, channels):
    out = os.path.join(args.tmp, "ceiling.json")
    cmd = [args.livemig, "bench", "transport", "--backend", args.transport, "--channels", str(channels),
           "--msg-size", "1M", "--seconds", "3", "--no-baseline", "--json", out]
    r, _ = run_json(cmd, out, 300)
    return [x for x in r["results"] if x["mode"] == args.transport][0]["gbps_median"]

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--livemig", required=True)
    p.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "..", "..", "configs", "default.toml"))
    p.add_argument("--ram", default="2G")
    p.add_argument("--transport", default="uring")
    p.add_argument("--channels", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--parts", default="ABC")
    p.add_argument("--out", default="results/bench-precopy.json")
    args = p.parse_args()
    args.tmp = work_dir("livemig-bench-")
    base = ["workload.ram=\"%s\"" % args.ram, "workload.prefill=true", "migration.transport=\"%s\"" % args.transport,
            "migration.channels=%d" % args.channels, "workload.warmup-ms=300"]
    doc = {"schema": "livemig.bench.precopy/1", "ram": args.ram, "transport": args.transport,
           "channels": args.channels, "repeat": args.repeat, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}

    link_pages_per_s = []
    if "A" in args.parts:
        rows = []
        for i in range(args.repeat):
            ceil = ceiling_gbps(args, args.channels)
            r = migrate(args, base + ["workload.content=\"random\"", "workload.rate=1", "migration.policy=\"fixed:raw\""],
                        "idle-raw-%d" % i)
            g = wire_gbps(r) if r["status"] == "completed" else None
            rows.append({"ceiling-gbps": ceil, "migration-gbps": g, "ratio": g / ceil if g else None,
                         "total-time": r["total-time"], "downtime": r["downtime"]})
            if g:
                link_pages_per_s.append(r["rounds"][0]["pages"] / (r["rounds"][0]["duration"] / 1e3))
            print("A rep %d: ceiling %.2f Gbit/s, migration %s Gbit/s, ratio %s" % (
                i, ceil, "%.2f" % g if g else "-", "%.2f" % (g / ceil) if g else "-"))
        doc["A-throughput-vs-ceiling"] = {"runs": rows, "ratio-median": med([x["ratio"] for x in rows]),
                                          "ceiling-gbps-median": med([x["ceiling-gbps"] for x in rows]),
                                          "migration-gbps-median": med([x["migration-gbps"] for x in rows]),
                                          "target": ">= 0.85"}

    if "B" in args.parts:
        rows = []
        for i in range(args.repeat):
            row = {}
            for pol in ["adaptive", "fixed:raw", "fixed:zstd:1"]:
                r = migrate(args, base + ["workload.content=\"mixed\"", "workload.rate=20000",
                                          "migration.policy=\"%s\"" % pol], "mixed-%s-%d" % (pol.replace(":", "_"), i))
                row[pol] = {"total-time": r["total-time"], "downtime": r["downtime"], "transferred": r["ram"]["transferred"],
                            "status": r["status"]}
            row["adaptive-vs-raw"] = row["fixed:raw"]["total-time"] / row["adaptive"]["total-time"]
            row["adaptive-vs-zstd"] = row["fixed:zstd:1"]["total-time"] / row["adaptive"]["total-time"]
            rows.append(row)
            print("B rep %d: total ms adaptive %.0f, raw %.0f, zstd %.0f (speedup vs raw %.2f, vs zstd %.2f)" % (
                i, row["adaptive"]["total-time"], row["fixed:raw"]["total-time"], row["fixed:zstd:1"]["total-time"],
                row["adaptive-vs-raw"], row["adaptive-vs-zstd"]))
        doc["B-policies-mixed"] = {"runs": rows,
                                   "speedup-vs-raw-median": med([x["adaptive-vs-raw"] for x in rows]),
                                   "speedup-vs-zstd-median": med([x["adaptive-vs-zstd"] for x in rows])}

    if "C" in args.parts:
        link = med(link_pages_per_s)
        if not link:
            r = migrate(args, base + ["workload.content=\"random\"", "workload.rate=1", "migration.policy=\"fixed:raw\""],
                        "link-probe")
            link = r["rounds"][0]["pages"] / (r["rounds"][0]["duration"] / 1e3)
        rows = []
        for frac in [0.1, 0.3, 0.5, 0.7, 0.9]:
            rate = int(link * frac)
            reps = []
            for i in range(args.repeat):
                r = migrate(args, base + ["workload.content=\"mixed\"", "workload.pattern=\"hotspot:0.1\"",
                                          "workload.rate=%d" % rate, "migration.policy=\"fixed:raw\"",
                                          "convergence.max-rounds=30"], "sweep-%d-%d" % (int(frac * 100), i))
                m = r.get("model") or {}
                # The model covers the rounds and the stop-and-copy, not setup
                # (attach, destination preallocation) nor verification.
                migration = r["total-time"] - r["setup-time"] - r["verify"].get("time", 0)
                reps.append({"rounds": r["ram"]["dirty-sync-count"], "total-time": r["total-time"],
                             "migration-time": migration,
                             "downtime": r["downtime"], "stop-reason": r["stop-reason"], "status": r["status"],
                             "model-total-time": m.get("total-time"), "model-downtime": m.get("downtime"),
                             "model-converges": m.get("converges"), "model-r": m.get("r")})
            row = {"fraction-of-link": frac, "dirty-pages-per-s": rate, "runs": reps,
                   "rounds": med([x["rounds"] for x in reps]), "total-time": med([x["total-time"] for x in reps]),
                   "migration-time": med([x["migration-time"] for x in reps]),
                   "downtime": med([x["downtime"] for x in reps]),
                   "model-total-time": med([x["model-total-time"] for x in reps]),
                   "model-downtime": med([x["model-downtime"] for x in reps]),
                   "model-converges": all(x["model-converges"] for x in reps)}
            row["predicted-over-measured"] = (row["model-total-time"] / row["migration-time"]
                                              if row["model-total-time"] and row["migration-time"] else None)
            rows.append(row)
            print("C %3d%% (%d pages/s): rounds %s, total %.0f ms (rounds+stop-and-copy %.0f ms), downtime %.0f ms, model total %s ms, model downtime %s ms" % (
                frac * 100, rate, row["rounds"], row["total-time"], row["migration-time"], row["downtime"],
                "%.0f" % row["model-total-time"] if row["model-total-time"] else "-",
                "%.0f" % row["model-downtime"] if row["model-downtime"] else "-"))
        doc["C-dirty-rate-sweep"] = {"link-pages-per-s": link, "rows": rows}

    write_doc(doc, args.out)
    print("wrote", args.out)

if __name__ == "__main__":
    main()
