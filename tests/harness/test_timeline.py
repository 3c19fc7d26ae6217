#!/usr/bin/env python3
"""A real migration's result document holds its timeline (README, "The
result document"): `livemig run` of tests/harness/gate-small.toml in the mode
given, in a memory cgroup, then the document is checked:

  - the samples are ~100 ms apart (median gap 90-115 ms, none over 600 ms:
    the sampler is one thread on a loaded 2-core machine) and in time order;
  - the bytes on the wire only grow, the last sample's equal ram.transferred
    (within 0.1%), and the per-sample rates add up to them;
  - pages left end at 0, and the phases seen are the mode's (pre-copy
    rounds; stop-and-copy; post-copy) in the order the source passes them;
  - the downtime events are as far apart as the document's downtime;
  - the dirty rate of each sample is one the rounds measured (pre-copy: the
    guest writes during the run).

  test_timeline.py --livemig BUILD/harness/livemig --scenario tests/harness/gate-small.toml --mode precopy
"""
import argparse, json, os, statistics, sys, tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from memcg import MemoryCgroup, Skip  # noqa: E402


def fail(msg):
    sys.exit("FAIL: " + msg)


def check(doc, mode):
    if doc.get("schema") != "livemig-result/2":
        fail("schema %s" % doc.get("schema"))
    if doc.get("status") != "completed":
        fail("the run failed: %s" % doc.get("error"))
    samples, events = doc["timeline"], doc["timeline-events"]
    interval = doc["timeline-interval"]
    print("%d samples, %d events, interval %g ms" % (len(samples), len(events), interval))
    for s in samples:
        print("  t %8.1f  %-13s r%d  bytes %10d  %8.1f Mbit/s  sent %6d  left %6d  dirty %8.0f/s" % (
            s["t-ms"], s["phase"], s["round"], s["bytes"], s["mbps"], s["pages-sent"], s["pages-left"],
            s["dirty-rate"]))
    for e in events:
        print("  event t %8.1f  %s" % (e["t-ms"], " ".join("%s=%s" % (k, v) for k, v in e.items() if k != "t-ms")))
    for r in doc["rounds"]:
        print("  round %d: %d pages, %.1f ms, dirty rate %.0f/s" % (r["round"], r["pages"], r["duration"],
                                                                    r["dirty-rate"]))
    if interval != 100 or len(samples) < 5:
        fail("%d samples at %g ms" % (len(samples), interval))

    t = [s["t-ms"] for s in samples]
    gaps = [b - a for a, b in zip(t, t[1:-1])]  # the last sample is taken at the end, off the beat
    if any(g <= 0 for g in gaps) or t[-1] < t[-2]:
        fail("samples out of time order: %s" % t)
    median = statistics.median(gaps)
    print("gaps: median %.1f ms, min %.1f, max %.1f" % (median, min(gaps), max(gaps)))
    if not 90 <= median <= 115 or max(gaps) > 600:
        fail("samples not ~100 ms apart: median gap %.1f ms, longest %.1f ms" % (median, max(gaps)))

    transferred = doc["ram"]["transferred"]
    b = [s["bytes"] for s in samples]
    if any(y < x for x, y in zip(b, b[1:])):
        fail("bytes on the wire went down: %s" % b)
    print("timeline bytes %d, ram.transferred %d" % (b[-1], transferred))
    if transferred == 0 or abs(b[-1] - transferred) > 0.001 * transferred:
        fail("the timeline's bytes %d are not ram.transferred %d" % (b[-1], transferred))
    integrated = sum(s["mbps"] * 1e6 / 8 * (y - x) * 1e-3 for s, x, y in zip(samples[1:], t, t[1:]))
    integrated += samples[0]["mbps"] * 1e6 / 8 * t[0] * 1e-3
    if abs(integrated - b[-1]) > 0.01 * b[-1]:
        fail("the samples' rates add up to %.0f bytes, not %d" % (integrated, b[-1]))
    if max(s["mbps"] for s in samples) <= 0:
        fail("no sample saw the wire move")

    if samples[-1]["pages-left"] != 0:
        fail("%d pages left at the end" % samples[-1]["pages-left"])
    phases = [e["phase"] for e in events if e["event"] == "phase"]
    wanted = {"precopy": ["setup", "precopy", "stop-and-copy", "commit", "verify", "released"],
              "postcopy": ["setup", "stop-and-copy", "commit", "postcopy", "verify", "released"],
              "hybrid": ["setup", "precopy", "stop-and-copy", "commit", "postcopy", "verify", "released"]}[mode]
    if phases != wanted:
        fail("phases %s, expected %s" % (phases, wanted))
    sending = {"precopy": "precopy", "postcopy": "postcopy", "hybrid": "precopy"}[mode]
    if not any(s["phase"] == sending and s["mbps"] > 0 for s in samples):
        fail("no sample in %s with bytes moving" % sending)
    rounds = [e for e in events if e["event"] == "round"]
    # A round event per entry of rounds[], numbered from 0 (convergence may stop after
    # round 0; a pre-copy run's stop-and-copy round is the last).
    numbers = [r["round"] for r in rounds]
    if mode != "postcopy" and (not numbers or numbers != list(range(len(doc["rounds"])))):
        fail("round events %s for %d rounds" % (numbers, len(doc["rounds"])))
    freeze = [e["t-ms"] for e in events if e["event"] == "freeze"]
    resumed = [e["t-ms"] for e in events if e["event"] == "resumed"]
    if len(freeze) != 1 or len(resumed) != 1 or abs(resumed[0] - freeze[0] - doc["downtime"]) > 0.01:
        fail("freeze %s, resumed %s for a downtime of %.3f ms" % (freeze, resumed, doc["downtime"]))

    if mode == "precopy":
        measured = [r["dirty-rate"] for r in doc["rounds"] if r["dirty-rate"] > 0]
        seen = [s["dirty-rate"] for s in samples if s["dirty-rate"] > 0]
        if not seen:
            fail("a guest writing during pre-copy, and no sample with a dirty rate")
        # The rounds' rates, or the last interval's (from the last collect to the freeze), which no round records.
        allowed = measured + [seen[-1]]
        for rate in seen:
            if not any(abs(rate - m) <= 1e-6 * m for m in allowed):
                fail("dirty rate %.1f is none the rounds measured (%s)" % (rate, measured))
        # (The tracker starts at the end of setup: a setup sample may have one.)
        if any(s["dirty-rate"] > 0 for s in samples if s["phase"] in ("commit", "verify", "released")):
            fail("a dirty rate while nothing was tracked")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--livemig", required=True)
    p.add_argument("--scenario", required=True)
    p.add_argument("--mode", required=True, choices=["precopy", "postcopy", "hybrid"])
    a = p.parse_args()
    try:
        cg = MemoryCgroup("lm-timeline", 3 << 29)
    except Skip as e:
        print("SKIP:", e)
        sys.exit(77)
    with cg, tempfile.TemporaryDirectory(prefix="lm-timeline-") as tmp:
        out = os.path.join(tmp, "new", "result.json")  # livemig run makes the directory
        # The guest writes 4000 pages/s during the run: rounds after round 0 and a dirty rate.
        # 512 MiB, so that even a quiet machine's run lasts several samples (64 MiB took
        # ~390 ms with its setup, 4 samples; 256 MiB, after the engine sped up, 370 ms).
        cmd = [a.livemig, "run", os.path.abspath(a.scenario), "--quiet", "--out", out,
               "--set", 'migration.mode="%s"' % a.mode, "--set", "workload.rate=4000",
               "--set", 'workload.ram="512M"']
        cg.run(cmd, timeout=80, cwd=tmp)
        check(json.load(open(out)), a.mode)
    print("ok")


if __name__ == "__main__":
    main()
