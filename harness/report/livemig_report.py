#!/usr/bin/env python3
"""livemig report: an HTML page and its figures (PNG and SVG, matplotlib)
drawn from result documents. Run by 'livemig report RESULTS... --out DIR',
which passes its own path (--livemig) for the 'livemig compare' table.

Every figure is drawn from the documents' fields: nothing is typed in.
  timeline-<run>       the run's samples every 100 ms (result 'timeline'): throughput,
                       pages left to send, dirty rate, rounds and downtime marked
                       from 'timeline-events'
  rounds-<run>         bytes and pages sent per round, the dirty rate, downtime marked
  sweep-<name>         total time and downtime per point beside the model's prediction;
                       a sweep of several keys: total time against the innermost, a
                       line per value of the next, a panel per value of the others
  fault-latency        post-copy fault-latency percentiles per run (the documents
                       hold p50/p90/p99/max, not the samples)
  group-<run>          a group's (livemig-group/1) link bytes per VM every bucket
                       ('link.series'), and each VM's course from 'vm-figures':
                       waiting for its destination, migrating, downtime, pages
                       still arriving after a post-copy resume; a table of the
                       per-VM figures beside it
  compare table        'livemig compare --format json' of --base against the results,
                       or of a perf-gate directory's base/ and candidate/
"""
import argparse, concurrent.futures, html, json, os, re, statistics, subprocess, sys

import matplotlib

matplotlib.use("Agg")  # no display
# Every sample is a vertex of its line: the SVG holds the series as measured
# (the report test reads it back), not a simplified outline of it.
matplotlib.rcParams["path.simplify"] = False
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = ("livemig-result/1", "livemig-result/2")  # 2 added the timeline
SWEEP = "livemig-sweep/1"
GROUP = "livemig-group/1"


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        sys.exit("livemig report: read %s: %s" % (path, e))


def collect(paths):
    """Result documents (path, doc), sweeps (dir, summary) and groups (path, doc) under paths."""
    runs, sweeps, groups, seen = [], [], [], set()

    def add_file(path):
        real = os.path.realpath(path)
        if real in seen:
            return
        seen.add(real)
        doc = read_json(path)
        if not isinstance(doc, dict):
            return
        if doc.get("schema") in RESULTS:
            runs.append((path, doc))
        elif doc.get("schema") == SWEEP:
            sweeps.append((os.path.dirname(path), doc))
        elif doc.get("schema") == GROUP:
            groups.append((path, doc))

    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs.sort()
                for f in sorted(files):
                    if f.endswith(".json"):
                        add_file(os.path.join(root, f))
        else:
            add_file(p)
    return runs, sweeps, groups


def slug(text):
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def save(fig, out, name):
    paths = {}
    for ext in ("png", "svg"):
        rel = os.path.join("figures", "%s.%s" % (name, ext))
        fig.savefig(os.path.join(out, rel), dpi=100 if ext == "png" else None, bbox_inches="tight")
        paths[ext] = rel
    plt.close(fig)
    return paths


