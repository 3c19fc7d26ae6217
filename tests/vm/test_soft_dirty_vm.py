#!/usr/bin/env python3
"""soft-dirty proven on a kernel that has it (issue 15): boots Debian's stock
cloud kernel with CONFIG_MEM_SOFT_DIRTY=y under QEMU (TCG unless a guest boots on /dev/kvm),
from an initramfs holding busybox, the dirtytrack test binaries, dt_target,
livemig-guest and livemig with the shared libraries ldd names. Inside the VM:
`livemig check --json` must call soft-dirty available, and the tracker tests
(dt_target scripts) and the guest ground-truth test (write log, churn,
1 and 4 writer threads, 0 misses) must pass for soft-dirty, exactly as they
do for uffd-wp on the host, and for uffd-wp in the VM too. Then a pre-copy
migration between two processes per tracker (livemig-guest to `livemig
dest` on loopback, `livemig source --tracker soft-dirty` / `uffd-wp`) must
complete with that tracker, find dirty pages in every round after the first
and verify.

Debian 12's linux-image-cloud-amd64 is 6.1, older than PAGEMAP_SCAN (6.7),
which every tracker here scans with; so the newest linux-image-6.*-cloud-amd64
package of Debian 12 (bookworm-security carries 6.12) is taken, downloaded
with apt-get download and unpacked into ~/.cache/livemig-vm (never
installed). QEMU runs in a memory cgroup and dies with this script. Exits 77
with the reason when it cannot run here.
"""
import argparse, json, os, re, shutil, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from qemu_vm import SKIP, Cgroup, Procs, Skip, choose_accel, guest_kernel, log, pack_initramfs, sh  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "livemig-vm")
VM_MIB = 1024

# Each step prints LMSTEP <name> <exit code>; the host reads them off the
# serial console. gtest prints its own summary lines.
INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
ip link set lo up
echo madvise > /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null
echo "LMBOOTED $(uname -r)"
export PATH=/bin GTEST_COLOR=no LD_LIBRARY_PATH=/lib LM_DT_TARGET=/bin/dt_target LM_GUEST_BIN=/bin/livemig-guest LM_LIVEMIG_BIN=/bin/livemig
step() { name=$1; shift; echo "LMBEGIN $name"; "$@"; echo "LMSTEP $name $?"; }
# migrate TRACKER: a short pre-copy migration between two processes, a
# livemig-guest writing 2000 pages/s into 32 MiB and a livemig dest on
# loopback that resumes it; 4 pre-copy rounds (a downtime target no round
# meets), so the tracker collects while the guest writes. verify compares
# the destination's copy with the frozen source: a page the tracker missed
# is a stale page there.
migrate() {
  d=/tmp/migrate-$1; mkdir -p $d
  timeout 200 livemig-guest --ram 32M --rate 2000 --control $d/guest.sock > $d/guest.out 2>&1 &
  timeout 200 livemig dest --listen tcp:127.0.0.1:0 --exit-after > $d/dest.out 2>&1 &
  dest=$!
  for i in $(seq 300); do grep -q READY $d/guest.out && grep -q LISTENING $d/dest.out && break; sleep 0.2; done
  for kv in $(grep READY $d/guest.out); do
    case $kv in pid=*) pid=${kv#pid=};; ram=*) addr=${kv#ram=};; size=*) size=${kv#size=};; esac
  done
  timeout 150 livemig source --pid "$pid" --to "$(grep LISTENING $d/dest.out | cut -d' ' -f2)" \
    --ram "$addr:$size" --tracker $1 --policy fixed:raw --max-rounds 4 --downtime-ms 1 --out $d/result.json
  rc=$?
  wait $dest || rc=$?
  cat $d/dest.out
  echo "LMMIGRATE $1 $(tr -d '\n' < $d/result.json)"
  return $rc
}
step check sh -c '/bin/livemig check --json > /tmp/check.json; rc=$?; echo "LMCHECK $(tr -d "\\n" < /tmp/check.json)"; exit $rc'
step trackers /bin/test_dt_trackers --gtest_filter='*soft_dirty:*uffd_wp:TrackerSelection.*'
step ground-truth /bin/test_dt_guest_ground_truth --gtest_filter='*soft_dirty*:*uffd_wp_threads4_page'
step migrate-soft-dirty migrate soft-dirty
step migrate-uffd-wp migrate uffd-wp
# guest-rate: the guest's rate before and during pre-copy under each
# tracker, alternating (uffd-wp, soft-dirty, uffd-wp, soft-dirty); the
# engine on CPU 0, the guest on CPU 1 (/etc/guest-rate.toml).
guest_rate() {
  rc=0
  for i in 1 2; do for t in uffd-wp soft-dirty; do
    taskset -c 0 timeout 300 livemig run /etc/guest-rate.toml --set "migration.tracker=\\"$t\\"" \
      --out /tmp/rate-$t-$i.json --quiet > /tmp/rate-$t-$i.out 2>&1 || { rc=1; cat /tmp/rate-$t-$i.out; }
    echo "LMRATE $t $i $(tr -d '\n' < /tmp/rate-$t-$i.json 2>/dev/null)"
  done; done
  return $rc
}
if grep -q lm.bench /proc/cmdline; then
  # the collect's cost at 128, 256 and 512 MiB (its slope with RAM size)
  step bench env LM_BENCH_SIZES=128,256,512 /bin/dirtytrack_bench \
    --benchmark_filter='BM_Collect/(uffd_wp|soft_dirty)/[0-9]+/(10|100|1000)/' \
    --benchmark_repetitions=3 --benchmark_report_aggregates_only=true --benchmark_format=json \
    --benchmark_out=/tmp/bench.json --benchmark_out_format=json > /dev/null
  echo "LMBENCH $(tr -d '\n' < /tmp/bench.json)"
  step guest-rate guest_rate
