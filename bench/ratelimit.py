#!/usr/bin/env python3
"""What the shared rate limit (SPEC §13, `rate_limit` with `store: { redis }`) adds per request.

Three anygate configs in front of the same nginx backend, interleaved A B C A B C ...:
`none` (no rate_limit), `memory` (the in-memory limiter) and `redis` (the limiter in a real
redis-server on 127.0.0.1), each with a limit no request reaches. wrk at 1 connection (the
latency a decision adds to one request) and 50 (under load). Reports medians of requests/s,
p50 and p99, and what `redis` adds over `none` and over `memory`.

    python3 bench/ratelimit.py --anygate target/release/anygate [--seconds 5] [--rounds 3]

It measures; it does not judge: it exits 0 whatever the numbers (but fails if any decision
fell back to `on_error`, which would not measure Redis at all).
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as b  # noqa: E402  (shared helpers: Server, free_port, wrk, start_nginx, median, log)

CHAIN = {
    "none": "",
    "memory": """  - name: rate_limit
    per_second: 1000000000
""",
    "redis": """  - name: rate_limit
    per_second: 1000000000
    store: { redis: { url_env: BENCH_REDIS_URL, timeout: 50ms, on_error: allow } }
""",
}

CONFIG = """env: bench-env
listen: {{ http: "127.0.0.1:{port}", admin: "127.0.0.1:{admin}" }}
server: {{ threads: {threads}, grace_period: 0s, graceful_shutdown_timeout: 1s, upgrade_sock: "{workdir}/rl-{port}.sock", pid_file: "{workdir}/rl-{port}.pid" }}
instances:
  - {{ id: lhins-bench, address: "{backend}" }}
routes:
  - {{ domain: "*", path: /api, instance: lhins-bench }}
plugins:
  - name: request_id
  - name: identity
    mode: none
{limit}  - name: routing
  - name: forwarded_for
  - name: upstream_info
  - name: metrics
"""


def store_errors(admin):
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith("anygate_rate_limit_store_errors_total "):
            return float(line.split()[1])
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--anygate", required=True)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="anygate worker threads")
    ap.add_argument("--out", default=None, help="also write the table (Markdown) here")
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="anygate-bench-rl-")
    servers = []
    results = []
    try:
        backend_port = b.free_port()
        servers.append(b.start_nginx("nginx-backend", b.NGINX_BACKEND, workdir, port=backend_port))
        redis_port = b.free_port()
        servers.append(b.Server("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                          "--save", "", "--appendonly", "no"], redis_port, workdir))
        env = {"BENCH_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "RUST_LOG": "warn"}
        contenders = {}
        for name, limit in CHAIN.items():
            port, admin = b.free_port(), b.free_port()
            cfg = os.path.join(workdir, f"{name}.yaml")
            with open(cfg, "w") as f:
                f.write(CONFIG.format(port=port, admin=admin, threads=args.threads, workdir=workdir,
                                      backend=f"127.0.0.1:{backend_port}", limit=limit))
            srv = b.Server(f"anygate-{name}", [args.anygate, "run", "-c", cfg], port, workdir, env)
            srv.admin = admin
            contenders[name] = srv
            servers.append(srv)
        headers = ["Host: bench.test", "User-Agent: wrk"]
        fell_back = 0.0
        for conns in (1, 50):
            for srv in contenders.values():  # warm up connections and the script cache
                b.wrk(f"http://127.0.0.1:{srv.port}/api/hello", conns, 1, headers)
            before = store_errors(contenders["redis"].admin)
            for r in range(args.rounds):
                for name, srv in contenders.items():
                    res = b.wrk(f"http://127.0.0.1:{srv.port}/api/hello", conns, args.seconds, headers)
                    res.update(contender=name, conns=conns, round=r)
                    results.append(res)
                    b.log(f"{name:7} c={conns:<3} r={r}: {res['rps']:9.0f} rps p50 {res['p50']:.3f} ms "
                          f"p99 {res['p99']:.3f} ms errors {res['errors']}")
            fell_back += store_errors(contenders["redis"].admin) - before
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    lines = [
        f"Shared rate limit, {platform.machine()}, {os.cpu_count()} CPUs, anygate {args.threads} worker thread(s), "
        f"redis-server {b.version(['redis-server', '--version'])}; wrk -t1, {args.rounds} rounds of "
        f"{args.seconds} s, medians.",
        "",
        "| connections | config | requests/s | p50 ms | p99 ms | p50 added by redis | p99 added by redis |",
        "|---|---|---|---|---|---|---|",
    ]
    for conns in (1, 50):
        med = {}
        for name in CHAIN:
            rows = [x for x in results if x["contender"] == name and x["conns"] == conns]
            med[name] = {k: b.median([x[k] for x in rows]) for k in ("rps", "p50", "p99")}
        for name in CHAIN:
            m = med[name]
            if name == "redis":
                added = (f"{m['p50'] - med['none']['p50']:+.3f} ms (vs memory {m['p50'] - med['memory']['p50']:+.3f})",
                         f"{m['p99'] - med['none']['p99']:+.3f} ms (vs memory {m['p99'] - med['memory']['p99']:+.3f})")
            else:
                added = ("", "")
            lines.append(f"| {conns} | {name} | {m['rps']:.0f} | {m['p50']:.3f} | {m['p99']:.3f} | {added[0]} | {added[1]} |")
    lines += ["", f"Decisions that fell back to on_error during the measured runs: {fell_back:.0f}."]
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    if fell_back != 0:
        sys.exit("the redis contender fell back to on_error: this run did not measure Redis")


if __name__ == "__main__":
    main()
