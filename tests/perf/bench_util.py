"""Shared by the migration benchmarks: run `livemig run` with overrides and
read its result JSON; medians that skip missing values."""
import atexit, json, os, shutil, statistics, subprocess, sys, tempfile


def run_json(cmd, out_path, timeout):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if not os.path.exists(out_path):
        raise RuntimeError("no result from %s:\n%s" % (" ".join(cmd), proc.stdout[-2000:]))
    with open(out_path) as f:
        return json.load(f), proc.stdout


def migrate(args, sets, tag, config=None):
    """One `livemig run` of args.config (or `config`) with `sets` overrides."""
    out = os.path.join(args.tmp, tag + ".json")
    if os.path.exists(out):
        os.unlink(out)
    cmd = [args.livemig, "run", config or args.config, "--quiet", "--out", out]
    for s in sets:
        cmd += ["--set", s]
    r, _ = run_json(cmd, out, 900)
    if r["status"] != "completed":
        print("  %s failed: %s" % (tag, r.get("error")), file=sys.stderr)
    return r


def wire_gbps(r):
    """Round 0's wire rate (Gbit/s): it carries the whole populated RAM, so it
    is the migration's throughput. None without a timed round 0."""
    rd = r["rounds"][0] if r.get("rounds") else None
    return rd["bytes"] * 8 / (rd["duration"] / 1e3) / 1e9 if rd and rd["duration"] else None


def work_dir(prefix):
    """A fresh directory for the runs' own files, removed at exit: results/
    keeps the figures."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, True)
    return path


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def write_doc(doc, path):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
