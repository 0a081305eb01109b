#!/usr/bin/env python3
"""The deterministic performance gate: instructions per request of the full edge chain,
counted by `valgrind --tool=callgrind`, checked against the budget in bench/budget.txt.

Wall-clock figures move by ±20% on a shared machine; an instruction count does not (same
binary, same inputs). Each scenario runs the proxy under callgrind, sends a few warm-up requests on
one keep-alive connection (the first connection to the backend, the first token verification),
zeroes the counters, sends many more, and dumps the counters: start-up and shutdown are not
counted. anygate with the routing plugin alone (no admin listener) is counted with a budget of
its own: what anygate costs as a Pingora application, apart from the SPEC's per-request chain.
The bare Pingora proxy is counted too, for reference (no budget).

    bench/callgrind.py --anygate target/release/anygate --bare target/release/bare-proxy
        [--check bench/budget.txt] [--out FILE] [--h2] [--cache [--cache-conns 50,500]]

`--h2` counts HTTP/2 over TLS as well (`h2load`, one connection, 10 concurrent streams;
anygate and the bare proxy; no budget): 5,000 requests after the warm-up, so the connection's
TLS handshake adds a few hundred instructions to each figure, the same for both.

`--cache` simulates the caches and branch predictor as well (`--cache-sim=yes --branch-sim=yes`,
no budget), for anygate and the bare proxy under 50 concurrent keep-alive connections
(`h2load --h1 -c 50`, 5,000 requests after 200; `--cache-conns 50,500` for each number of
connections in the list, the warm-up reaching each connection twice), with the last level set
to a 2 MiB L2 (a core's L2 here): per request, first-level data misses, L2 misses and
mispredicted branches. Memory that misses the L2 costs time that instructions do not show
(bench/profile.md, "At 500 connections").

Exits 1 when a scenario costs more than its budget (with --check), 0 otherwise.
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the benchmark's servers, configs and token)
import contenders  # noqa: E402

FEW, MANY = 50, 1000
MANY_H2 = 5000


def request(path, headers):
    lines = [f"GET {path} HTTP/1.1"] + headers + ["", ""]
    return "\r\n".join(lines).encode()


def send_sequential(port, raw, n):
    """n requests, one after the other, on one keep-alive connection; each answer read whole."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        for _ in range(n):
            s.sendall(raw)
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("the proxy closed the connection")
                buf += chunk
            head, _, body = buf.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer: {head[:200]!r}")
            m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            want = int(m.group(1)) if m else 0
            while len(body) < want:
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("the proxy closed the connection mid-body")
                body += chunk


def h2_load(port, headers):
    """`load(n)`: n HTTP/2 requests over TLS on one connection, 10 streams at a time."""
    def load(n):
        cmd = ["h2load", "-n", str(n), "-c", "1", "-m", "10"]
        for h in headers:
            cmd += ["-H", h]
        out = subprocess.run(cmd + [f"https://127.0.0.1:{port}/api/hello"], capture_output=True,
                             text=True, timeout=600).stdout
        done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
        status = re.search(r"status codes: (\d+) 2xx", out)
        if not done or int(done.group(1)) != n or not status or int(status.group(1)) != n:
            raise RuntimeError(f"h2load: not all {n} requests answered 2xx:\n{out}")
    return load


def count(cmd, port, load, workdir, env, tag, many=MANY, few=FEW, sim=()):
    """Instructions of `cmd` under callgrind for `many` requests sent by `load(n)`, after `few`
    warm-up requests: the counters are zeroed after the warm-up and dumped after the measured
    requests, so start-up and shutdown (freeing TLS contexts, flushing logs) are not counted.
    With `sim` (extra valgrind options), every event's total as a dict instead."""
    out = os.path.join(workdir, f"callgrind.{tag}.out")
    full = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no",
            "--collect-jumps=no"] + list(sim) + cmd
    log = open(os.path.join(workdir, f"callgrind.{tag}.log"), "wb")
    proc = subprocess.Popen(full, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, **env),
                            start_new_session=True)

    def control(flag):
        subprocess.run(["callgrind_control", flag, str(proc.pid)], check=True, capture_output=True,
                       timeout=120)

    try:
        bench.wait_port(port, proc, timeout=180)
        load(few)
        control("--zero")
        load(many)
        control("--dump")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    dumps = sorted(f for f in os.listdir(workdir) if f.startswith(f"callgrind.{tag}.out."))
    if not dumps:
        raise RuntimeError(f"callgrind wrote no dump for {tag} (see {workdir})")
    total, events, totals = 0, [], []
    with open(os.path.join(workdir, dumps[-1])) as f:
        for line in f:
            if line.startswith("events:"):
                events = line.split()[1:]
            if line.startswith("summary:") or line.startswith("totals:"):
                values = [int(v) for v in line.split()[1:]]
                if values[0] > total:
                    total, totals = values[0], values
    if not total:
        raise RuntimeError(f"no instruction total in {dumps[-1]}")
    return dict(zip(events, totals)) if sim else total


