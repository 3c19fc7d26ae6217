#!/usr/bin/env python3
"""Peer baseline (issue 12): QEMU's own migration and livemig on the same RAM
size and content, over loopback TCP, alternating (QEMU, livemig, QEMU, ...),
medians over --repeat runs; prints livemig/QEMU ratios and writes
results/qemu-baseline.json.

Scenarios (--scenarios, comma-separated):
  idle   RAM filled with random content, then idle: QEMU single stream and
         multifd-2 against livemig with 1 and 2 channels;
  mixed  livemig's "mixed" content (30% zero, 30% ints, 25% text, 15% random
         pages): QEMU without compression and zstd multifd-2 against livemig
         fixed:raw and adaptive;
  write  a writer rewriting random 4 KiB pages over the RAM at full speed:
         pre-copy and post-copy on both sides.

QEMU comes from Debian (qemu-system-x86), runs TCG unless a guest boots on /dev/kvm,
with Debian's cloud kernel (downloaded with `apt-get download`, unpacked into
the cache directory, never installed) and an initramfs built here: busybox,
an /init and qemu_guest_fill.c compiled with gcc -static. The guest prints
LMFILLED on its serial console once its RAM is written; the migration starts
then. Both QEMU processes run in a memory cgroup of their own and die with
this script. Exits 77 with the reason when QEMU cannot run here.
"""
import argparse, json, os, re, shutil, signal, socket, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from bench_util import med, migrate, write_doc  # noqa: E402
from qemu_vm import SKIP, Cgroup, Procs, Skip, choose_accel, guest_kernel, log, pack_initramfs, sh  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def guest_mib(fill_mib):
    """QEMU's -m for a guest that fills fill_mib: the guest's kernel keeps
    ~80 MiB + 5% (MemAvailable 2022 MiB of -m 2208M); the rest is margin."""
    return fill_mib + 160 + fill_mib // 16


DOWNTIME_LIMIT_MS = 300   # livemig's convergence.downtime-target-ms in configs/default.toml
MAX_BANDWIDTH = 100 << 30  # bytes/s: no QEMU throttling on loopback


# --- the guest: kernel, initramfs ------------------------------------------------------

INIT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
for a in $(/bin/busybox cat /proc/cmdline); do
  case "$a" in lm.mode=*) mode="${a#lm.mode=}";; lm.mib=*) mib="${a#lm.mib=}";; esac