fi
echo LMDONE
poweroff -f
"""


def pick_kernel_package():
    out = sh(["apt-cache", "search", "--names-only", r"^linux-image-6\.[0-9]+\.[0-9]+.*-cloud-amd64-unsigned$"], 60)
    best = None
    for line in out.splitlines():
        name = line.split(" ", 1)[0]
        m = re.match(r"linux-image-6\.(\d+)\.(\d+)", name)
        if m and int(m.group(1)) >= 7:
            key = (int(m.group(1)), int(m.group(2)))
            if best is None or key > best[0]:
                best = (key, name)
    if not best:
        raise Skip("no Debian kernel package >= 6.7 (PAGEMAP_SCAN) in apt's lists")
    return best[1]


def libraries(binary):
    """The shared objects `binary` loads, by the paths ldd resolves."""
    out = subprocess.run(["ldd", binary], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"(/\S+) \(0x", line)
        if m:
            libs.append(m.group(1))
    return libs


def initramfs(work, binaries, files=()):
    """busybox, `binaries` in /bin with every library they load, and
    `files` (pairs of host path, path in the image)."""
    busybox = shutil.which("busybox")
    if not busybox or not shutil.which("cpio"):
        raise Skip("needs busybox (busybox-static) and cpio: scripts/install-deps.sh")
    if "statically linked" not in subprocess.run(["file", "-L", busybox], stdout=subprocess.PIPE,
                                                 text=True).stdout and libraries(busybox):
        raise Skip("busybox is not static (install busybox-static)")
    root = os.path.join(work, "initramfs")
    for d in ["bin", "lib", "lib64", "proc", "sys", "dev", "tmp"]:
        os.makedirs(os.path.join(root, d), exist_ok=True)
    shutil.copy(busybox, os.path.join(root, "bin", "busybox"))
    for b in binaries:
        shutil.copy(b, os.path.join(root, "bin", os.path.basename(b)))
        for lib in libraries(b):
            # the loader at its absolute path, every library in /lib
            dst = os.path.join(root, lib.lstrip("/")) if "ld-linux" in lib else os.path.join(root, "lib", os.path.basename(lib))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if not os.path.exists(dst):
                shutil.copy(lib, dst)
    for src, dst in files:
        os.makedirs(os.path.join(root, os.path.dirname(dst.lstrip("/"))), exist_ok=True)
        shutil.copy(src, os.path.join(root, dst.lstrip("/")))
    return pack_initramfs(root, INIT, os.path.join(work, "initramfs.cpio"))


def run_vm(kernel, image, serial, timeout_s, bench):
    cgroup = Cgroup((VM_MIB + 512) << 20)
    procs = Procs(cgroup)
    try:
        accel, why = choose_accel(procs, "qemu-system-x86_64", kernel)
        log("accel %s: %s" % (accel, why))
        cmd = ["qemu-system-x86_64", "-accel", accel, "-m", "%dM" % VM_MIB, "-smp", "2", "-cpu", "max",
               "-nographic", "-no-reboot", "-nodefaults", "-serial", "file:" + serial,
               "-kernel", kernel, "-initrd", image,
               "-append", "console=ttyS0 panic=-1 quiet transparent_hugepage=madvise" + (" lm.bench" if bench else "")]
        log("boot:", " ".join(cmd))
        with open(serial + ".qemu", "w") as out:
            p = procs.start(cmd, out)
            deadline = time.monotonic() + timeout_s
            while p.poll() is None and time.monotonic() < deadline:
                time.sleep(1)
            if p.poll() is None:
                raise AssertionError("the VM did not finish in %d s (serial log %s)" % (timeout_s, serial))
    finally:
        procs.kill_all()
        cgroup.close()
    with open(serial, errors="replace") as f:
        return f.read(), accel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True, help="the meson build directory")
    ap.add_argument("--timeout", type=int, help="seconds the VM may run (default 600, 900 with --bench)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--bench", metavar="JSON", help="also time collect for uffd-wp and soft-dirty in the VM "
                    "(128/256/512 MiB at 0.1/1/10%% dirty, medians of 3) and the guest's rate during pre-copy "
                    "under each (TCG: compare the two, not with the host)")
    args = ap.parse_args()
    try:
        if not shutil.which("qemu-system-x86_64"):
            raise Skip("qemu-system-x86_64 not found (qemu-system-x86: scripts/install-deps.sh)")
        b = args.build
        binaries = [os.path.join(b, p) for p in ["tests/dirtytrack/test_dt_trackers", "tests/dirtytrack/dt_target",
                                                  "tests/dirtytrack/test_dt_guest_ground_truth",
                                                  "harness/guest/livemig-guest", "harness/livemig"]]
        if args.bench:
            binaries.append(os.path.join(b, "tests/dirtytrack/dirtytrack_bench"))
        for x in binaries:
            if not os.path.exists(x):
                raise Skip("not built: " + x)
        package = pick_kernel_package()
        kernel = guest_kernel(os.path.join(CACHE, package), package)
        config = glob_one(os.path.join(os.path.dirname(kernel), "config-*"))
        with open(config) as f:
            text = f.read()
        if "CONFIG_MEM_SOFT_DIRTY=y" not in text:
            raise Skip("%s is built without CONFIG_MEM_SOFT_DIRTY" % package)
        log("kernel:", kernel, "(CONFIG_MEM_SOFT_DIRTY=y)")
    except Skip as e:
        print("SKIP:", e)
        return SKIP
    work = tempfile.mkdtemp(prefix="lm-vm-")
    try:
        image = initramfs(work, binaries, [(os.path.join(HERE, "guest-rate.toml"), "/etc/guest-rate.toml")])
        t0, load_before = time.monotonic(), os.getloadavg()
        out, accel = run_vm(kernel, image, os.path.join(work, "serial.log"),
                     args.timeout or (900 if args.bench else 600), args.bench)
        load = {"before": load_before, "after": os.getloadavg()}
        log("VM ran %.0f s, host load average %s before, %s after"
            % (time.monotonic() - t0, load["before"], load["after"]))
        print(out)
        rc = check(out)
        if args.bench:  # written whatever the checks said: the figures stand on their own
            rc = bench_figures(out, args.bench, os.path.basename(kernel), load, accel) or rc
        return rc
    except Skip as e:
        print("SKIP:", e)
        return SKIP
    finally:
        if args.keep:
            log("kept", work)
        else:
            shutil.rmtree(work, ignore_errors=True)


def bench_figures(out, path, kernel, load, accel):
    """The VM's figures into `path`:
    - collect: per tracker, RAM size and dirty percent, wall (the collect
      alone, manual time) and CPU (the benchmark process per iteration: the
      collect and asking the child to write) in microseconds; per GiB; the
      slope with RAM size (least squares over the sizes, per dirty percent);
    - soft-dirty / uffd-wp at each point, the figure TCG leaves meaningful;
    - guest-rate: the guest's progress per second before and during
      pre-copy under each tracker (livemig run, alternating)."""
    m = re.search(r"LMBENCH (.*)", out)
    try:
        doc = json.loads(m.group(1))
    except (AttributeError, ValueError):
        log("FAIL: the VM printed no benchmark JSON")
        return 1
    rows = {}  # tracker -> MiB -> percent -> figures
    for b in doc.get("benchmarks", []):
        if b.get("aggregate_name") != "median":
            continue
        name = b["run_name"].split("/")  # BM_Collect/<tracker>/<MiB>/<per 10000>
        mib, frac = int(name[2]), int(name[3]) / 100.0
        rows.setdefault(name[1], {}).setdefault(mib, {})[frac] = {
            "wall_us": b["real_time"], "cpu_us": b["cpu_time"], "us_per_gib": b["real_time"] * 1024.0 / mib,
            "found_pages": b.get("found_pages"), "dirty_pages": b.get("dirty_pages")}
    ratio = {mib: {frac: {k: rows["soft_dirty"][mib][frac][k] / r[k] for k in ["wall_us", "cpu_us"]}
                   for frac, r in by.items() if frac in rows.get("soft_dirty", {}).get(mib, {})}
             for mib, by in rows.get("uffd_wp", {}).items()}
    slope = {}  # tracker -> percent -> wall microseconds per GiB of RAM
    for t, by_mib in rows.items():
        for frac in sorted({f for by in by_mib.values() for f in by}):
            pts = [(mib / 1024.0, by[frac]["wall_us"]) for mib, by in by_mib.items() if frac in by]
            if len(pts) >= 2:
                mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
                den = sum((x - mx) ** 2 for x, _ in pts)
                slope.setdefault(t, {})[frac] = sum((x - mx) * (y - my) for x, y in pts) / den if den else None
    rates = {}
    for t, i, text in re.findall(r"LMRATE (\S+) (\d+) (.*)", out):
        try:
            w = json.loads(text).get("workload", {})
        except ValueError:
            w = {}
        before, during = w.get("rate-before"), w.get("rate-during")
        rates.setdefault(t, []).append({"run": int(i), "rate-before": before, "rate-during": during,
                                        "during/before": during / before if before and during is not None else None})
    result = {"kernel": kernel, "accel": accel,
              "median_of": 3, "iterations": 20, "keys": "tracker, RAM MiB, dirty percent of the RAM",
              "collect": rows, "slope_us_per_gib": slope, "soft_dirty_over_uffd_wp": ratio,
              "guest_rate": rates, "host_loadavg": load}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    for t, by_mib in sorted(rows.items()):
        for mib, by in sorted(by_mib.items()):
            for frac, r in sorted(by.items()):
                log("VM collect %-10s %4d MiB %5.1f%% dirty: %9.0f us wall, %9.0f us CPU, %9.0f us/GiB, found %s of %s"
                    % (t, mib, frac, r["wall_us"], r["cpu_us"], r["us_per_gib"], r["found_pages"], r["dirty_pages"]))
    for t, by in sorted(slope.items()):
        for frac, v in sorted(by.items()):
            log("VM collect %-10s %5.1f%% dirty: slope %s us wall per GiB of RAM" % (t, frac, "%.0f" % v if v else "?"))
    for mib, by in sorted(ratio.items()):
        for frac, r in sorted(by.items()):
            log("VM collect soft-dirty/uffd-wp %4d MiB %5.1f%% dirty: %.2f wall, %.2f CPU"
                % (mib, frac, r["wall_us"], r["cpu_us"]))
    for t, runs in sorted(rates.items()):
        for r in runs:
            log("VM guest rate %-10s run %d: %s/s before, %s/s during pre-copy, during/before %s"
                % (t, r["run"], r["rate-before"], r["rate-during"],
                   "%.3f" % r["during/before"] if r["during/before"] is not None else "?"))
    bad = [t for t, by_mib in rows.items() for by in by_mib.values() for r in by.values()
           if (r["found_pages"] or 0) < (r["dirty_pages"] or 1)]
    if bad or set(rows) != {"uffd_wp", "soft_dirty"}:
        log("FAIL: benchmark rows missing, or collect found fewer pages than written:", rows.keys(), bad)
        return 1
    if set(rates) != {"uffd-wp", "soft-dirty"} or any(r["during/before"] is None for v in rates.values() for r in v):
        log("FAIL: guest-rate runs missing or without the workload's rates:", rates)
        return 1
    return 0


def glob_one(pattern):
    import glob
    found = sorted(glob.glob(pattern))
    if not found:
        raise Skip("nothing matches " + pattern)
    return found[-1]


def check_migrations(out):
    """The pre-copy migrations in the VM, one per tracker: completed, tracked
    by the tracker asked for, pages found dirty in every pre-copy round after
    the first (the tracker collected while the guest wrote), and the
    destination's copy equal to the frozen source (verify)."""
    failures = []
    docs = {}
    for tracker, text in re.findall(r"LMMIGRATE (\S+) (.*)", out):
        try:
            docs[tracker] = json.loads(text)
        except ValueError:
            failures.append("migration with %s: no result JSON" % tracker)
    for tracker in ["soft-dirty", "uffd-wp"]:
        r = docs.get(tracker)
        if r is None:
            failures.append("migration with %s printed no result" % tracker)
            continue
        rounds = [x["pages"] for x in r.get("rounds", [])]
        log("VM migration (%s): %s, tracker %s, %d rounds %s, %d pages resent, verify %s over %s pages, "
            "downtime %.1f ms, total %.1f ms" % (tracker, r.get("status"), r.get("host", {}).get("tracker"),
                                                 len(rounds), rounds, r.get("ram", {}).get("resent", 0),
                                                 r.get("verify", {}).get("ok"), r.get("verify", {}).get("pages"),
                                                 r.get("downtime", 0), r.get("total-time", 0)))
        if r.get("status") != "completed":
            failures.append("migration with %s: %s (%s)" % (tracker, r.get("status"), r.get("error")))
        if r.get("host", {}).get("tracker") != tracker:
            failures.append("migration asked for %s ran with %s" % (tracker, r.get("host", {}).get("tracker")))
        if len(rounds) < 3 or 0 in rounds[1:-1]:
            failures.append("migration with %s: want pre-copy rounds after round 0 that found dirty pages, "
                            "got pages per round %s" % (tracker, rounds))
        v = r.get("verify", {})
        if v.get("ok") is not True or not v.get("pages"):
            failures.append("migration with %s: verify %s" % (tracker, v))
    return failures


