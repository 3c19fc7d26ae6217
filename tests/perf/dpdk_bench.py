#!/usr/bin/env python3
"""DPDK transport benchmark, one run: the same Channel-API streaming program
(dpdk_channel_bench) as two processes over dpdk/memif, tcp and uring over
loopback, and dpdk/memif with injected loss. Reports medians of --repeat runs
and ratios measured in this run; writes JSON under results/.

  dpdk_bench.py --exe build/tests/dpdk/dpdk_channel_bench [--bytes 1G] [--repeat 3]
"""
import argparse, json, os, socket, statistics, subprocess, sys, time

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def run_pair(exe, address, args, extra, timeout=300):
    common = args + (["--extra", extra] if extra else [])
    recv = subprocess.Popen([exe, "--listen", address] + common, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = recv.stdout.readline()  # "listening ..." once the listener exists
        if not line.startswith("listening"):
            raise RuntimeError("receiver did not start: " + line + recv.stderr.read())
        send = subprocess.run([exe, "--connect", address] + common, capture_output=True, text=True, timeout=timeout)
        out, err = recv.communicate(timeout=60)
    finally:
        if recv.poll() is None:
            recv.kill(); recv.wait()
    if send.returncode != 0 or recv.returncode != 0:
        raise RuntimeError(f"{address}: sender rc {send.returncode} {send.stderr.strip()} / receiver rc {recv.returncode} {err.strip()}")
    return json.loads(out.strip().splitlines()[-1])

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--exe", required=True)
    ap.add_argument("--bytes", default="1G")
    ap.add_argument("--msg-size", default="256K")
    ap.add_argument("--channels", default="1")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--backends", default="dpdk,tcp,uring")
    a = ap.parse_args()
    base = ["--bytes", a.bytes, "--msg-size", a.msg_size, "--channels", a.channels]
    cases = []
    for b in a.backends.split(","):
        if b == "dpdk":
            cases.append(("dpdk-memif", lambda i: f"dpdk:memif:/tmp/lm-bench-{os.getpid()}-{i}.sock", ""))
        else:
            cases.append((f"{b}-loopback", lambda i, b=b: f"{b}:127.0.0.1:{free_port()}", ""))
    if "dpdk" in a.backends:
        for loss in ("0.01", "0.05"):
            cases.append((f"dpdk-memif-loss{loss}", lambda i, l=loss: f"dpdk:memif:/tmp/lm-bench-{os.getpid()}-l{l}-{i}.sock", f"loss={loss}"))
    results = {}
    for i in range(a.repeat):  # interleaved so that machine noise hits every case alike
        for name, addr, extra in cases:
            try:
                r = run_pair(a.exe, addr(i), base, extra)
                results.setdefault(name, []).append(r["gbit_per_s"])
            except Exception as e:  # a backend not built (uring) is reported, not fatal
                results.setdefault(name + " (error)", []).append(str(e)[:300])
    summary = {}
    for name, vals in results.items():
        if name.endswith("(error)"):
            summary[name] = vals[0]; continue
        summary[name] = {"median_gbit_per_s": statistics.median(vals), "runs": vals}
    def med(n): return summary.get(n, {}).get("median_gbit_per_s") if isinstance(summary.get(n), dict) else None
    ratios = {}
    if med("dpdk-memif") and med("tcp-loopback"): ratios["dpdk_memif_over_tcp"] = med("dpdk-memif") / med("tcp-loopback")
    if med("dpdk-memif") and med("uring-loopback"): ratios["dpdk_memif_over_uring"] = med("dpdk-memif") / med("uring-loopback")
    for l in ("0.01", "0.05"):
        if med("dpdk-memif") and med(f"dpdk-memif-loss{l}"):
            ratios[f"goodput_fraction_loss{l}"] = med(f"dpdk-memif-loss{l}") / med("dpdk-memif")
    doc = {"schema": "livemig.dpdk_bench/1", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "bytes": a.bytes, "msg_size": a.msg_size, "channels": a.channels, "repeat": a.repeat,
           "results": summary, "ratios": ratios}
    text = json.dumps(doc, indent=2)
    print(text)
    if a.out:
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        open(a.out, "w").write(text + "\n")
    return 0 if "dpdk-memif" in summary and isinstance(summary["dpdk-memif"], dict) else 1

if __name__ == "__main__":
    sys.exit(main())
