#!/usr/bin/env python3
"""The policy x link sweep (configs/sweeps/policy-link.toml) with the five
policies of each cell run back to back, in alternating order per pass
(pass -> rate -> content -> policy). `livemig run` of the sweep file runs a
policy's cells together, minutes apart from the other policies', and on
this host the machine drifted by up to 1.9x over a sweep's half hour
(docs/benchmarks.md, "Sweep E"). Run from the project's root as root (the
rig's namespaces), e.g. in a memory cgroup:

    python3 scripts/policy-link-interleaved.py results/pl-i 3
    python3 scripts/policy-link-table.py results/pl-i
"""
import json, os, subprocess, sys
if len(sys.argv) != 3:
    sys.exit("usage: policy-link-interleaved.py OUT_DIR PASSES")
out = sys.argv[1]; passes = int(sys.argv[2])
os.makedirs(out, exist_ok=True)
for p in range(1, passes + 1):
    for rate in ["1gbit", "2.5gbit", "10gbit", "unlimited"]:
        for content in ["mixed", "text", "ints", "random"]:
            pols = ["fixed:raw", "fixed:lz4", "fixed:zstd:1", "cbc", "adaptive"]
            if p % 2 == 0: pols.reverse()
            for pol in pols:
                f = os.path.join(out, "%s-%s-%s-%d.json" % (rate, content, pol.replace(":", "_"), p))
                cmd = ["build/harness/livemig", "run", "configs/default.toml", "--quiet", "--out", f,
                       "--set", "link.namespaces=true", "--set", 'link.rate="%s"' % rate,
                       "--set", 'migration.policy="%s"' % pol, "--set", 'workload.content="%s"' % content,
                       "--set", "workload.prefill=true"]
                r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600)
                t = json.load(open(f))["total-time"] if os.path.exists(f) else None
                print(p, rate, content, pol, r.returncode, t, flush=True)
