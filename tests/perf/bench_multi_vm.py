#!/usr/bin/env python3
"""The multi-VM benchmark: for m = 1, 2, 4, 8 and each strategy
(configs/multi-vm-small.toml, its link shared at group.link-rate), total time
and downtime measured against the model's prediction, and the group's link
throughput. Points alternate within each repetition (m-major, every strategy
per m), repeated --repeat times: medians and spread. The parallel aggregate
throughput is compared with m = 1 within the same repetition.
Writes --out (results/bench-multi-vm.json)."""
import argparse, os, statistics, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import med, migrate, write_doc  # noqa: E402

STRATEGIES = ["serial", "serial-correlated", "parallel"]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--livemig", required=True)
    ap.add_argument("--config", default="configs/multi-vm-small.toml")
    ap.add_argument("--vms", default="1,2,4,8")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="results/bench-multi-vm.json")
    args = ap.parse_args()
    args.tmp = tempfile.mkdtemp(prefix="bench-multi-vm-")
    ms = [int(x) for x in args.vms.split(",")]
    load_before = os.getloadavg()
    runs = {}  # (m, strategy) -> [group documents]
    for rep in range(args.repeat):
        for m in ms:
            for s in STRATEGIES:
                doc = migrate(args, ["group.vms=%d" % m, 'group.strategy="%s"' % s], "r%d-m%d-%s" % (rep, m, s))
                runs.setdefault((m, s), []).append(doc)
                model = doc.get("model", {})
                print("rep %d m=%d %-17s %s total %8.1f ms (model %8.1f) downtime %7.1f ms (model %7.1f) R %6.1f MB/s"
                      % (rep, m, s, doc["status"], doc["migration-time"], model.get("total-time", 0), doc["downtime"],
                         model.get("downtime", 0), doc["link"]["bytes-per-second"] / 1e6), flush=True)
    points = []
    for (m, s), docs in sorted(runs.items()):
        def series(f):
            return [f(d) for d in docs if d["status"] == "completed"]
        total = series(lambda d: d["migration-time"])
        down = series(lambda d: d["downtime"])
        mt = series(lambda d: d.get("model", {}).get("total-time"))
        md = series(lambda d: d.get("model", {}).get("downtime"))
        rate = series(lambda d: d["link"]["bytes-per-second"])
        points.append({
            "vms": m, "strategy": s, "runs": len(docs), "completed": len(total),
            "migration-time": {"median": med(total), "min": min(total, default=None), "max": max(total, default=None)},
            "downtime": {"median": med(down), "min": min(down, default=None), "max": max(down, default=None)},
            "model-total-time": med(mt), "model-downtime": med(md),
            "model-over-measured-migration-time": med([a / b for a, b in zip(mt, total) if a and b]),
            "model-over-measured-downtime": med([a / b for a, b in zip(md, down) if a and b]),
            "link-bytes-per-second": {"median": med(rate), "min": min(rate, default=None), "max": max(rate, default=None)},
        })
    # Parallel aggregate throughput against m = 1 in the same repetition.
    ratios = {}
    for m in ms:
        if m == 1:
            continue
        per_rep = []
        for rep in range(args.repeat):
            one = runs[(1, "parallel")][rep] if (1, "parallel") in runs else None
            par = runs[(m, "parallel")][rep]
            if one and one["status"] == "completed" and par["status"] == "completed":
                per_rep.append(par["link"]["bytes-per-second"] / one["link"]["bytes-per-second"])
        ratios[str(m)] = {"median": med(per_rep), "all": per_rep}
    doc = {"schema": "livemig-bench-multi-vm/1", "config": args.config, "repeat": args.repeat,
           "load-average-before": load_before, "load-average-after": os.getloadavg(),
           "note": "one 2-core host: guests, destinations and engine share the CPU; other builds may run",
           "points": points, "parallel-over-single-throughput": ratios}
    write_doc(doc, args.out)
    for m, r in ratios.items():
        print("parallel m=%s aggregate / single throughput: median %s (%s)" % (m, r["median"], r["all"]))
    print("wrote %s; load average before %s after %s" % (args.out, load_before, os.getloadavg()))


if __name__ == "__main__":
    main()
