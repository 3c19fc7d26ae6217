"""Pieces shared by the tests that boot Debian's kernel under QEMU (TCG
unless a guest boots on /dev/kvm): the kernel unpacked from its .deb (never installed), a
memory cgroup bounding QEMU, children that die with the script. Used by
tests/perf/bench_qemu_baseline.py and tests/vm/."""
import ctypes, glob, os, re, signal, subprocess, time

from memcg import remove_cgroup  # noqa: E402  (tests/common, beside this file)

SKIP = 77


class Skip(Exception):
    pass


def log(*a):
    print(*a, flush=True)


def sh(cmd, timeout, cwd=None):
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if p.returncode:
        raise Skip("%s failed (%d): %s" % (" ".join(cmd), p.returncode, p.stdout.strip()[-400:]))
    return p.stdout


def guest_kernel(cache, package=None):
    """Debian's cloud kernel (or `package`, a linux-image-* package), unpacked
    from its .deb into the cache."""
    found = sorted(glob.glob(os.path.join(cache, "kernel", "boot", "vmlinuz-*")))
    if found:
        return found[-1]
    if package is None:
        deps = sh(["apt-cache", "depends", "linux-image-cloud-amd64"], 60)
        m = re.search(r"Depends: (linux-image-\S+)", deps)
        if not m:
            raise Skip("apt-cache knows no linux-image-cloud-amd64 dependency")
        package = m.group(1)
    os.makedirs(cache, exist_ok=True)
    for old in glob.glob(os.path.join(cache, "*.deb")):
        os.unlink(old)
    sh(["apt-get", "download", package], 600, cwd=cache)
    debs = glob.glob(os.path.join(cache, "*.deb"))
    if not debs:
        raise Skip("apt-get download %s left no .deb" % package)
    sh(["dpkg-deb", "-x", debs[0], os.path.join(cache, "kernel")], 120)
    os.unlink(debs[0])
    found = sorted(glob.glob(os.path.join(cache, "kernel", "boot", "vmlinuz-*")))
    if not found:
        raise Skip("no vmlinuz in " + debs[0])
    return found[-1]


def pack_initramfs(root, init_script, image, timeout=120):
    """Writes `init_script` as root/init and packs root into a newc cpio at
    `image` (the kernel's initramfs format); returns image."""
    with open(os.path.join(root, "init"), "w") as f:
        f.write(init_script)
    os.chmod(os.path.join(root, "init"), 0o755)
    names = subprocess.run("find . | sort", shell=True, cwd=root, stdout=subprocess.PIPE, check=True).stdout
    with open(image, "wb") as out:
        subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=names, stdout=out, check=True,
                       timeout=timeout)
    return image


# --- processes: a memory cgroup, death with this script ---------------------------------

class Cgroup:
    """A memory cgroup (v1, or v2 when that is what the host has) bounding the
    QEMU processes; removed by close()."""

    def __init__(self, limit_bytes):
        v1 = "/sys/fs/cgroup/memory"
        name = "livemig-qemubench-%d" % os.getpid()
        if os.path.isdir(v1) and os.path.exists(os.path.join(v1, "cgroup.procs")):
            self.path, limit_file = os.path.join(v1, name), "memory.limit_in_bytes"
        elif os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            self.path, limit_file = os.path.join("/sys/fs/cgroup", name), "memory.max"
        else:
            raise Skip("no memory cgroup to bound the QEMU processes")
        # Groups of earlier runs killed with SIGKILL (their QEMU died with them): empty, removable.
        for old in glob.glob(os.path.join(os.path.dirname(self.path), "livemig-qemubench-*")):
            if not os.path.exists("/proc/" + old.rsplit("-", 1)[1]):
                try:
                    os.rmdir(old)
                except OSError:
                    pass
        try:
            os.mkdir(self.path)
            with open(os.path.join(self.path, limit_file), "w") as f:
                f.write(str(limit_bytes))
        except OSError as e:
            self.close()
            raise Skip("cannot create memory cgroup %s: %s" % (self.path, e))
        self.limit = limit_bytes

    def close(self):
        if not remove_cgroup(self.path):
            log("warning: could not remove cgroup", self.path)


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


class Procs:
    """Children started in the cgroup, killed by PID when this script dies or
    calls kill_all()."""

    def __init__(self, cgroup):
        self.cgroup, self.live = cgroup, []

    def start(self, cmd, stdout):
        procs_file = os.path.join(self.cgroup.path, "cgroup.procs")
        parent = os.getpid()

        def child():
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # the script died before the prctl
                os._exit(1)
            with open(procs_file, "w") as f:
                f.write(str(os.getpid()))

        p = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.STDOUT, preexec_fn=child)
        self.live.append(p)
        return p

    def kill_all(self):
        for p in self.live:
            if p.poll() is None:
                p.kill()
        for p in self.live:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log("warning: pid %d did not exit" % p.pid)
        self.live = []


def choose_accel(procs, qemu, kernel, seconds=20):
    """("kvm" or "tcg", why): KVM when /dev/kvm is there and a guest kernel
    prints on its serial console within `seconds` on it, else TCG. A nested
    /dev/kvm may open and create VMs yet run a guest that never prints."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "no usable /dev/kvm"
    probe = procs.start([qemu, "-accel", "kvm", "-m", "256M", "-smp", "1", "-nodefaults", "-no-user-config",
                         "-display", "none", "-vga", "none", "-serial", "stdio", "-no-reboot",
                         "-kernel", kernel, "-append", "console=ttyS0 panic=-1"], subprocess.PIPE)
    try:
        os.set_blocking(probe.stdout.fileno(), False)
        deadline = time.monotonic() + seconds
        seen = b""
        while time.monotonic() < deadline and probe.poll() is None:
            seen += probe.stdout.read(4096) or b""
            if b"Linux version" in seen:
                return "kvm", "a guest kernel booted on /dev/kvm"
            time.sleep(0.1)
        return "tcg", "/dev/kvm is there, but a guest kernel printed nothing on it within %d s" % seconds
    finally:
        probe.kill()
        probe.wait()
