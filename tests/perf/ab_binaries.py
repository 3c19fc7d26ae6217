#!/usr/bin/env python3
"""Two livemig builds on the same scenario, alternating A B A B on one
machine: medians, spread and the ratio B/A of the figures a migration
engineer compares, with the load average at the start and the end.

  python3 tests/perf/ab_binaries.py --a OLD/livemig --b NEW/livemig \
      --config configs/default.toml --repeat 3 --out results/ab-default.json

Each build uses the livemig-guest next to it (LM_GUEST_BIN is set per run).
"""
import argparse, os, statistics, sys, tempfile

sys.path.insert(0, os.path.dirname(__file__))
from bench_util import med, run_json, wire_gbps, write_doc  # noqa: E402

FIGURES = {
    "total-time": lambda r: r["total-time"],
    "downtime": lambda r: r["downtime"],
    "setup-time": lambda r: r["setup-time"],
    "rounds": lambda r: r["ram"]["dirty-sync-count"],
    **{"downtime." + k: (lambda k: lambda r: r.get("downtime-breakdown", {}).get(k))(k)
       for k in ("freeze", "final-collect", "final-send", "resume", "resume-running")},
    **{"setup." + k: (lambda k: lambda r: r.get("setup-breakdown", {}).get(k))(k)
       for k in ("attach", "tracker-probe", "mappings", "connect", "senders", "tracker-start", "other")},
    "round-0-time": lambda r: r["rounds"][0]["duration"] if r["rounds"] else None,
    "round-0-gbps": wire_gbps,
    "tracker-protect-time": lambda r: r.get("tracker-protect-time"),
    "destination-prepare-time": lambda r: r.get("destination-prepare-time"),
    "transferred-MiB": lambda r: r["ram"]["transferred"] / 2**20,
    # adaptive: pages sent raw before any was classified (the link probe; and
    # every page on the all-raw plan)
    "raw-unclassified-pages": lambda r: r.get("compression", {}).get("senders", {}).get("codecs", {})
    .get("raw", {}).get("classes", {}).get("unclassified", {}).get("pages", 0),
    "round-1-pages": lambda r: r["rounds"][1]["pages"] if len(r["rounds"]) > 1 else None,
    "guest-rate-before": lambda r: r["workload"]["rate-before"],
    "guest-rate-during": lambda r: r["workload"]["rate-during"],
    "guest-rate-during/before": lambda r: (r["workload"]["rate-during"] / r["workload"]["rate-before"]
                                           if r["workload"]["rate-before"] else None),
    "guest-rate-after": lambda r: r["workload"]["rate-after"],
    "cpu-seconds-source": lambda r: r["compression"]["cpu-seconds-source"],
    "cpu-seconds-destination": lambda r: r["compression"]["cpu-seconds-destination"],
    "population-time": lambda r: r.get("population-time"),
    "model-dirty-pages-per-second": lambda r: r.get("model", {}).get("dirty-pages-per-second"),
    "end-to-end-time": lambda r: r.get("end-to-end-time"),
    "postcopy-fault-p50-us": lambda r: r.get("postcopy", {}).get("fault-latency-us", {}).get("p50"),
    "postcopy-fault-p99-us": lambda r: r.get("postcopy", {}).get("fault-latency-us", {}).get("p99"),
    "postcopy-demand-faults": lambda r: r.get("postcopy", {}).get("postcopy-requests"),
    "postcopy-complete-time": lambda r: r.get("postcopy", {}).get("complete-time"),
    "guest-rate-during-postcopy": lambda r: r.get("postcopy", {}).get("rate-during-postcopy"),
}


def guest_next_to(livemig):
    d = os.path.dirname(os.path.abspath(livemig))
    for c in (os.path.join(d, "guest", "livemig-guest"), os.path.join(d, "livemig-guest")):
        if os.path.exists(c):
            return c
    raise SystemExit("no livemig-guest next to %s" % livemig)


def one_run(livemig, config, sets, out):
    if os.path.exists(out):
        os.unlink(out)
    os.environ["LM_GUEST_BIN"] = guest_next_to(livemig)
    cmd = [livemig, "run", config, "--quiet", "--out", out]
    for s in sets:
        cmd += ["--set", s]
    r, _ = run_json(cmd, out, 900)
    return r


def summary(values):
    xs = [v for v in values if v is not None]
    if not xs:
        return {"median": None}
    return {"median": med(xs), "min": min(xs), "max": max(xs), "runs": xs}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--a", required=True, help="baseline livemig")
    p.add_argument("--b", required=True, help="candidate livemig")
    p.add_argument("--config", default="configs/default.toml")
    p.add_argument("--set", action="append", default=[], help="section.key=value, for both")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default="results/ab-default.json")
    args = p.parse_args()
    load_start = os.getloadavg()
    runs = {"a": [], "b": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            for side in ("a", "b"):
                r = one_run(getattr(args, side), args.config, args.set, os.path.join(tmp, "%s%d.json" % (side, i)))
                if r["status"] != "completed":
                    print("%s run %d failed: %s" % (side, i, r.get("error")), file=sys.stderr)
                runs[side].append(r)
                print("%s%d total %.1f ms downtime %.1f ms setup %.1f ms" % (side, i, r["total-time"], r["downtime"],
                                                                           r["setup-time"]), flush=True)
    doc = {"config": args.config, "sets": args.set, "repeat": args.repeat, "a": args.a, "b": args.b,
           "load-average-start": load_start, "load-average-end": os.getloadavg(), "figures": {}}
    for name, get in FIGURES.items():
        a = summary([get(r) for r in runs["a"] if r["status"] == "completed"])
        b = summary([get(r) for r in runs["b"] if r["status"] == "completed"])
        ratio = b["median"] / a["median"] if a["median"] and b["median"] is not None else None
        doc["figures"][name] = {"a": a, "b": b, "b/a": ratio}
        print("%-30s A %10s  B %10s  B/A %s" % (name, fmt(a["median"]), fmt(b["median"]), fmt(ratio, 3)))
    print("load average: start %.2f, end %.2f" % (load_start[0], doc["load-average-end"][0]))
    write_doc(doc, args.out)


def fmt(x, digits=1):
    return "-" if x is None else ("%%.%df" % digits) % x


if __name__ == "__main__":
    main()
