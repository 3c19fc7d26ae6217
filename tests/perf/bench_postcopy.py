#!/usr/bin/env python3
"""Post-copy benchmarks (issue: post-copy with pre-paging). Drives the livemig
binary and writes one JSON document under results/.

  L  fault latency on loopback per transport (p50/p90/p99/max in us) under the
     guest's demand alone (pre-paging none);
  F  demand faults with bubble vs none, on a hotspot and a sequential-scan
     workload: the share of faults bubble saves;
  D  pure post-copy downtime at 1 GiB and 4 GiB: it must not grow with RAM;
  P  a 2 GiB guest dirtying faster than pre-copy converges: downtime of
     pre-copy, post-copy and hybrid on the same guest.

Every post-copy run also reports the guest's progress rate during post-copy
as a share of its rate before migration. Figures are medians over --repeat
runs; ratios are taken per repetition, then their median.
"""
import argparse, os, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import med, migrate, work_dir, write_doc  # noqa: E402


def postcopy_row(r):
    pc = r.get("postcopy", {})
    lat = pc.get("fault-latency-us", {})
    before = r["workload"]["rate-before"]
    return {"status": r["status"], "downtime": r["downtime"], "demand-faults": pc.get("postcopy-requests"),
            "p50": lat.get("p50"), "p90": lat.get("p90"), "p99": lat.get("p99"), "max": lat.get("max"),
            "pages-pushed-ahead": pc.get("pages-pushed-ahead"), "complete-time": pc.get("complete-time"),
            "rate-share": pc.get("rate-during-postcopy", 0) / before if before else None}


def medians(rows, keys):
    return {k: med([row[k] for row in rows if row["status"] == "completed"]) for k in keys}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser()
    p.add_argument("--livemig", required=True)
    p.add_argument("--configs", default=os.path.join(here, "..", "..", "configs"))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--parts", default="LFDP")
    p.add_argument("--out", default="results/bench-postcopy.json")
    args = p.parse_args()
    args.tmp = work_dir("livemig-bench-")
    args.config = os.path.join(args.configs, "postcopy.toml")
    precopy_config = os.path.join(args.configs, "default.toml")
    doc = {"schema": "livemig.bench.postcopy/1", "repeat": args.repeat,
           "started": time.strftime("%Y-%m-%dT%H:%M:%S")}

    if "L" in args.parts:
        out = {}
        for transport in ["tcp", "uring"]:
            rows = [postcopy_row(migrate(args, ["workload.ram=\"256M\"", "postcopy.prepaging=\"none\"",
                                                "migration.transport=\"%s\"" % transport], "lat-%s-%d" % (transport, i)))
                    for i in range(args.repeat)]
            out[transport] = {"runs": rows, "median": medians(rows, ["p50", "p90", "p99", "max", "rate-share"])}
            m = out[transport]["median"]
            print("L %-5s fault latency p50 %.1f us, p90 %.1f, p99 %.1f, max %.0f (target p50 <= 50, p99 <= 500)" % (
                transport, m["p50"] or 0, m["p90"] or 0, m["p99"] or 0, m["max"] or 0))
        doc["L-fault-latency"] = out

    if "F" in args.parts:
        out = {}
        for workload, pattern in [("hotspot", "hotspot:0.1"), ("sequential", "sequential")]:
            rows = []
            for i in range(args.repeat):
                pair = {}
                for policy in ["none", "bubble"]:
                    r = migrate(args, ["workload.ram=\"256M\"", "workload.pattern=\"%s\"" % pattern,
                                       "postcopy.prepaging=\"%s\"" % policy], "faults-%s-%s-%d" % (workload, policy, i))
                    pair[policy] = postcopy_row(r)
                none, bubble = pair["none"]["demand-faults"], pair["bubble"]["demand-faults"]
                rows.append({"none": pair["none"], "bubble": pair["bubble"],
                             "reduction": 1 - bubble / none if none and bubble is not None else None})
            red = med([row["reduction"] for row in rows])
            out[workload] = {"runs": rows, "median-reduction": red,
                             "median-none": med([row["none"]["demand-faults"] for row in rows]),
                             "median-bubble": med([row["bubble"]["demand-faults"] for row in rows])}
            print("F %-10s demand faults none %s -> bubble %s: %.1f%% fewer (target >= 80%%)" % (
                workload, out[workload]["median-none"], out[workload]["median-bubble"], (red or 0) * 100))
        doc["F-prepaging"] = out

    if "D" in args.parts:
        rows = []
        for i in range(args.repeat):
            small = postcopy_row(migrate(args, ["workload.ram=\"1G\""], "downtime-1G-%d" % i))
            large = postcopy_row(migrate(args, ["workload.ram=\"4G\""], "downtime-4G-%d" % i))
            rows.append({"1G": small, "4G": large,
                         "ratio": large["downtime"] / small["downtime"] if small["downtime"] else None})
        d = {"runs": rows, "median-1G": med([r["1G"]["downtime"] for r in rows]),
             "median-4G": med([r["4G"]["downtime"] for r in rows]), "median-ratio": med([r["ratio"] for r in rows])}
        doc["D-downtime-vs-ram"] = d
        print("D downtime 1 GiB %.1f ms, 4 GiB %.1f ms: ratio %.2f (target <= 1.5)" % (
            d["median-1G"], d["median-4G"], d["median-ratio"]))

    if "P" in args.parts:
        # Two writers over the whole RAM at full speed: pre-copy stops on its
        # byte budget without converging.
        guest = ["workload.ram=\"2G\"", "workload.rate=\"max\"", "workload.pattern=\"uniform\"", "workload.threads=2"]
        rows = []
        for i in range(args.repeat):
            pre = migrate(args, guest + ["convergence.max-rounds=10"], "vs-precopy-%d" % i, config=precopy_config)
            post = migrate(args, guest, "vs-postcopy-%d" % i)
            hybrid = migrate(args, guest, "vs-hybrid-%d" % i, config=os.path.join(args.configs, "hybrid.toml"))
            rows.append({"precopy": {"status": pre["status"], "downtime": pre["downtime"],
                                     "stop-reason": pre["stop-reason"], "rounds": pre["ram"]["dirty-sync-count"],
                                     "total-time": pre["total-time"]},
                         "postcopy": postcopy_row(post), "hybrid": postcopy_row(hybrid)})
        d = {"runs": rows,
             "median-precopy-downtime": med([r["precopy"]["downtime"] for r in rows]),
             "median-postcopy-downtime": med([r["postcopy"]["downtime"] for r in rows]),
             "median-hybrid-downtime": med([r["hybrid"]["downtime"] for r in rows]),
             "precopy-stop-reasons": [r["precopy"]["stop-reason"] for r in rows],
             "median-postcopy-rate-share": med([r["postcopy"]["rate-share"] for r in rows])}
        doc["P-vs-precopy"] = d
        print("P 2 GiB non-converging: downtime pre-copy %.0f ms (stops: %s), post-copy %.1f ms, hybrid %.1f ms; "
              "guest progress during post-copy %.1f%% of before" % (
                  d["median-precopy-downtime"], ",".join(d["precopy-stop-reasons"]), d["median-postcopy-downtime"],
                  d["median-hybrid-downtime"], (d["median-postcopy-rate-share"] or 0) * 100))

    write_doc(doc, args.out)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
