"""A v1 memory cgroup with a limit for the Python tests' livemig runs (the
guests they start claim memory; tests/harness): every command runs inside it, in its own
process group, and is killed (the group, by its id) when it outlives its
timeout. The cgroup is removed on close. No cgroup v1 memory controller, or
no permission: Skip, with the reason (the tests exit 77).

    with MemoryCgroup("lm-timeline", 1 << 30) as cg:
        out = cg.run([livemig, "run", ...], timeout=60)
"""
import os, signal, subprocess, sys, time

ROOT = "/sys/fs/cgroup/memory"


class Skip(Exception):
    pass


class MemoryCgroup:
    def __init__(self, name, limit_bytes):
        if not os.path.exists(os.path.join(ROOT, "memory.limit_in_bytes")):
            raise Skip("no cgroup v1 memory controller at %s" % ROOT)
        self.path = os.path.join(ROOT, "%s-%d" % (name, os.getpid()))
        try:
            os.makedirs(self.path, exist_ok=True)
            with open(os.path.join(self.path, "memory.limit_in_bytes"), "w") as f:
                f.write(str(limit_bytes))
        except OSError as e:
            raise Skip("cannot make memory cgroup %s: %s" % (self.path, e))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def run(self, cmd, timeout, cwd=None, env=None, check=True):
        """Runs cmd in the cgroup; returns (exit status, stdout+stderr). With
        check, a non-zero status ends the test with the output."""
        procs = os.path.join(self.path, "cgroup.procs")

        def enter():
            with open(procs, "w") as f:
                f.write(str(os.getpid()))

        print(" ".join(cmd), flush=True)
        p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             preexec_fn=enter, start_new_session=True)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, _ = p.communicate()
            sys.exit("%s: no end within %d s\n%s" % (cmd[1], timeout, out))
        if check and p.returncode != 0:
            sys.exit("%s: exit %d\n%s" % (" ".join(cmd[:2]), p.returncode, out))
        return p.returncode, out

    def close(self):
        if not remove_cgroup(self.path):
            print("warning: could not remove cgroup %s" % self.path, file=sys.stderr)


def remove_cgroup(path):
    """Removes the cgroup at path once its killed processes have left it (they
    may take a moment); False if it stayed."""
    for _ in range(50):
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            time.sleep(0.1)
    return False
