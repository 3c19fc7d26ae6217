#!/usr/bin/env python3
"""livemig report on real result documents: two pre-copy runs, one post-copy
run and a two-point sweep of tests/harness/gate-small.toml. Asserts that the
page references every figure it should (a timeline per run, the sweep, the
fault latency, the compare table) and that each referenced file exists; then
renders the page in headless Chromium and asserts the browser drew every
figure (skip 77 when Chromium is not installed).

  test_report.py --livemig BUILD/harness/livemig --scenario tests/harness/gate-small.toml
"""
import argparse, json, os, re, shutil, subprocess, sys, tempfile


def run(cmd, cwd, timeout):
    print(" ".join(cmd), flush=True)
    r = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if r.returncode != 0:
        sys.exit("%s: exit %d\n%s" % (cmd[1], r.returncode, r.stdout))
    return r.stdout


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--livemig", required=True)
    p.add_argument("--scenario", required=True)
    a = p.parse_args()
    scenario = os.path.abspath(a.scenario)
    with tempfile.TemporaryDirectory(prefix="lm-report-") as tmp:
        runs = os.path.join(tmp, "runs")
        os.makedirs(runs)
        for i in range(2):
            run([a.livemig, "run", scenario, "--quiet", "--out", os.path.join(runs, "precopy-%d.json" % i)], tmp, 60)
        run([a.livemig, "run", scenario, "--quiet", "--set", 'migration.mode="postcopy"',
             "--set", 'name="gate-small-postcopy"', "--out", os.path.join(runs, "postcopy.json")], tmp, 60)
        sweep = os.path.join(tmp, "rate.toml")
        with open(sweep, "w") as f:
            f.write('base = "%s"\nname = "report-rate"\n[sweep]\n"workload.rate" = [1000, 8000]\n' % scenario)
        run([a.livemig, "run", sweep, "--quiet"], tmp, 90)
        out = os.path.join(tmp, "report")
        run([a.livemig, "report", runs, os.path.join(tmp, "results", "report-rate"), "--base", runs, "--out", out],
            tmp, 120)

        page = open(os.path.join(out, "index.html")).read()
        refs = re.findall(r'(?:src|href)="([^"]+)"', page)
        imgs = re.findall(r'<img src="([^"]+)"', page)
        for ref in refs:
            path = os.path.join(out, ref)
            if not os.path.isfile(path) or os.path.getsize(path) == 0:
                sys.exit("index.html references %s, which is missing or empty" % ref)
        # A timeline per run with pre-copy rounds (not the pure post-copy
        # one), the sweep, the fault latency.
        with_rounds = 0
        for d in (runs, os.path.join(tmp, "results", "report-rate")):
            for f in os.listdir(d):
                doc = json.load(open(os.path.join(d, f)))
                with_rounds += doc.get("schema") == "livemig-result/1" and bool(doc.get("rounds"))
        names = [os.path.basename(i) for i in imgs]
        timelines = [n for n in names if n.startswith("timeline-")]
        print("figures:", names)
        if with_rounds < 4 or len(timelines) != with_rounds:
            sys.exit("%d timelines for %d runs with rounds" % (len(timelines), with_rounds))
        for wanted in ("sweep-report-rate.png", "fault-latency.png"):
            if wanted not in names:
                sys.exit("no %s in the page" % wanted)
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