def timeline(out, name, doc):
    """The samples every 100 ms: throughput, pages left, dirty rate; each
    line's gid names the sample field it draws."""
    samples = doc.get("timeline") or []
    # One sample is still drawn: a run of 100-200 ms (the engine's own, on a
    # 64 MiB guest) has one, and its figure marks its phases all the same.
    if not samples:
        return None
    events = doc.get("timeline-events") or []
    t = [s["t-ms"] for s in samples]
    fig, (ax_rate, ax_left, ax_dirty) = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    ax_rate.plot(t, [s["mbps"] for s in samples], "-", color="tab:blue", marker=".", gid="timeline-mbps",
                 label="wire rate (Mbit/s)")
    ax_rate.set_ylabel("Mbit/s on the wire")
    ax_left.plot(t, [s["pages-left"] for s in samples], "-", color="tab:green", marker=".",
                 gid="timeline-pages-left", label="pages left to send")
    ax_left.set_ylabel("pages left")
    ax_dirty.plot(t, [s["dirty-rate"] for s in samples], "-", color="tab:red", marker=".",
                  gid="timeline-dirty-rate", label="dirty rate (pages/s)")
    ax_dirty.set_ylabel("pages dirtied/s")
    ax_dirty.set_xlabel("ms since the source started (sampled every %g ms)" % doc.get("timeline-interval", 100))
    freeze = [e["t-ms"] for e in events if e["event"] == "freeze"]
    resumed = [e["t-ms"] for e in events if e["event"] == "resumed"]
    rounds = [e for e in events if e["event"] == "round"]
    phases = [e for e in events if e["event"] == "phase"]
    for ax in (ax_rate, ax_left, ax_dirty):
        # The source's setup (and the wait for the destination's preparation in it).
        for i, e in enumerate(phases):
            if e["phase"] == "setup" and i + 1 < len(phases):
                ax.axvspan(e["t-ms"], phases[i + 1]["t-ms"], color="0.85", alpha=0.6,
                           label="setup" if ax is ax_rate else None)
        for r in rounds:
            ax.axvline(r["t-ms"], color="0.4", linewidth=0.6, linestyle=":")
        if freeze and resumed:
            ax.axvspan(freeze[0], resumed[0], color="tab:orange", alpha=0.4,
                       label="downtime %.1f ms" % doc.get("downtime", 0) if ax is ax_rate else None)
    for r in rounds:
        ax_rate.annotate("r%d" % r["round"], (r["t-ms"], 1), xycoords=("data", "axes fraction"), fontsize=7,
                         va="top", ha="left")
    ax_rate.legend(loc="upper right", fontsize=8)
    ax_rate.set_title("%s: %d samples, %.1f MiB on the wire, total %.1f ms, downtime %.1f ms" % (
        doc.get("config", {}).get("name", name), len(samples), samples[-1]["bytes"] / 2**20,
        doc.get("total-time", 0), doc.get("downtime", 0)))
    return save(fig, out, "timeline-" + name)


def rounds_figure(out, name, doc):
    rounds = doc.get("rounds") or []
    if not rounds:
        return None
    starts, t = [], 0.0
    for r in rounds:
        starts.append(t)
        t += r["duration"]
    widths = [max(r["duration"], 1e-3) for r in rounds]
    fig, (ax_bytes, ax_pages) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    ax_bytes.bar(starts, [r["bytes"] / 2**20 for r in rounds], width=widths, align="edge",
                 color="tab:blue", edgecolor="black", label="bytes sent (MiB)")
    ax_bytes.set_ylabel("MiB sent per round")
    ax_pages.bar(starts, [r["pages"] for r in rounds], width=widths, align="edge", color="tab:green",
                 edgecolor="black", label="pages sent")
    ax_pages.set_ylabel("pages sent per round")
    ax_rate = ax_pages.twinx()
    rates = [r["dirty-rate"] for r in rounds]
    ax_rate.step(starts + [t], rates + rates[-1:], where="post", color="tab:red", linewidth=2,
                 label="dirty rate (pages/s)")
    ax_rate.set_ylabel("pages dirtied per second", color="tab:red")
    downtime = doc.get("downtime", 0)
    for ax in (ax_bytes, ax_pages):
        ax.axvspan(t, t + downtime, color="tab:orange", alpha=0.4,
                   label="downtime %.1f ms" % downtime if ax is ax_bytes else None)
    ax_pages.set_xlabel("ms since round 0 started")
    ax_bytes.legend(loc="upper right")
    ax_bytes.set_title("%s: %d rounds, total %.1f ms, downtime %.1f ms" % (
        doc.get("config", {}).get("name", name), len(rounds), doc.get("total-time", 0), downtime))
    return save(fig, out, "rounds-" + name)


