#!/usr/bin/env python3
"""The multi-VM benchmark: for m = 1, 2, 4, 8 and each strategy
(configs/multi-vm-small.toml, its link shared at group.link-rate), total time
and downtime measured against the model's prediction, and the group's link
throughput. Points alternate within each repetition (m-major, every strategy
per m), repeated --repeat times: medians and spread. The parallel aggregate
throughput is compared with m = 1 within the same repetition. With
--modes, every point runs in each migration mode in turn (alternating within
the repetition), and post-copy and hybrid are compared with pre-copy per
repetition (the model is pre-copy's: they have none).
Writes --out (results/bench-multi-vm.json)."""
import argparse, os, statistics, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import med, migrate, work_dir, write_doc  # noqa: E402

STRATEGIES = ["serial", "serial-correlated", "parallel"]


def vm_downtime_mean(d):
    return statistics.mean(v["downtime"] for v in d["vm-figures"])


def resume_times(d):
    return [v.get("downtime-breakdown", {}).get("resume", 0) for v in d["vms"]]


def contended_bytes(d):
    return [v["contended-link-bytes"] for v in d["vm-figures"]]


def share_deviation(d, weights):
    """The worst |share / (w_i / sum w) - 1| over the VMs, by the bytes
    granted while every VM was sending."""
    b = contended_bytes(d)
    if not sum(b):
        return None
    return max(abs(x / sum(b) / (w / sum(weights)) - 1) for x, w in zip(b, weights))