def check(out):
    out = re.sub(r"\x1b\[[0-9;]*m", "", out)
    failures = []
    if "LMDONE" not in out:
        failures.append("the VM did not run every step (no LMDONE)")
    steps = dict(re.findall(r"LMSTEP (\S+) (\d+)", out))
    for name in ["trackers", "ground-truth", "migrate-soft-dirty", "migrate-uffd-wp"]:  # not check: its status counts features this VM lacks
        if steps.get(name) != "0":
            failures.append("step %s exited %s" % (name, steps.get(name, "never")))
    m = re.search(r"LMCHECK (.*)", out)
    try:
        doc = json.loads(m.group(1)) if m else None
    except ValueError:
        doc = None
    if doc is None:
        failures.append("livemig check --json printed no JSON")
    elif not re.search(r'"soft-dirty"\s*:\s*\{[^}]*"available"\s*:\s*true', json.dumps(doc)):
        failures.append("livemig check does not call soft-dirty available: " + json.dumps(doc)[:600])
    # soft-dirty cases ran (not skipped) and passed, in both test programs.
    ok_sd = re.findall(r"\[       OK \] \S+soft_dirty\S*", out)
    skipped_sd = re.findall(r"\[  SKIPPED \] \S+soft_dirty\S*", out)
    ok_gt = [t for t in ok_sd if "GuestGroundTruth" in t]
    if len(ok_sd) - len(ok_gt) < 15:
        failures.append("only %d soft-dirty tracker tests passed" % (len(ok_sd) - len(ok_gt)))
    if len(ok_gt) < 4:
        failures.append("only %d soft-dirty ground-truth cases passed (want 1 and 4 threads x page, word)" % len(ok_gt))
    for line in re.findall(r"soft-dirty: \d+ logged page writes.*", out):
        log("VM:", line)
    failures += check_migrations(out)
    if "FAILED" in out:
        failures.append("a test failed: " + "; ".join(sorted(set(re.findall(r"\[  FAILED  \] (\S+)", out))))[:800])
    log("soft-dirty tests passed: %d (skipped: %s)" % (len(ok_sd), ", ".join(skipped_sd) or "none"))
    for f in failures:
        log("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