def sweep_points(summary):
    """The completed runs of a sweep, one entry per point in sweep order: with
    repeats (livemig run --repeat), each figure is the median of the point's runs."""
    runs = {}
    for r in summary.get("runs", []):
        if r.get("status") == "completed":
            runs.setdefault(r["point"], []).append(r)
    fields = ("total-time", "downtime", "model-total-time", "model-downtime")
    return [dict({"point": label}, **{f: statistics.median(r.get(f, 0) for r in rs) for f in fields})
            for label, rs in runs.items()]


def point_keys(label):
    """A point's label (key=value,key=value...) as an ordered dict."""
    return dict(kv.split("=", 1) for kv in label.split(",") if "=" in kv)


def sweep_panels(out, name, summary, points, varying):
    """Points that vary in two keys or more: the innermost key on the x axis,
    one line per value of the next, one panel per value of the others (e.g.
    per link rate: total time by content, a line per policy), the model's
    prediction dashed beside each line."""
    xkey, linekey, panelkeys = varying[-1], varying[-2], varying[:-2]
    keyed = [(point_keys(p["point"]), p) for p in points]
    ordered = lambda key: list(dict.fromkeys(k[key] for k, _ in keyed))
    xvals, lines = ordered(xkey), ordered(linekey)
    panels = list(dict.fromkeys(tuple(k[pk] for pk in panelkeys) for k, _ in keyed))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False, sharey=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, (ax, panel) in enumerate(zip(axes[0], panels)):
        for i, line in enumerate(lines):
            at = {k[xkey]: p for k, p in keyed
                  if k[linekey] == line and tuple(k[pk] for pk in panelkeys) == panel}
            xs = [j for j, v in enumerate(xvals) if v in at]
            color = colors[i % len(colors)]
            ax.plot(xs, [at[xvals[j]]["total-time"] for j in xs], "o-", color=color, label=line,
                    gid="sweep-total-%d-%d" % (n, i))
            ax.plot(xs, [at[xvals[j]].get("model-total-time", 0) for j in xs], "--", color=color, alpha=0.5)
        ax.set_xticks(range(len(xvals)))
        ax.set_xticklabels(xvals, rotation=30, ha="right", fontsize=8)
        ax.set_xlabel(xkey)
        ax.set_title(", ".join("%s=%s" % kv for kv in zip(panelkeys, panel)) or summary.get("name", name), fontsize=9)
    axes[0][0].set_ylabel("total time, ms (dashed: the model)")
    axes[0][-1].legend(title=linekey, fontsize=8)
    fig.suptitle("sweep %s: total time measured beside the model's prediction" % summary.get("name", name))
    return save(fig, out, "sweep-" + name)


def sweep_figure(out, name, summary):
    points = sweep_points(summary)
    if not points:
        return None
    labels = [r["point"] for r in points]
    keyed = [point_keys(l) for l in labels]
    varying = [k for k in keyed[0] if len({kv.get(k) for kv in keyed}) > 1]
    if len(varying) >= 2 and all(set(kv) == set(keyed[0]) for kv in keyed):
        return sweep_panels(out, name, summary, points, varying)
    # One swept key with numeric values: a numeric axis; otherwise one tick per point.
    keys = {k for kv in keyed for k in kv}
    only = len(keys) == 1 and all(len(kv) == 1 for kv in keyed)
    try:
        xs = [float(kv[next(iter(keys))]) for kv in keyed] if only else None
    except ValueError:
        xs = None
    x = xs if xs else list(range(len(points)))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for field, model, color in (("total-time", "model-total-time", "tab:blue"),
                                ("downtime", "model-downtime", "tab:orange")):
        ax.plot(x, [p[field] for p in points], "o-", color=color, label="%s measured" % field)
        ax.plot(x, [p.get(model, 0) for p in points], "s--", color=color, alpha=0.6,
                label="%s model" % field)
    ax.set_ylabel("ms")
    if xs:
        ax.set_xlabel(keys.pop())
    else:
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_title("sweep %s: measured beside the model's prediction" % summary.get("name", name))
    ax.legend()
    return save(fig, out, "sweep-" + name)