def per_request(cmd_for_port, raw, workdir, env, tag):
    port = bench.free_port()
    load = lambda n: send_sequential(port, raw, n)  # noqa: E731
    return count(cmd_for_port(port), port, load, workdir, env, tag) / MANY


def per_h2_request(cmd_for_port, headers, workdir, env, tag):
    port = bench.free_port()
    return count(cmd_for_port(port), port, h2_load(port, headers), workdir, env, tag,
                 MANY_H2) / MANY_H2


# A 2 MiB, 16-way last level: a core's L2 on this machine (`lscpu`); L1 as valgrind detects it.
CACHE_SIM = ["--cache-sim=yes", "--branch-sim=yes", "--LL=2097152,16,64"]
MANY_CACHE, FEW_CACHE, CACHE_CONNS = 5000, 200, 50


def h1_concurrent_load(port, headers, conns=CACHE_CONNS):
    """`load(n)`: n HTTP/1.1 requests over `conns` keep-alive connections at once."""
    def load(n):
        cmd = ["h2load", "--h1", "-n", str(n), "-c", str(conns)]
        for h in headers:
            cmd += ["-H", h]
        out = subprocess.run(cmd + [f"http://127.0.0.1:{port}/api/hello"], capture_output=True,
                             text=True, timeout=900).stdout
        status = re.search(r"status codes: (\d+) 2xx", out)
        if not status or int(status.group(1)) != n:
            raise RuntimeError(f"h2load: not all {n} requests answered 2xx:\n{out}")
    return load


def cache_figures(cmd_for_port, headers, workdir, env, tag, conns=CACHE_CONNS):
    """Per request: instructions, first-level data misses, L2 misses, mispredicted branches."""
    port = bench.free_port()
    # The warm-up reaches every connection twice before the counters start.
    ev = count(cmd_for_port(port), port, h1_concurrent_load(port, headers, conns), workdir, env,
               tag, MANY_CACHE, max(FEW_CACHE, 2 * conns), CACHE_SIM)
    per = lambda *names: sum(ev.get(n, 0) for n in names) / MANY_CACHE  # noqa: E731
    return {"instructions": per("Ir"), "L1 data misses": per("D1mr", "D1mw"),
            "L2 misses": per("DLmr", "DLmw", "ILmr"), "L2 write misses": per("DLmw"),
            "mispredicted branches": per("Bcm", "Bim")}


