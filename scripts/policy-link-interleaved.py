#!/usr/bin/env python3
"""A sweep file's points with the values of its policy key run back to back,
in alternating order per pass (pass -> the other keys, sorted as the runner
sorts them -> policy). `livemig run` of the sweep file runs a policy's cells
together, minutes apart from the other policies', and on this host the
machine drifted by up to 1.9x over a sweep's half hour (docs/benchmarks.md,
"Sweep E"). Run from the project's root as root (the rig's namespaces),
e.g. in a memory cgroup:

    python3 scripts/policy-link-interleaved.py results/pl-i 3 [SWEEP_FILE]
    python3 scripts/policy-link-table.py results/pl-i

SWEEP_FILE defaults to configs/sweeps/policy-link.toml.
"""
import itertools, json, os, subprocess, sys, tomllib

INNER = "migration.policy"


def toml_value(v):
    return ("true" if v else "false") if isinstance(v, bool) else json.dumps(v)


if len(sys.argv) not in (3, 4):
    sys.exit("usage: policy-link-interleaved.py OUT_DIR PASSES [SWEEP_FILE]")
out, passes = sys.argv[1], int(sys.argv[2])
sweep_file = sys.argv[3] if len(sys.argv) == 4 else "configs/sweeps/policy-link.toml"
with open(sweep_file, "rb") as f:
    sweep = tomllib.load(f)
base = os.path.normpath(os.path.join(os.path.dirname(sweep_file), sweep["base"]))
axes = sweep["sweep"]
outer = sorted(k for k in axes if k != INNER)
os.makedirs(out, exist_ok=True)
for p in range(1, passes + 1):
    for values in itertools.product(*(axes[k] for k in outer)):
        inner = axes[INNER] if p % 2 else list(reversed(axes[INNER]))
        for pol in inner:
            point = list(zip(outer, values)) + [(INNER, pol)]
            name = "-".join(str(v).replace(":", "_") for _, v in point if not isinstance(v, bool))
            f = os.path.join(out, "%s-%d.json" % (name, p))
            cmd = ["build/harness/livemig", "run", base, "--quiet", "--out", f]
            for k, v in point:
                cmd += ["--set", "%s=%s" % (k, toml_value(v))]
            r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600)
            t = json.load(open(f))["total-time"] if os.path.exists(f) else None
            print(p, name, r.returncode, t, flush=True)