def group_figure(out, name, doc):
    """The link's bytes per VM per bucket (each line's gid: group-link-vm<N>)
    and each VM's course on the group's clock."""
    link = doc.get("link", {})
    series = link.get("series") or []
    vms = doc.get("vm-figures") or []
    if not vms:
        return None
    bucket = link.get("bucket-ms", 100) or 100
    fig, (ax_link, ax_vms) = plt.subplots(2, 1, figsize=(8, 3.5 + 0.4 * len(vms)), sharex=True,
                                          gridspec_kw={"height_ratios": [3, 1 + 0.3 * len(vms)]})
    for i, bytes_per_bucket in enumerate(series):
        ax_link.plot([bucket * k for k in range(len(bytes_per_bucket))],
                     [b / (bucket / 1e3) / 1e6 for b in bytes_per_bucket], "-", marker=".", gid="group-link-vm%d" % (i + 1),
                     label="VM %d" % (i + 1))
    ax_link.set_ylabel("MB/s granted on the link")
    if series:
        ax_link.legend(loc="upper right", fontsize=8)
    for i, v in enumerate(vms):
        y = len(vms) - i
        if not v.get("started"):
            continue
        spans = [(v["start"], v.get("sending") or v["start"], "0.8", "waiting for its destination")]
        if v.get("status") == "completed":
            spans.append((v.get("sending") or v["start"], v["resumed"], "tab:blue", "migrating"))
            spans.append((v["resumed"], v.get("completed", v["resumed"]), "tab:green", "pages after the resume"))
            spans.append((v["resumed"] - v["downtime"], v["resumed"], "tab:orange", "downtime"))
        for a, b, color, what in spans:
            if b > a:
                ax_vms.barh(y, b - a, left=a, height=0.6, color=color, label=what if i == 0 else None)
        ax_vms.annotate("%s %s" % (v.get("mode", ""), v.get("status", "")), (v["start"], y), fontsize=7, va="center")
    ax_vms.set_yticks([len(vms) - i for i in range(len(vms))])
    ax_vms.set_yticklabels(["VM %d" % v["vm"] for v in vms])
    ax_vms.set_xlabel("ms since the group started (link sampled every %g ms)" % bucket)
    handles, labels = ax_vms.get_legend_handles_labels()
    if handles:
        ax_vms.legend(fontsize=7, loc="lower right")
    model = doc.get("model")
    ax_link.set_title("%s: %s, %d VMs, %s; total %.1f ms, downtime %.1f ms%s" % (
        doc.get("name", name), doc.get("strategy"), doc.get("vm-count", len(vms)), doc.get("status"),
        doc.get("total-time", 0), doc.get("downtime", 0),
        " (model %.1f ms, %.1f ms)" % (model["total-time"], model["downtime"]) if model else ""), fontsize=9)
    return save(fig, out, "group-" + name)


def group_table(doc):
    head = ("VM", "mode", "status", "weight", "start", "sending", "resumed", "completed", "downtime", "link MiB")
    rows = ["<table><tr>%s</tr>" % "".join("<th>%s</th>" % h for h in head)]
    for v in doc.get("vm-figures") or []:
        cells = (v["vm"], v.get("mode", ""), v.get("status", "") + (": " + v["error"] if v.get("error") else ""),
                 v.get("weight"), "%.1f" % v.get("start", 0), "%.1f" % v.get("sending", 0),
                 "%.1f" % v.get("resumed", 0), "%.1f" % v.get("completed", v.get("resumed", 0)),
                 "%.1f" % v.get("downtime", 0), "%.1f" % (v.get("link-bytes", 0) / 2**20))
        rows.append("<tr>%s</tr>" % "".join("<td>%s</td>" % html.escape(str(c)) for c in cells))
    rows.append("</table>")
    why = "" if doc.get("model") else " No model: %s." % html.escape(doc.get("no-model", "none in the document"))
    return "<p>times in ms since the group started.%s</p>\n%s" % (why, "\n".join(rows))