def read_budget(path):
    budget = {}
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                name, value = line.split()
                budget[name] = int(value)
    return budget


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--anygate", required=True)
    ap.add_argument("--bare", required=True)
    ap.add_argument("--check", help="budget file: fail when a scenario costs more")
    ap.add_argument("--out", help="write the figures to this file (markdown)")
    ap.add_argument("--h2", action="store_true", help="count HTTP/2 over TLS too (no budget)")
    ap.add_argument("--cache", action="store_true",
                    help="simulate caches and branches under concurrent connections too (no budget)")
    ap.add_argument("--cache-conns", default=str(CACHE_CONNS),
                    help="with --cache: connections kept busy, a comma-separated list (default 50)")
    args = ap.parse_args()

    workdir = tempfile.mkdtemp(prefix="anygate-callgrind-")
    backend_port = bench.free_port()
    backend = bench.start_nginx("nginx-backend", bench.NGINX_BACKEND, workdir, port=backend_port)
    addr = f"127.0.0.1:{backend_port}"
    env = {"BENCH_TOKEN_KEYS": bench.TOKEN_KEYS, "BENCH_WX_SECRET": "bench-secret", "RUST_LOG": "warn",
           # glibc copies big blocks with `rep movsb` when the CPU has ERMS, which callgrind counts
           # byte by byte: a 10 KB copy would count 10,000 "instructions" on one CPU and 300 on
           # another. Without it, the count is the same on every x86-64 machine valgrind runs on.
           "GLIBC_TUNABLES": "glibc.cpu.x86_rep_movsb_threshold=4194304:glibc.cpu.x86_rep_stosb_threshold=4194304"}
    try:
        token = bench.mint_token(args.anygate, workdir, bench.free_port(), addr)
        http = [f"Host: {bench.HOST}", f"Authorization: Bearer {token}", "User-Agent: callgrind"]
        sdk = http + ["X-WX-SERVICE: tcbanyservice", "X-Vm-Service: lhins-bench"]

        def anygate(port, chain="full"):
            # chain "routing": the routing plugin alone, no admin listener, anygate as a Pingora
            # application before the SPEC's per-request work (its own budget line).
            cfg = os.path.join(workdir, f"anygate-{chain}-{port}.yaml")
            with open(cfg, "w") as f:
                f.write(bench.anygate_config(port, addr, 1, workdir, 1, chain=chain,
                                             admin_port=bench.free_port() if chain == "full" else None))
            return [args.anygate, "run", "--no-watch", "-c", cfg]

        def bare(port):
            return [args.bare, f"127.0.0.1:{port}", addr, "1"]

        def nginx(port):
            # One process (no master), so callgrind sees the worker's instructions.
            path = contenders.nginx_conf(workdir, port, 1, addr)
            return ["nginx", "-p", workdir, "-c", path, "-g", "daemon off; master_process off;"]

        scenarios = [
            ("http", anygate, request("/api/hello", http)),
            ("sdk", anygate, request("/api/hello", sdk)),
            ("routing", lambda port: anygate(port, "routing"), request("/api/hello", http)),
            ("bare-pingora", bare, request("/api/hello", http)),
            ("nginx", nginx, request("/api/hello", http)),
        ]
        results = {}
        for name, cmd, raw in scenarios:
            results[name] = per_request(cmd, raw, workdir, env, name)
            print(f"{name:14} {results[name]:10.0f} instructions per request", flush=True)
        if args.h2:
            cert = bench.make_cert(workdir)

            def anygate_h2(port):
                cfg = os.path.join(workdir, f"anygate-h2-{port}.yaml")
                with open(cfg, "w") as f:
                    f.write(bench.anygate_config(bench.free_port(), addr, 1, workdir, 1,
                                                 tls=dict(cert, port=port), admin_port=bench.free_port()))
                return [args.anygate, "run", "--no-watch", "-c", cfg]

            def bare_h2(port):
                return [args.bare, f"127.0.0.1:{port}", addr, "1", "--tls", cert["cert"], cert["key"]]

            h2_headers = [f":authority: {bench.HOST}", f"authorization: Bearer {token}"]
            for name, cmd in [("h2", anygate_h2), ("h2-bare-pingora", bare_h2)]:
                results[name] = per_h2_request(cmd, h2_headers, workdir, env, name)
                print(f"{name:14} {results[name]:10.0f} instructions per request", flush=True)
        if args.cache:
            # h2load sends `:authority` as `Host` over HTTP/1.1.
            h1 = [f":authority: {bench.HOST}", f"authorization: Bearer {token}", "user-agent: callgrind"]
            for conns in [int(c) for c in args.cache_conns.split(",")]:
                for name, cmd in [("cache", anygate), ("cache-bare-pingora", bare)]:
                    figures = cache_figures(cmd, h1, workdir, env, f"{name}-{conns}", conns)
                    print(f"{name:18} " + ", ".join(f"{k} {v:,.1f}" for k, v in figures.items())
                          + f" per request ({conns} connections)", flush=True)
    finally:
        backend.stop()

    print(f"callgrind dumps (for callgrind_annotate) in {workdir}")
    budget = read_budget(args.check) if args.check else {}
    failed = [n for n, b in budget.items() if n in results and results[n] > b]
    if args.out:
        with open(args.out, "w") as f:
            f.write("| scenario | instructions per request | budget |\n|---|---|---|\n")
            for n, v in results.items():
                f.write(f"| {n} | {v:.0f} | {budget.get(n, '-')} |\n")
    for n in budget:
        if n in results:
            verdict = "OVER BUDGET" if n in failed else "ok"
            print(f"budget {n}: {results[n]:.0f} of {budget[n]} ({results[n] / budget[n]:.1%}) {verdict}")
    if failed:
        print("callgrind gate: the hot path got more expensive than bench/budget.txt allows. "
              "Make it cheaper, or raise the budget in the same commit and say why.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