def contended_ratio(d):
    b = contended_bytes(d)
    return b[1] / b[0] if b[0] else None


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--livemig", required=True)
    ap.add_argument("--config", default="configs/multi-vm-small.toml")
    ap.add_argument("--vms", default="1,2,4,8")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="results/bench-multi-vm.json")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--link-rate", help="group.link-rate (e.g. 40M): the shared link's own budget, set under what "
                    "the CPU sustains here so that the link, not the engine, is the limit")
    ap.add_argument("--ram", help="workload.ram of every guest (e.g. 64M)")
    ap.add_argument("--rate", type=int, help="workload.rate (page writes/s) of every guest")
    ap.add_argument("--set", action="append", default=[], help="any other scenario override, repeatable")
    ap.add_argument("--modes", help="migration.mode of every VM, in turn at each point: e.g. precopy,postcopy,hybrid "
                    "(default: the scenario's)")
    ap.add_argument("--weights-check", action="store_true",
                    help="also, in every repetition, m = 2 parallel with group.weights = [1, 3]")
    args = ap.parse_args()
    sets = list(args.set)
    if args.link_rate:
        sets.append('group.link-rate="%s"' % args.link_rate)
    if args.ram:
        sets.append('workload.ram="%s"' % args.ram)
    if args.rate is not None:
        sets.append("workload.rate=%d" % args.rate)
    strategies = args.strategies.split(",")
    modes = args.modes.split(",") if args.modes else [None]
    args.tmp = work_dir("bench-multi-vm-")
    ms = [int(x) for x in args.vms.split(",")]
    load_before = os.getloadavg()
    runs = {}  # (m, strategy, mode) -> [group documents]
    for rep in range(args.repeat):
        for m in ms:
            for s in strategies:
                for mode in modes:
                    mode_set = ['migration.mode="%s"' % mode] if mode else []
                    doc = migrate(args, sets + mode_set + ["group.vms=%d" % m, 'group.strategy="%s"' % s],
                                  "r%d-m%d-%s-%s" % (rep, m, s, mode or "scenario"))
                    runs.setdefault((m, s, mode), []).append(doc)
                    model = doc.get("model", {})
                    print("rep %d m=%d %-17s %-8s %s total %8.1f ms (model %8.1f) downtime %7.1f ms, VMs' mean %7.1f (model %7.1f)"
                          " R %6.1f MB/s%s" % (rep, m, s, mode or "", doc["status"], doc["migration-time"], model.get("total-time", 0),
                                               doc["downtime"], vm_downtime_mean(doc), model.get("downtime", 0),
                                               doc["link"]["bytes-per-second"] / 1e6,
                                               "" if model else "; no model: %s" % doc.get("no-model")), flush=True)
        if args.weights_check:
            doc = migrate(args, sets + ["group.vms=2", 'group.strategy="parallel"', "group.weights=[1, 3]"],
                          "r%d-weights-1-3" % rep)
            runs.setdefault("weights-1-3", []).append(doc)
    weight_docs = runs.pop("weights-1-3", [])
    points = []
    for (m, s, mode), docs in sorted(runs.items(), key=lambda kv: (kv[0][0], kv[0][1], str(kv[0][2]))):
        def series(f):
            return [f(d) for d in docs if d["status"] == "completed"]
        total = series(lambda d: d["migration-time"])
        first_to_last = series(lambda d: d["total-time"])
        vdowns = [[v["downtime"] for v in d["vm-figures"]] for d in docs if d["status"] == "completed"]
        down = series(lambda d: d["downtime"])
        mt = series(lambda d: d.get("model", {}).get("total-time"))
        md = series(lambda d: d.get("model", {}).get("downtime"))
        vdown = series(vm_downtime_mean)
        rate = series(lambda d: d["link"]["bytes-per-second"])
        points.append({
            "vms": m, "strategy": s, "mode": mode, "runs": len(docs), "completed": len(total),
            "modes": sorted({v.get("mode", "precopy") for d in docs for v in d["vm-figures"]}),
            "migration-time": {"median": med(total), "min": min(total, default=None), "max": max(total, default=None)},
            "total-time": {"median": med(first_to_last), "min": min(first_to_last, default=None),
                           "max": max(first_to_last, default=None)},
            # Each VM's downtime (serial-correlated: from VM 1's freeze), the median over the runs per VM.
            "vm-downtime": [med([r[i] for r in vdowns]) for i in range(m)] if vdowns else None,
            "no-model": sorted({d.get("no-model") for d in docs if d.get("no-model")}),
            "downtime": {"median": med(down), "min": min(down, default=None), "max": max(down, default=None)},
            "model-total-time": med(mt), "model-downtime": med(md),
            "model-over-measured-migration-time": med([a / b for a, b in zip(mt, total) if a and b]),
            "model-over-measured-downtime": med([a / b for a, b in zip(md, down) if a and b]),
            # The model's serial and parallel T_down is each VM's: beside the
            # group's (the longest), the mean over the VMs.
            "vm-downtime-mean": {"median": med(vdown), "min": min(vdown, default=None), "max": max(vdown, default=None)},
            "model-over-measured-vm-downtime-mean": med([a / b for a, b in zip(md, vdown) if a and b]),
            "resume-time": med([x for d in docs if d["status"] == "completed" for x in resume_times(d)]),
            "resume-time-max": max([x for d in docs if d["status"] == "completed" for x in resume_times(d)], default=None),
            "link-bytes-per-second": {"median": med(rate), "min": min(rate, default=None), "max": max(rate, default=None)},
            "model-converges": [d.get("model", {}).get("converges") for d in docs],
            "model-inputs": [{k: d.get("model", {}).get(k) for k in
                              ("r", "rounds", "dirty-pages-per-second", "vm-bytes", "resume-time")} for d in docs],
        })
        if mode and mode != "precopy" and (m, s, "precopy") in runs:  # against pre-copy, repetition by repetition
            pairs = [(d, p) for d, p in zip(docs, runs[(m, s, "precopy")])
                     if d["status"] == p["status"] == "completed"]
            for field in ("total-time", "migration-time", "downtime"):
                r = [d[field] / p[field] for d, p in pairs if p[field]]
                points[-1]["%s-over-precopy" % field] = {"median": med(r), "all": r}
        if s == "parallel" and m > 1:  # equal weights: each VM's share of the contended bytes against 1/m
            points[-1]["equal-share-worst-deviation"] = [share_deviation(d, [1] * m) for d in docs
                                                         if d["status"] == "completed"]
    # Parallel aggregate throughput against m = 1 in the same repetition.
    ratios = {}
    for m in ms:
        if m == 1 or (m, "parallel", modes[0]) not in runs:
            continue
        per_rep = []
        for rep in range(args.repeat):
            one = runs[(1, "parallel", modes[0])][rep] if (1, "parallel", modes[0]) in runs else None
            par = runs[(m, "parallel", modes[0])][rep]
            if one and one["status"] == "completed" and par["status"] == "completed":
                per_rep.append(par["link"]["bytes-per-second"] / one["link"]["bytes-per-second"])
        ratios[str(m)] = {"median": med(per_rep), "all": per_rep}
    fairness = {"weights-1-3": {"ratio": [contended_ratio(d) for d in weight_docs if d["status"] == "completed"]}}
    doc = {"schema": "livemig-bench-multi-vm/1", "config": args.config, "repeat": args.repeat, "sets": sets,
           "fairness": fairness,
           "load-average-before": load_before, "load-average-after": os.getloadavg(),
           "note": "one 2-core host: guests, destinations and engine share the CPU; other builds may run",
           "points": points, "parallel-over-single-throughput": ratios}
    write_doc(doc, args.out)
    for p in points:
        if "equal-share-worst-deviation" in p:
            print("parallel m=%d equal weights: worst share deviation from 1/m %s" % (p["vms"], p["equal-share-worst-deviation"]))
    if weight_docs:
        print("weights 1:3: contended-byte ratio %s" % fairness["weights-1-3"]["ratio"])
    for m, r in ratios.items():
        print("parallel m=%s aggregate / single throughput: median %s (%s)" % (m, r["median"], r["all"]))
    print("wrote %s; load average before %s after %s" % (args.out, load_before, os.getloadavg()))


if __name__ == "__main__":
    main()