def fault_latency(out, runs):
    rows = []
    for name, doc in runs:
        lat = doc.get("postcopy", {}).get("fault-latency-us", {})
        if lat.get("count"):
            rows.append((name, lat))
    if not rows:
        return None, []
    fig, ax = plt.subplots(figsize=(8, 4.5))
    keys = ["p50", "p90", "p99", "max"]
    width = 0.8 / len(rows)
    for i, (name, lat) in enumerate(rows):
        ax.bar([k + i * width for k in range(len(keys))], [lat[k] for k in keys], width=width,
               label="%s (%d faults)" % (name, lat["count"]))
    ax.set_xticks([k + width * (len(rows) - 1) / 2 for k in range(len(keys))])
    ax.set_xticklabels(keys)
    ax.set_yscale("log")
    ax.set_ylabel("fault latency (us)")
    ax.set_title("post-copy fault latency by percentile")
    ax.legend(fontsize=8)
    return save(fig, out, "fault-latency"), rows


def compare_table(livemig, base, candidate):
    r = subprocess.run([livemig, "compare", base, candidate, "--format", "json"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    if r.returncode not in (0, 1):
        return "<p>livemig compare %s %s failed: %s</p>" % (html.escape(base), html.escape(candidate),
                                                            html.escape(r.stderr.strip()))
    doc = json.loads(r.stdout)
    head = ("scenario", "metric", "better", "base median (n)", "candidate median (n)", "change",
            "95% interval", "threshold", "verdict")
    lines = ["<p>%s against %s. %s.</p>" % (html.escape(candidate), html.escape(base), html.escape(doc["method"])),
             "<table><tr>%s</tr>" % "".join("<th>%s</th>" % h for h in head)]
    for row in doc["rows"]:
        lo, hi = row["interval"]
        cells = (row["scenario"], row["metric"], row["better"],
                 "%.4g (%d)" % (row["base-median"], row["base-n"]),
                 "%.4g (%d)" % (row["candidate-median"], row["candidate-n"]),
                 "%+.1f%%" % (row["change"] * 100), "[%+.1f%%, %+.1f%%]" % (lo * 100, hi * 100),
                 "%.1f%%" % (row["threshold"] * 100), row["verdict"])
        lines.append('<tr class="%s">%s</tr>' % (row["verdict"], "".join("<td>%s</td>" % html.escape(str(c))
                                                                          for c in cells)))
    lines.append("</table>")
    return "\n".join(lines)


def figure_html(paths, caption):
    return ('<figure><a href="%s"><img src="%s" alt="%s"></a><figcaption>%s (<a href="%s">SVG</a>)'
            "</figcaption></figure>" % (paths["svg"], paths["png"], html.escape(caption), html.escape(caption),
                                         paths["svg"]))


def run_figures(job):
    out, name, doc = job
    return timeline(out, name, doc), rounds_figure(out, name, doc)


def draw_runs(out, named_runs):
    """Each run's timeline and rounds figures, in order. A sweep's hundreds
    of runs are drawn by one process per CPU this process may use (240 runs
    took 168 s in one)."""
    jobs = [(out, name, doc) for name, doc in named_runs]
    cpus = len(os.sched_getaffinity(0))
    if cpus < 2 or len(jobs) < 8:
        return [run_figures(j) for j in jobs]
    with concurrent.futures.ProcessPoolExecutor(max_workers=cpus) as pool:
        return list(pool.map(run_figures, jobs, chunksize=4))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--livemig", default="livemig")
    p.add_argument("--base", action="append", default=[])
    a = p.parse_args()
    os.makedirs(os.path.join(a.out, "figures"), exist_ok=True)
    runs, sweeps, groups = collect(a.results)
    if not runs and not sweeps and not groups:
        sys.exit("livemig report: no result documents (%s) in %s" % (" or ".join(RESULTS + (GROUP,)),
                                                                     ", ".join(a.results)))

    sections = []
    names = {}
    named_runs = []
    for path, doc in runs:
        base = slug(os.path.relpath(path, os.path.commonpath([os.path.abspath(x) for x, _ in runs]))
                    if len(runs) > 1 else os.path.basename(path))
        base = re.sub(r"\.json$", "", base)
        names[base] = names.get(base, 0) + 1
        named_runs.append((base if names[base] == 1 else "%s-%d" % (base, names[base]), doc))

    comparisons = []
    for b in a.base:
        for c in a.results:
            comparisons.append((b, c))
    for r in a.results:
        if os.path.isdir(os.path.join(r, "base")) and os.path.isdir(os.path.join(r, "candidate")):
            comparisons.append((os.path.join(r, "base"), os.path.join(r, "candidate")))
    if comparisons:
        sections.append("<h2>Comparison</h2>")
        for b, c in comparisons:
            sections.append(compare_table(a.livemig, b, c))

    if sweeps:
        sections.append("<h2>Sweeps</h2>")
        for d, summary in sweeps:
            paths = sweep_figure(a.out, slug(summary.get("name", os.path.basename(d))), summary)
            if paths:
                sections.append(figure_html(paths, "sweep %s (%d points, %d runs each: medians)" % (
                    summary.get("name"), len(sweep_points(summary)), summary.get("repeats", 1))))
    if groups:
        sections.append("<h2>Groups</h2>")
        for path, doc in groups:
            name = slug(re.sub(r"\.json$", "", os.path.basename(path)))
            paths = group_figure(a.out, name, doc)
            if paths:
                sections.append(figure_html(paths, "group %s: %s, %d VMs" % (
                    doc.get("name", name), doc.get("strategy"), doc.get("vm-count", 0))))
            sections.append(group_table(doc))
    fig, rows = fault_latency(a.out, named_runs)
    if fig:
        sections.append("<h2>Post-copy fault latency</h2>")
        sections.append(figure_html(fig, "fault-latency percentiles of %d post-copy run(s)" % len(rows)))
    sections.append("<h2>Runs</h2>")
    for (name, doc), (timeline_paths, rounds_paths) in zip(named_runs, draw_runs(a.out, named_runs)):
        summary = "%s: %s, total %.1f ms, downtime %.1f ms, %.1f MiB on the wire, %s" % (
            name, doc.get("status"), doc.get("total-time", 0), doc.get("downtime", 0),
            doc.get("ram", {}).get("transferred", 0) / 2**20, doc.get("stop-reason", ""))
        figures = [(timeline_paths, "timeline: " + summary), (rounds_paths, "rounds: " + summary)]
        drawn = [figure_html(paths, caption) for paths, caption in figures if paths]
        sections.append("\n".join(drawn) if drawn else "<p>%s (no timeline, no rounds)</p>" % html.escape(summary))

    page = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>livemig report</title>
<style>body{font-family:sans-serif;max-width:60em;margin:auto}img{max-width:100%%}
table{border-collapse:collapse;font-size:90%%}td,th{border:1px solid #ccc;padding:2px 6px}
tr.regressed{background:#fcc}tr.improved{background:#cfc}tr.noisy{color:#777}</style></head>
<body data-figures="%d">
<h1>livemig report</h1>
<p>%d result document(s), %d sweep(s), %d group(s), from %s.</p>
%s
<script>
// How many figures the browser could draw: a headless check reads it.
window.addEventListener("load", function () {
  var imgs = document.querySelectorAll("img"), drawn = 0;
  for (var i = 0; i < imgs.length; i++) if (imgs[i].complete && imgs[i].naturalWidth > 0) drawn++;
  document.body.setAttribute("data-figures-drawn", drawn);
});
</script>
</body></html>
""" % (sum(s.count("<img ") for s in sections), len(runs), len(sweeps), len(groups),
       html.escape(", ".join(a.results)), "\n".join(sections))
    index = os.path.join(a.out, "index.html")
    with open(index, "w") as f:
        f.write(page)
    print(index)


if __name__ == "__main__":
    main()
