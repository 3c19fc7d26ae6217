#!/usr/bin/env python3
"""livemig perf-gate on one build against itself, on a small scenario:

  planted  the candidate runs with LIVEMIG_TEST_SEND_SLOWDOWN_PCT (each sender
           burns that share of every batch's CPU time more): the send path's
           CPU per page must be 'regressed' and the gate must exit 1
  same     two runs of the same binary: nothing 'regressed', exit 0
  noisy    2 repetitions: every verdict 'noisy', exit 0

  test_perf_gate.py --livemig BUILD/harness/livemig --build BUILD \
      --scenario tests/harness/gate-small.toml --case planted
"""
import argparse, json, os, subprocess, sys, tempfile


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--livemig", required=True)
    p.add_argument("--build", required=True, help="the build directory both sides use")
    p.add_argument("--scenario", required=True)
    p.add_argument("--case", required=True, choices=["planted", "same", "noisy"])
    p.add_argument("--slowdown", default="20", help="percent, for 'planted' (see tests/harness/meson.build)")
    p.add_argument("--repeat", type=int, default=8)
    p.add_argument("--timeout", type=int, default=170)
    a = p.parse_args()

    repeat = 2 if a.case == "noisy" else a.repeat
    with tempfile.TemporaryDirectory(prefix="lm-perf-gate-") as out:
        cmd = [a.livemig, "perf-gate", "--base-build", a.build, "--candidate-build", a.build,
               "--scenarios", a.scenario, "--repeat", str(repeat), "--format", "json", "--out", out,
               "--run-timeout", "30", "--set", 'migration.policy="fixed:lz4"']
        if a.case == "planted":
            cmd += ["--candidate-env", "LIVEMIG_TEST_SEND_SLOWDOWN_PCT=" + a.slowdown]
        print(" ".join(cmd), flush=True)
        r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=a.timeout)
        print(r.stdout)
        doc = json.loads(r.stdout)
        rows = {row["metric"]: row for row in doc["rows"]}
        for name in ("total-time", "throughput", "send-cpu-per-page"):
            row = rows[name]
            print("%-17s base %.4g candidate %.4g change %+.1f%% [%+.1f%%, %+.1f%%] %s" % (
                name, row["base-median"], row["candidate-median"], row["change"] * 100,
                row["interval"][0] * 100, row["interval"][1] * 100, row["verdict"]))
        failed = doc["base"]["failed"] + doc["candidate"]["failed"]
        if failed:
            sys.exit("failed runs: %s" % failed)
        for side in ("base", "candidate"):
            if rows["total-time"]["%s-n" % side] != repeat:
                sys.exit("%s: %d runs counted, %d expected" % (side, rows["total-time"]["%s-n" % side], repeat))
        verdicts = {row["verdict"] for row in doc["rows"]}
        if a.case == "planted":
            if r.returncode != 1 or rows["send-cpu-per-page"]["verdict"] != "regressed":
                sys.exit("the planted %s%% slowdown was not caught (exit %d)" % (a.slowdown, r.returncode))
        elif a.case == "same":
            if r.returncode != 0 or "regressed" in verdicts:
                sys.exit("the same binary was flagged (exit %d)" % r.returncode)
        else:
            if r.returncode != 0 or verdicts != {"noisy"}:
                sys.exit("a 2-repetition comparison gave %s (exit %d)" % (sorted(verdicts), r.returncode))
    print("ok")


if __name__ == "__main__":
    main()
