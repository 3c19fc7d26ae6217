#!/usr/bin/env python3
"""A 1 GiB pre-copy migration with the authenticated handshake against the
same without a key, alternating (off, on, off, on, ...) in one run: medians,
spread and on/off ratios of total-time, setup-time, downtime and
end-to-end-time, with the load average at the start and the end.

  python3 tests/perf/bench_auth.py --livemig build/harness/livemig \
      --config configs/default.toml --repeat 3 --out results/bench-auth.json

"on" is security.psk-file = "generate" (a fresh key per run, both sides).
"""
import argparse, os, sys, tempfile

sys.path.insert(0, os.path.dirname(__file__))
from bench_util import med, run_json, write_doc  # noqa: E402

FIGURES = {
    "total-time": lambda r: r["total-time"],
    "setup-time": lambda r: r["setup-time"],
    "downtime": lambda r: r["downtime"],
    "end-to-end-time": lambda r: r.get("end-to-end-time"),
    "rounds": lambda r: r["ram"]["dirty-sync-count"],
}
SIDES = {"off": [], "on": ['security.psk-file="generate"']}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--livemig", default="build/harness/livemig")
    p.add_argument("--config", default="configs/default.toml")
    p.add_argument("--set", action="append", default=[], help="section.key=value, for both")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default="results/bench-auth.json")
    args = p.parse_args()
    load_start = os.getloadavg()
    runs = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            for side, sets in SIDES.items():
                out = os.path.join(tmp, "%s%d.json" % (side, i))
                cmd = [args.livemig, "run", args.config, "--quiet", "--out", out]
                for s in args.set + sets:
                    cmd += ["--set", s]
                r, _ = run_json(cmd, out, 900)
                if r["status"] != "completed":
                    print("%s run %d failed: %s" % (side, i, r.get("error")), file=sys.stderr)
                    continue
                runs[side].append(r)
                print("%-3s %d total %.1f ms setup %.1f ms downtime %.1f ms" %
                      (side, i, r["total-time"], r["setup-time"], r["downtime"]), flush=True)
    doc = {"config": args.config, "sets": args.set, "repeat": args.repeat, "load-average-start": load_start,
           "load-average-end": os.getloadavg(), "figures": {}}
    for name, get in FIGURES.items():
        row = {}
        for side in SIDES:
            xs = [get(r) for r in runs[side] if get(r) is not None]
            row[side] = {"median": med(xs), "min": min(xs) if xs else None, "max": max(xs) if xs else None,
                         "runs": xs}
        off, on = row["off"]["median"], row["on"]["median"]
        row["on/off"] = on / off if off and on is not None else None
        doc["figures"][name] = row
        print("%-16s off %9s (%s..%s)  on %9s (%s..%s)  on/off %s" %
              (name, fmt(off), fmt(row["off"]["min"]), fmt(row["off"]["max"]), fmt(on), fmt(row["on"]["min"]),
               fmt(row["on"]["max"]), fmt(row["on/off"], 3)))
    print("load average: start %.2f, end %.2f" % (load_start[0], doc["load-average-end"][0]))
    write_doc(doc, args.out)
    return 0 if all(len(runs[s]) == args.repeat for s in SIDES) else 1


def fmt(x, digits=1):
    return "-" if x is None else ("%%.%df" % digits) % x


if __name__ == "__main__":
    sys.exit(main())
