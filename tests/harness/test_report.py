#!/usr/bin/env python3
"""livemig report on real result documents: two pre-copy runs, one post-copy
run, a group of two and a two-point sweep of tests/harness/gate-small.toml run
twice over into a directory of its own (--repeat 2 --out; in a memory
cgroup), and a copy of one run whose timeline the test replaced by a
series of its own. Asserts that the page references every figure it should
(a timeline per run, a rounds figure per run with rounds, the sweep, the
fault latency, the group, the compare table) and that each referenced file
exists; that the group figure draws each VM's link series;
that every timeline figure draws its run's samples (each line's vertices in
the SVG are the samples' (t-ms, value) pairs under one affine map: the
series, not something typed, and the planted series too); then renders the
page in headless Chromium and asserts the browser drew every figure (skip
77 when Chromium is not installed). A sweep of three keys, from a summary
written here, must draw a panel per outer value and a line per middle value,
each line its points' medians.

  test_report.py --livemig BUILD/harness/livemig --scenario tests/harness/gate-small.toml
"""
import argparse, json, math, os, re, shutil, subprocess, sys, tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from memcg import MemoryCgroup, Skip  # noqa: E402

# The timeline figure's lines (their gid in the SVG) and the sample field each draws.
SERIES = {"timeline-mbps": "mbps", "timeline-pages-left": "pages-left", "timeline-dirty-rate": "dirty-rate"}


def line_vertices(svg, gid):
    """The (x, y) vertices of the path in the SVG group `gid`, or None."""
    m = re.search(r'<g id="%s">\s*<path d="([^"]*)"' % re.escape(gid), svg)
    if not m:
        return None
    nums = [float(v) for v in re.findall(r"-?[0-9.]+(?:e-?[0-9]+)?", m.group(1))]
    return list(zip(nums[0::2], nums[1::2]))


def affine_image(xs, ys):
    """True when ys = a * xs + b for some a, b, to drawing precision (the SVG
    writes coordinates to 6 significant digits); a constant series maps to a
    constant line."""
    lo, hi = min(xs), max(xs)
    if hi == lo:
        return max(ys) - min(ys) < 1e-3
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    a = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    b = my - a * mx
    return all(abs(a * x + b - y) < 0.05 for x, y in zip(xs, ys)) and a != 0


def draws(svg, doc):
    """True when every line of the timeline figure draws this document's samples."""
    samples = doc.get("timeline") or []
    t = [s["t-ms"] for s in samples]
    for gid, field in SERIES.items():
        v = line_vertices(svg, gid)
        if not v or len(v) != len(samples):
            return False
        if not affine_image(t, [x for x, _ in v]):
            return False
        values = [s[field] for s in samples]
        if max(values) == min(values):
            if max(y for _, y in v) - min(y for _, y in v) > 1e-3:
                return False
        elif not affine_image(values, [y for _, y in v]):
            return False
    return True