done
echo "LMBOOTED $mode $mib"
/bin/busybox grep -E 'MemTotal|MemAvailable' /proc/meminfo
exec /fill "$mode" "$mib"
"""


def guest_initramfs(work):
    busybox = shutil.which("busybox")
    if not busybox or not shutil.which("cpio") or not shutil.which("gcc"):
        raise Skip("needs busybox (busybox-static), cpio and gcc: scripts/install-deps.sh")
    root = os.path.join(work, "initramfs")
    for d in ["bin", "proc", "dev"]:
        os.makedirs(os.path.join(root, d), exist_ok=True)
    shutil.copy(busybox, os.path.join(root, "bin", "busybox"))
    sh(["gcc", "-O2", "-static", "-o", os.path.join(root, "fill"), os.path.join(HERE, "qemu_guest_fill.c")], 120)
    return pack_initramfs(root, INIT, os.path.join(work, "initramfs.cpio"))


# --- QMP ------------------------------------------------------------------------------

class Qmp:
    def __init__(self, path, deadline):
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.time() > deadline:
                    raise RuntimeError("QMP socket %s did not open" % path)
                time.sleep(0.05)
        self.sock.settimeout(60)
        self.buf = b""
        self.read()  # greeting
        self.cmd("qmp_capabilities")

    def read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, **arguments):
        self.sock.sendall(json.dumps({"execute": name, "arguments": arguments}).encode() + b"\n")
        while True:
            r = self.read()
            if "event" in r:
                continue
            if "error" in r:
                raise RuntimeError("QMP %s: %s" % (name, r["error"].get("desc")))
            return r.get("return")

    def close(self):
        self.sock.close()


# --- one QEMU migration ------------------------------------------------------------------

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_serial(path, word, deadline, proc):
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("QEMU exited (%d) before %s" % (proc.returncode, word))
        try:
            with open(path, errors="replace") as f:
                text = f.read()
            m = re.search(word + r" (\d+)", text)
            if m:
                return int(m.group(1))
            if "Kernel panic" in text:
                raise RuntimeError("guest kernel panic before %s (serial log %s)" % (word, path))
        except FileNotFoundError:
            pass
        time.sleep(0.1)
    raise RuntimeError("guest did not print %s in time (serial log %s)" % (word, path))


def serial_rates(path):
    try:
        with open(path, errors="replace") as f:
            return [int(x) for x in re.findall(r"LMRATE (\d+)", f.read())]
    except FileNotFoundError:
        return []


def qemu_tls_psk_dir(work, tag):
    """A tls-creds-psk directory: keys.psk holds "qemu:<hex key>" (QEMU's default username)."""
    d = os.path.join(work, tag + "-tls")
    os.makedirs(d, mode=0o700, exist_ok=True)
    with open(os.open(os.path.join(d, "keys.psk"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write("qemu:%s\n" % os.urandom(32).hex())
    return d


def qemu_run(env, mode, fill, fill_mib, tag):
    """One QEMU migration; `mode` is a dict: multifd (channels or 0),
    compression (None or 'zstd'), postcopy (bool), tls (bool: TLS with a PSK)."""
    work = env.tmp
    ram_mib = guest_mib(fill_mib)
    base = [env.qemu, "-accel", env.accel, "-m", "%dM" % ram_mib, "-smp", "1", "-nodefaults", "-no-user-config",
            "-display", "none", "-vga", "none", "-kernel", env.kernel, "-initrd", env.initrd,
            "-append", "console=ttyS0 quiet panic=0 lm.mode=%s lm.mib=%d" % (fill, fill_mib)]
    paths = {side: (os.path.join(work, "%s-%s.qmp" % (tag, side)), os.path.join(work, "%s-%s.serial" % (tag, side)))
             for side in ("src", "dst")}
    for qmp_path, serial_path in paths.values():
        for p in (qmp_path, serial_path):
            if os.path.exists(p):
                os.unlink(p)
    logs = open(os.path.join(work, tag + ".qemu.log"), "w")
    procs = {}
    try:
        tls_dir = qemu_tls_psk_dir(work, tag) if mode.get("tls") else None
        for side in ("src", "dst"):
            qmp_path, serial_path = paths[side]
            cmd = base + ["-serial", "file:" + serial_path, "-qmp", "unix:%s,server=on,wait=off" % qmp_path]
            if tls_dir:  # QEMU's TLS migration with a pre-shared key (GnuTLS, as livemig's --tls --psk-file)
                cmd += ["-object", "tls-creds-psk,id=tls0,endpoint=%s,dir=%s" % (
                    "client" if side == "src" else "server", tls_dir)]
            if side == "dst":
                cmd += ["-incoming", "defer"]
            procs[side] = env.procs.start(cmd, logs)
        start = time.time()
        fill_ms = wait_serial(paths["src"][1], "LMFILLED", start + env.fill_timeout, procs["src"])
        boot_fill_s = time.time() - start
        if fill == "write":  # the writer's rate before the migration
            time.sleep(2.2)
        rate_before = serial_rates(paths["src"][1])
        deadline = time.time() + 30
        src, dst = Qmp(paths["src"][0], deadline), Qmp(paths["dst"][0], deadline)
        caps = [{"capability": "events", "state": False}]
        if mode.get("multifd"):
            caps.append({"capability": "multifd", "state": True})
        if mode.get("postcopy"):
            caps.append({"capability": "postcopy-ram", "state": True})
        params = {"downtime-limit": DOWNTIME_LIMIT_MS, "max-bandwidth": MAX_BANDWIDTH}
        if mode.get("multifd"):
            params["multifd-channels"] = mode["multifd"]
            params["multifd-compression"] = mode.get("compression") or "none"
        if tls_dir:
            params["tls-creds"] = "tls0"
        port = free_port()
        uri = "tcp:127.0.0.1:%d" % port
        for q in (dst, src):
            q.cmd("migrate-set-capabilities", capabilities=caps)
            q.cmd("migrate-set-parameters", **params)
        dst.cmd("migrate-incoming", uri=uri)
        src.cmd("migrate", uri=uri)
        if mode.get("postcopy"):
            src.cmd("migrate-start-postcopy")
        deadline = time.time() + env.migrate_timeout
        while True:
            info = src.cmd("query-migrate")
            if info.get("status") in ("completed", "failed", "cancelled"):
                break
            if time.time() > deadline:
                src.cmd("migrate_cancel")
                info["status"] = "timeout"
                break
            time.sleep(0.02)
        dst_status = None
        for _ in range(100):  # the destination runs once it has loaded everything
            dst_status = dst.cmd("query-status").get("status")
            if dst_status == "running" or info["status"] != "completed":
                break
            time.sleep(0.05)
        if fill == "write" and info["status"] == "completed":
            time.sleep(2.2)  # the writer's rate after the resume, on the destination
        ram = info.get("ram", {})
        row = {"status": info["status"], "destination-status": dst_status, "total-time": info.get("total-time"),
               "downtime": info.get("downtime"), "setup-time": info.get("setup-time"),
               "transferred": ram.get("transferred"), "duplicate-pages": ram.get("duplicate"),
               "normal-pages": ram.get("normal"), "dirty-sync-count": ram.get("dirty-sync-count"),
               "postcopy-requests": ram.get("postcopy-requests"), "mbps": ram.get("mbps"),
               "guest-fill-ms": fill_ms, "boot-and-fill-s": round(boot_fill_s, 1),
               "writer-pages-per-s-before": med(rate_before[-2:]),
               "writer-pages-per-s-during": med(serial_rates(paths["src"][1])[len(rate_before):]),
               "writer-pages-per-s-after": med(serial_rates(paths["dst"][1])[-2:])}
        if row["status"] == "completed" and dst_status != "running":
            row["status"] = "destination-" + str(dst_status)
        src.close()
        dst.close()
        return row
    finally:
        env.procs.kill_all()
        logs.close()


# --- livemig -----------------------------------------------------------------------------

LIVEMIG_EXTRA = ["population-time", "destination-prepare-time", "end-to-end-time"]


def find_key(doc, key):
    """The value of the first `key` in a nested document, breadth first."""
    level = [doc]
    while level:
        for d in level:
            if key in d:
                return d[key]
        level = [v for d in level for v in d.values() if isinstance(v, dict)]
    return None


def livemig_run(env, config, sets, tag):
    r = migrate(env, sets, tag, config=os.path.join(env.configs, config))
    row = {"status": r.get("status"), "total-time": r.get("total-time"), "setup-time": r.get("setup-time"),
           "downtime": r.get("downtime"), "transferred": (r.get("ram") or {}).get("transferred")}
    for k in LIVEMIG_EXTRA:  # being added to the result: taken wherever they appear
        v = find_key(r, k)
        if isinstance(v, (int, float)):
            row[k] = v
    verify = r.get("verify")
    if isinstance(verify, dict) and verify.get("time") is not None:
        row["verify.time"] = verify["time"]
    wl = r.get("workload") or {}
    for when in ("before", "during", "after"):
        row["writer-pages-per-s-" + when] = wl.get("rate-" + when)
    return row


# --- scenarios ------------------------------------------------------------------------------

def scenarios(size_mib, write_mib):
    ram = "workload.ram=\"%dM\"" % size_mib
    # rate 1 page/s: livemig's guest takes rate 0 as "max"; QEMU's idle guest has its kernel's ticks.
    idle = [ram, "workload.rate=1", "workload.prefill=true"]
    tls = ["security.tls=true", "security.psk-file=\"generate\""]
    writer = ["workload.ram=\"%dM\"" % write_mib, "workload.rate=\"max\"", "workload.pattern=\"uniform\"",
              "workload.content=\"random\"", "workload.write=\"page\"", "workload.threads=1",
              "workload.prefill=true"]
    return {
        "idle": {"fill": "random", "mib": size_mib, "what": "%d MiB random content, idle" % size_mib,
                 "qemu": {"single": {}, "multifd-2": {"multifd": 2}},
                 "livemig": {"1-channel": ("default.toml", idle + ["workload.content=\"random\"",
                                                                 "migration.channels=1"]),
                             "2-channels": ("default.toml", idle + ["workload.content=\"random\"",
                                                                  "migration.channels=2"])}},
        "mixed": {"fill": "mixed", "mib": size_mib, "what": "%d MiB mixed content, idle" % size_mib,
                  "qemu": {"no-compression": {}, "zstd-multifd-2": {"multifd": 2, "compression": "zstd"}},
                  "livemig": {"fixed:raw": ("default.toml", idle + ["workload.content=\"mixed\"",
                                                                  "migration.policy=\"fixed:raw\""]),
                              "adaptive": ("default.toml", idle + ["workload.content=\"mixed\"",
                                                                 "migration.policy=\"adaptive\""])}},
        # TLS beside plaintext on both sides, same run: QEMU tls-creds-psk, livemig --tls with a generated key.
        "tls": {"fill": "random", "mib": size_mib, "what": "%d MiB random content, idle, TLS 1.3 with a PSK" % size_mib,
                "qemu": {"plain": {}, "tls": {"tls": True}, "tls-multifd-2": {"tls": True, "multifd": 2}},
                "livemig": {"plain": ("default.toml", idle + ["workload.content=\"random\"", "migration.channels=1"]),
                            "tls": ("default.toml", idle + tls + ["workload.content=\"random\"",
                                                               "migration.channels=1"]),
                            "tls-2-channels": ("default.toml", idle + tls + ["workload.content=\"random\"",
                                                                          "migration.channels=2"])}},
        "write": {"fill": "write", "mib": write_mib,
                  "what": "%d MiB rewritten at full speed (random pages, random content)" % write_mib,
                  "qemu": {"precopy": {}, "postcopy": {"postcopy": True}},
                  "livemig": {"precopy": ("default.toml", writer), "postcopy": ("postcopy.toml", writer)}},
    }


WRITER_RATES = ["writer-pages-per-s-before", "writer-pages-per-s-during", "writer-pages-per-s-after"]
FIGURES = ["total-time", "downtime", "setup-time", "transferred"] + LIVEMIG_EXTRA + ["verify.time"]


def summarize(rows):
    ok = [r for r in rows if r["status"] == "completed"]
    out = {"completed": len(ok), "runs": len(rows)}
    for k in FIGURES + WRITER_RATES:
        xs = [r[k] for r in ok if r.get(k) is not None]
        if xs:
            out[k] = {"median": med(xs), "min": min(xs), "max": max(xs)}
    return out


def fig(s, k):
    return (s.get(k) or {}).get("median")


def ratio(a, b):
    return a / b if a is not None and b else None


def attempt(run, *a):
    """One run; an error (a guest that did not boot, no result) is that run's status."""
    try:
        return run(*a)
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as e:
        return {"status": "error: %s" % e, "total-time": None, "downtime": None, "setup-time": None,
                "transferred": None}


def run_scenario(env, name, sc):
    qemu_rows = {m: [] for m in sc["qemu"]}
    lm_rows = {m: [] for m in sc["livemig"]}
    for i in range(env.repeat):
        # A B A B: every QEMU mode, then every livemig mode, per repetition.
        for m, mode in sc["qemu"].items():
            r = attempt(qemu_run, env, mode, sc["fill"], sc["mib"], "%s-qemu-%s-%d" % (name, m, i))
            log("  %s QEMU %-15s %s total %s ms, downtime %s ms, setup %s ms, %.0f MiB" % (
                name, m, r["status"], r["total-time"], r["downtime"], r["setup-time"],
                (r["transferred"] or 0) / 2**20))
            qemu_rows[m].append(r)
        for m, (config, sets) in sc["livemig"].items():
            r = attempt(livemig_run, env, config, sets, "%s-livemig-%s-%d" % (name, m.replace(":", "-"), i))
            log("  %s livemig %-12s %s total %s ms, downtime %s ms, setup %s ms, %.0f MiB" % (
                name, m, r["status"], r["total-time"], r["downtime"], r["setup-time"],
                (r["transferred"] or 0) / 2**20))
            lm_rows[m].append(r)
    q = {m: {"runs": rows, "summary": summarize(rows)} for m, rows in qemu_rows.items()}
    lm = {m: {"runs": rows, "summary": summarize(rows)} for m, rows in lm_rows.items()}

    def best(side, key="total-time"):
        have = [(fig(v["summary"], key), m) for m, v in side.items() if fig(v["summary"], key) is not None]
        return min(have) if have else (None, None)

    qb, lb = best(q), best(lm)
    res = {"what": sc["what"], "qemu": q, "livemig": lm,
           "best": {"qemu": {"mode": qb[1], "total-time": qb[0]}, "livemig": {"mode": lb[1], "total-time": lb[0]},
                    "ratio-total-time": ratio(lb[0], qb[0])}}
    # Pairs: the n-th QEMU mode against the n-th livemig mode (same number of streams, or same kind).
    res["pairs"] = []
    for qm, lmm in zip(sc["qemu"], sc["livemig"]):
        qs, ls = q[qm]["summary"], lm[lmm]["summary"]
        res["pairs"].append({"qemu": qm, "livemig": lmm,
                             "ratio-total-time": ratio(fig(ls, "total-time"), fig(qs, "total-time")),
                             "ratio-downtime": ratio(fig(ls, "downtime"), fig(qs, "downtime"))})
    # Where a side has a "plain" mode (the tls scenario): each other mode's total time against it.
    res["vs-plain"] = {side: {m: ratio(fig(v["summary"], "total-time"), fig(rows["plain"]["summary"], "total-time"))
                              for m, v in rows.items() if m != "plain"}
                       for side, rows in (("qemu", q), ("livemig", lm)) if "plain" in rows}
    return res


def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, float) and v < 10:
        return "%.2f%s" % (v, unit)
    return "%.0f%s" % (v, unit)


def print_table(doc):
    log("")
    log("| scenario | QEMU mode | total ms (min-max) | downtime | setup | MiB | livemig mode | total ms (min-max) "
        "| downtime | setup | MiB | other livemig figures | total ratio | downtime ratio |")
    log("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    notes = []
    for name, res in doc["scenarios"].items():
        for pair in res["pairs"]:
            qs, ls = res["qemu"][pair["qemu"]]["summary"], res["livemig"][pair["livemig"]]["summary"]

            def spread(s):
                t = s.get("total-time")
                return "-" if not t else "%.0f (%.0f-%.0f) [%d/%d ok]" % (t["median"], t["min"], t["max"],
                                                                        s["completed"], s["runs"])

            extra = ", ".join("%s %s" % (k, fmt(fig(ls, k))) for k in LIVEMIG_EXTRA + ["verify.time"]
                              if fig(ls, k) is not None) or "-"
            log("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                name, pair["qemu"], spread(qs), fmt(fig(qs, "downtime")), fmt(fig(qs, "setup-time")),
                fmt((fig(qs, "transferred") or 0) / 2**20), pair["livemig"], spread(ls), fmt(fig(ls, "downtime")),
                fmt(fig(ls, "setup-time")), fmt((fig(ls, "transferred") or 0) / 2**20), extra,
                fmt(pair["ratio-total-time"]), fmt(pair["ratio-downtime"])))
        for side in ("qemu", "livemig"):
            for m, v in res[side].items():
                rates = [fig(v["summary"], k) for k in WRITER_RATES]
                if any(x is not None and x > 10 for x in rates):
                    notes.append("%s %s %s writer pages/s before/during/after: %s" % (
                        name, side, m, " / ".join(fmt(x) for x in rates)))
        b = res["best"]
        log("| %s | best: %s | %s | | | | best: %s | %s | | | | | %s | |" % (
            name, b["qemu"]["mode"], fmt(b["qemu"]["total-time"]), b["livemig"]["mode"],
            fmt(b["livemig"]["total-time"]), fmt(b["ratio-total-time"])))
    for n in notes:
        log("  " + n)
    for name, res in doc["scenarios"].items():
        for side, ratios in res.get("vs-plain", {}).items():
            log("  %s %s total time against its own plaintext: %s" % (
                name, side, ", ".join("%s %s" % (m, fmt(r)) for m, r in ratios.items())))


def smoke_check(doc):
    """--check: every run completed on both sides with sane figures."""
    bad = []
    for name, res in doc["scenarios"].items():
        floor = res["min-transferred"]
        for side in ("qemu", "livemig"):
            for m, v in res[side].items():
                for r in v["runs"]:
                    if r["status"] != "completed" or not r["total-time"] or (r["transferred"] or 0) < floor:
                        bad.append("%s %s %s: status %s, total %s ms, transferred %s < %d" % (
                            name, side, m, r["status"], r["total-time"], r["transferred"], floor))
    return bad


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--livemig", required=True)
    p.add_argument("--configs", default=os.path.join(HERE, "..", "..", "configs"))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--ram", type=int, default=2048, help="MiB for idle and mixed (default 2048)")
    p.add_argument("--write-ram", type=int, default=512, help="MiB for write (default 512)")
    p.add_argument("--quick", action="store_true", help="512 MiB, one repetition")
    p.add_argument("--scenarios", default="idle,mixed,write", help="idle, mixed, write, tls")
    p.add_argument("--check", action="store_true", help="fail unless every run completed with sane figures")
    p.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "livemig-bench"))
    p.add_argument("--out", default="results/qemu-baseline.json")
    p.add_argument("--keep", action="store_true", help="keep the work directory (serial and QEMU logs)")
    env = p.parse_args()
    if env.quick:
        env.ram, env.write_ram, env.repeat = 512, 512, 1
    all_sc = scenarios(env.ram, env.write_ram)
    chosen = [s for s in env.scenarios.split(",") if s]
    unknown = [s for s in chosen if s not in all_sc]
    if unknown:
        p.error("unknown scenario(s) %s (known: %s)" % (",".join(unknown), ",".join(all_sc)))
    # A SIGTERM (meson's timeout) unwinds through the finally blocks below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    env.qemu = shutil.which("qemu-system-x86_64")
    if not env.qemu:
        log("SKIP: no qemu-system-x86_64 (Debian package qemu-system-x86: scripts/install-deps.sh)")
        return SKIP
    if not os.access(env.livemig, os.X_OK):
        log("SKIP: no livemig binary at " + env.livemig)
        return SKIP
    env.configs = os.path.abspath(env.configs)
    env.tmp = tempfile.mkdtemp(prefix="livemig-qemubench-")
    biggest = max(all_sc[s]["mib"] for s in chosen)
    env.fill_timeout = 60 + biggest * 0.2          # boot plus fill: 11-17 s for 2 GiB under TCG at load 7-9 (boot-and-fill-s)
    env.migrate_timeout = 60 + biggest * 0.1
    cgroup = None
    try:
        try:
            env.kernel = guest_kernel(env.cache)
            env.initrd = guest_initramfs(env.tmp)
            # Source and destination, each with its RAM and QEMU's own overhead.
            cgroup = Cgroup(2 * guest_mib(biggest) * 2**20 + (1 << 30))
        except (Skip, OSError, subprocess.SubprocessError) as e:  # no kernel, no initramfs, no cgroup
            log("SKIP: cannot set the QEMU guest up: %s" % e)
            return SKIP
        env.procs = Procs(cgroup)
        accel, why = choose_accel(env.procs, env.qemu, env.kernel)
        env.accel = accel
        qemu_version = sh([env.qemu, "--version"], 30).splitlines()[0]
        doc = {"schema": "livemig.bench.qemu-baseline/1", "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
               "repeat": env.repeat, "qemu": qemu_version, "accel": accel, "kernel": os.path.basename(env.kernel),
               "load-before": os.getloadavg(), "scenarios": {},
               "differences": [
                   "QEMU's -m is the filled size + 160 MiB + 1/16 for the guest's kernel and initramfs (mostly"
                   " zero pages, which QEMU sends as flags); livemig's RAM is the filled size",
                   "QEMU's guest runs under %s; its writer (write scenario) rewrites fewer pages/s than livemig's"
                   " native guest: see writer-pages-per-s-*" % accel,
                   "content generators differ; the mixed class shares (30/30/25/15) are livemig's",
                   "QEMU: TCP sockets; livemig: configs/default.toml's transport (io_uring over loopback TCP)",
                   "QEMU's figures are the source's query-migrate; QEMU does not verify the memory",
                   "QEMU 7.2 counts multifd pages uncompressed in ram.transferred (zstd included); livemig"
                   " counts bytes sent",
                   "QEMU downtime-limit %d ms = livemig's convergence.downtime-target-ms; QEMU max-bandwidth"
                   " %d GiB/s" % (DOWNTIME_LIMIT_MS, MAX_BANDWIDTH >> 30),
                   "QEMU post-copy: migrate-start-postcopy right after migrate (livemig's post-copy freezes at once)",
               ]}
        doc["accel-reason"] = why
        log("QEMU baseline: %s, %s (%s), kernel %s; load %.2f %.2f %.2f" % (
            qemu_version, accel, why, os.path.basename(env.kernel), *doc["load-before"]))
        for name in chosen:
            sc = all_sc[name]
            log("scenario %s: %s" % (name, sc["what"]))
            res = run_scenario(env, name, sc)
            # Sanity floor: the share of pages that are not all-zero (every mixed page carries a stamp,
            # but QEMU and livemig may compress them): half the RAM for random, a tenth for mixed.
            res["min-transferred"] = int(sc["mib"] * 2**20 * (0.9 if sc["fill"] != "mixed" else 0.1))
            doc["scenarios"][name] = res
        doc["load-after"] = os.getloadavg()
        write_doc(doc, env.out)
        print_table(doc)
        log("\nload average before %s, after %s; wrote %s" % (
            " ".join("%.2f" % x for x in doc["load-before"]), " ".join("%.2f" % x for x in doc["load-after"]),
            env.out))
        if env.check:
            bad = smoke_check(doc)
            for b in bad:
                log("FAIL: " + b)
            return 1 if bad else 0
        return 0
    finally:
        if getattr(env, "procs", None):
            env.procs.kill_all()
        if cgroup:
            cgroup.close()
        if env.keep:
            log("kept", env.tmp)
        else:
            shutil.rmtree(env.tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