def check_sweep_panels(livemig, tmp):
    """A sweep of three keys (a summary written here, no runs needed): one
    panel per value of the outermost key, a line per value of the next, each
    drawing the medians of its points' runs against the innermost key."""
    d = os.path.join(tmp, "panels")
    os.makedirs(d)
    runs, want = [], {}
    for a_i, a_v in enumerate(("1gbit", "10gbit")):
        for b_i, b_v in enumerate(("raw", "lz4")):
            for c_i, c_v in enumerate(("mixed", "text", "ints")):
                point = "link.namespaces=true,rate=%s,policy=%s,content=%s" % (a_v, b_v, c_v)
                # Not linear in c (nor the means affine in the medians): a line of means fails.
                times = [1000 + 700 * a_i + 300 * b_i + 97 * c_i * c_i * (1 + b_i) + k for k in (0, 40 + 60 * c_i, 5)]
                want.setdefault((a_i, b_i), []).append(sorted(times)[1])
                runs += [{"point": point, "repeat": k + 1, "status": "completed", "total-time": t,
                          "downtime": 10, "model-total-time": t * 0.9, "model-downtime": 9}
                         for k, t in enumerate(times)]
    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump({"schema": "livemig-sweep/1", "name": "three-keys", "repeats": 3, "runs": runs}, f)
    out = os.path.join(tmp, "panels-out")
    subprocess.run([livemig, "report", d, "--out", out], check=True, timeout=120, stdout=subprocess.DEVNULL)
    svg = open(os.path.join(out, "figures", "sweep-three-keys.svg")).read()
    for (panel, line), medians in want.items():
        v = line_vertices(svg, "sweep-total-%d-%d" % (panel, line))
        if not v or len(v) != len(medians):
            sys.exit("sweep panel %d has no line %d of %d points" % (panel, line, len(medians)))
        if not affine_image(medians, [y for _, y in v]) or not affine_image(range(len(medians)), [x for x, _ in v]):
            sys.exit("sweep panel %d line %d does not draw its points' medians" % (panel, line))
    if line_vertices(svg, "sweep-total-2-0"):
        sys.exit("a third panel for two values of the outermost key")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--livemig", required=True)
    p.add_argument("--scenario", required=True)
    a = p.parse_args()
    scenario = os.path.abspath(a.scenario)
    try:
        cg = MemoryCgroup("lm-report", 1 << 30)
    except Skip as e:
        print("SKIP:", e)
        sys.exit(77)

    def run(cmd, cwd, timeout):
        return cg.run(cmd, timeout, cwd=cwd)[1]

    with cg, tempfile.TemporaryDirectory(prefix="lm-report-") as tmp:
        runs = os.path.join(tmp, "runs")
        os.makedirs(runs)
        for i in range(2):
            run([a.livemig, "run", scenario, "--quiet", "--out", os.path.join(runs, "precopy-%d.json" % i)], tmp, 60)
        run([a.livemig, "run", scenario, "--quiet", "--set", 'migration.mode="postcopy"',
             "--set", 'name="gate-small-postcopy"', "--out", os.path.join(runs, "postcopy.json")], tmp, 60)
        # A group of two (livemig-group/1): its link series per VM and its VMs' figures.
        run([a.livemig, "run", scenario, "--quiet", "--set", "group.vms=2", "--set", 'group.strategy="parallel"',
             "--set", 'name="gate-small-group"', "--out", os.path.join(runs, "group.json")], tmp, 90)
        sweep = os.path.join(tmp, "rate.toml")
        with open(sweep, "w") as f:
            f.write('base = "%s"\nname = "report-rate"\n[sweep]\n"workload.rate" = [1000, 8000]\n' % scenario)
        # Twice over, into a directory of its own: a point's two runs are one median in the figure.
        sweep_dir = os.path.join(tmp, "sweep-out")
        run([a.livemig, "run", sweep, "--quiet", "--repeat", "2", "--out", sweep_dir], tmp, 150)
        summary = json.load(open(os.path.join(sweep_dir, "summary.json")))
        files = sorted(f for f in os.listdir(sweep_dir) if f != "summary.json")
        if summary.get("repeats") != 2 or [r["repeat"] for r in summary["runs"]] != [1, 1, 2, 2] or \
                files != ["0-1.json", "0-2.json", "1-1.json", "1-2.json"]:
            sys.exit("a sweep run with --repeat 2: summary %s, files %s" % (summary, files))
        # A run whose timeline is a series no run would measure: its figure must draw it.
        planted = json.load(open(os.path.join(runs, "precopy-0.json")))
        planted["config"]["name"] = "planted"
        planted["timeline"] = [dict(planted["timeline"][0], **{
            "t-ms": 50.0 * i + 7, "mbps": 1000 + 700 * math.sin(i / 2.0) + 13 * i,
            "pages-left": (i * 7919) % 1000, "dirty-rate": 3.0 * i * i}) for i in range(23)]
        planted_dir = os.path.join(tmp, "planted")
        os.makedirs(planted_dir)
        with open(os.path.join(planted_dir, "planted.json"), "w") as f:
            json.dump(planted, f)
        out = os.path.join(tmp, "report")
        run([a.livemig, "report", runs, sweep_dir, planted_dir, "--base", runs,
             "--out", out], tmp, 120)

        page = open(os.path.join(out, "index.html")).read()
        refs = re.findall(r'(?:src|href)="([^"]+)"', page)
        imgs = re.findall(r'<img src="([^"]+)"', page)
        for ref in refs:
            path = os.path.join(out, ref)
            if not os.path.isfile(path) or os.path.getsize(path) == 0:
                sys.exit("index.html references %s, which is missing or empty" % ref)
        # A timeline per run (the post-copy one too), a rounds figure per run
        # with pre-copy rounds (not the pure post-copy one), the sweep, the
        # fault latency.
        docs = []
        for d in (runs, sweep_dir, planted_dir):
            for f in os.listdir(d):
                doc = json.load(open(os.path.join(d, f)))
                if doc.get("schema") == "livemig-result/2":
                    docs.append(doc)
        with_rounds = sum(bool(d.get("rounds")) for d in docs)
        names = [os.path.basename(i) for i in imgs]
        timelines = [i for i in imgs if os.path.basename(i).startswith("timeline-")]
        rounds = [n for n in names if n.startswith("rounds-")]
        print("figures:", names)
        if len(docs) != 8 or len(timelines) != len(docs):
            sys.exit("%d timelines for %d runs" % (len(timelines), len(docs)))
        if with_rounds < 7 or len(rounds) != with_rounds:
            sys.exit("%d rounds figures for %d runs with rounds" % (len(rounds), with_rounds))
        # Every timeline figure draws the samples of one run, and every run's are drawn.
        drawn_docs = set()
        for ref in timelines:
            svg = open(os.path.join(out, ref[:-4] + ".svg")).read()
            matches = [i for i, d in enumerate(docs) if draws(svg, d)]
            if not matches:
                sys.exit("%s draws no run's samples" % ref)
            drawn_docs.update(matches)
        if len(drawn_docs) != len(docs):
            sys.exit("the samples of %d of %d runs are drawn" % (len(drawn_docs), len(docs)))
        if not any(n.startswith("timeline-") and "planted" in n for n in names):
            sys.exit("no timeline figure for the planted series")
        check_sweep_panels(a.livemig, tmp)
        for wanted in ("sweep-report-rate.png", "fault-latency.png"):
            if wanted not in names:
                sys.exit("no %s in the page" % wanted)
        if "sweep report-rate (2 points, 2 runs each: medians)" not in page:
            sys.exit("the sweep's caption does not say its 2 points of 2 runs each")
        # The group's figure draws each VM's link series (MB/s per bucket against ms).
        group = json.load(open(os.path.join(runs, "group.json")))
        if "group-group.png" not in names:
            sys.exit("no group figure in the page")
        svg = open(os.path.join(out, "figures", "group-group.svg")).read()
        bucket = group["link"]["bucket-ms"]
        for i, series in enumerate(group["link"]["series"]):
            v = line_vertices(svg, "group-link-vm%d" % (i + 1))
            if not v or len(v) != len(series):
                sys.exit("the group figure does not draw VM %d's %d buckets" % (i + 1, len(series)))
            if len(series) > 1 and not affine_image([bucket * k for k in range(len(series))], [x for x, _ in v]):
                sys.exit("VM %d's link line is not on the group's clock" % (i + 1))
            if max(series) > min(series) and not affine_image(series, [y for _, y in v]):
                sys.exit("VM %d's link line does not draw its series" % (i + 1))
        if page.count("<td>completed</td>") < 2:
            sys.exit("no per-VM table for the group")
        for ref in imgs:
            if not ref.endswith(".png") or not os.path.isfile(os.path.join(out, ref[:-4] + ".svg")):
                sys.exit("%s has no SVG beside it" % ref)
        if "<table>" not in page or "total-time" not in page or "unchanged" not in page and "noisy" not in page:
            sys.exit("no compare table in the page")

        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if not chromium:
            print("SKIP: chromium is not installed (scripts/install-deps.sh installs it); the page was checked "
                  "without rendering")
            sys.exit(77)
        profile = os.path.join(tmp, "chromium-profile")
        r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=" + profile,
                            "--virtual-time-budget=10000", "--dump-dom", "file://" + os.path.join(out, "index.html")],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=90)
        drawn = re.search(r'data-figures-drawn="(\d+)"', r.stdout)
        if not drawn:
            sys.exit("chromium (exit %d) did not run the page's load handler" % r.returncode)
        print("chromium drew %s of %d figures" % (drawn.group(1), len(imgs)))
        if int(drawn.group(1)) != len(imgs):
            sys.exit("chromium drew %s of %d figures" % (drawn.group(1), len(imgs)))
    print("ok")


if __name__ == "__main__":
    main()
