#!/usr/bin/env python3
"""The stream scenario of anygate's benchmark (SPEC §14): redis-benchmark against a real
redis-server directly, and through anygate's stream, haproxy in TCP mode and nginx's `stream`
module (each with one worker thread), interleaved A B C D A B C D ..., medians and ratios.

bench/bench.py calls run() and report() so the numbers land in the same results file; run it
alone (`python3 bench/streams.py --anygate target/release/anygate`) for just these numbers.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as b  # noqa: E402  (shared helpers: Server, free_port, cpu_seconds, log)

NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"

ANYGATE = """env: bench-env
listen: {{ http: "127.0.0.1:{http}" }}
server: {{ threads: 1, grace_period: 0s, graceful_shutdown_timeout: 1s, upgrade_sock: "{workdir}/anygate-stream.sock", pid_file: "{workdir}/anygate-stream.pid" }}
instances:
  - {{ id: redis, address: 127.0.0.1 }}
streams:
  - {{ name: redis, listen: "127.0.0.1:{port}", instance: redis, port: {redis}, allow: [127.0.0.1/32] }}
"""

HAPROXY = """global
    nbthread 1
    maxconn 4000
defaults
    mode tcp
    timeout connect 3s
    timeout client 10m
    timeout server 10m
frontend redis
    bind 127.0.0.1:{port}
    tcp-request connection accept if {{ src 127.0.0.1/32 }}
    tcp-request connection reject
    default_backend redis
backend redis
    server r1 127.0.0.1:{redis}
"""

NGINX = """load_module {module};
worker_processes 1;
pid {workdir}/nginx-stream.pid;
error_log {workdir}/nginx-stream.error.log warn;
events {{ worker_connections 10000; }}
stream {{
    server {{
        listen 127.0.0.1:{port};
        allow 127.0.0.1;
        deny all;
        proxy_timeout 10m;
        proxy_pass 127.0.0.1:{redis};
    }}
}}
"""


def redis_benchmark(port, requests, pipeline, conns=50):
    """Runs SET and GET; returns {test: {rps, p50, p99}}."""
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(conns), "-n", str(requests),
           "-P", str(pipeline), "-t", "set,get", "--csv"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    rows = {}
    for line in out.stdout.splitlines():
        f = [x.strip('"') for x in line.split(",")]
        if len(f) >= 7 and f[0] in ("SET", "GET"):
            rows[f[0]] = {"rps": float(f[1]), "p50": float(f[4]), "p99": float(f[6])}
    return rows, out


def start(servers, name, cmd, port, workdir, env=None):
    srv = b.Server(name, cmd, port, workdir, env)
    servers.append(srv)
    return srv


def run(anygate, workdir, quick):
    """Starts redis and the proxies, runs the rounds; returns a list of result dicts."""
    for tool in ("redis-server", "redis-benchmark", "haproxy"):
        if not b.shutil.which(tool):
            raise RuntimeError(f"{tool} is not installed (bench/run installs it)")
    requests = {1: 2000} if quick else {1: 100_000, 16: 1_000_000}
    rounds = 1 if quick else 3
    servers, results = [], []
    try:
        redis_port = b.free_port()
        start(servers, "redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no"], redis_port, workdir)
        contenders = {"direct": None}
        p = b.free_port()
        cfg = os.path.join(workdir, "anygate-stream.yaml")
        with open(cfg, "w") as f:
            f.write(ANYGATE.format(http=b.free_port(), port=p, redis=redis_port, workdir=workdir))
        contenders["anygate"] = start(servers, "anygate-stream", [anygate, "run", "-c", cfg], p, workdir, {"RUST_LOG": "warn"})
        p = b.free_port()
        cfg = os.path.join(workdir, "haproxy-stream.cfg")
        with open(cfg, "w") as f:
            f.write(HAPROXY.format(port=p, redis=redis_port))
        contenders["haproxy"] = start(servers, "haproxy-stream", ["haproxy", "-db", "-f", cfg], p, workdir)
        if os.path.exists(NGINX_STREAM_MODULE):
            p = b.free_port()
            cfg = os.path.join(workdir, "nginx-stream.conf")
            with open(cfg, "w") as f:
                f.write(NGINX.format(module=NGINX_STREAM_MODULE, port=p, redis=redis_port, workdir=workdir))
            contenders["nginx"] = start(servers, "nginx-stream", ["nginx", "-p", workdir, "-c", cfg, "-g", "daemon off;"], p,
                                        workdir)
        else:
            b.log(f"streams: no {NGINX_STREAM_MODULE} (Debian's libnginx-mod-stream): nginx left out")
        port_of = {name: (srv.port if srv else redis_port) for name, srv in contenders.items()}
        for pipeline, n in requests.items():
            for name in contenders:  # warm-up
                redis_benchmark(port_of[name], min(n, 10_000), pipeline)
            for r in range(rounds):
                for name, srv in contenders.items():
                    before = srv.cpu() if srv else None
                    rows, out = redis_benchmark(port_of[name], n, pipeline)
                    cpu = (srv.cpu() - before) if srv else None
                    if not rows:
                        b.log(f"streams: redis-benchmark through {name} gave nothing: {out.stdout}{out.stderr}")
                    for test, m in rows.items():
                        m.update(contender=name, pipeline=pipeline, test=test, round=r,
                                 cpu_us=cpu / (2 * n) * 1e6 if cpu is not None else float("nan"))
                        results.append(m)
                        b.log(f"stream   {name:8} P={pipeline:<2} {test} r={r}: {m['rps']:9.0f} rps "
                              f"p50 {m['p50']:.3f} ms p99 {m['p99']:.3f} ms cpu {m['cpu_us']:.1f} us/req")
    finally:
        for s in servers:
            s.stop()
    return results


def report(results):
    """Markdown lines for the results file."""
    if not results:
        return []
    lines = [
        "## Streams: redis-benchmark through a TCP proxy",
        "",
        "`redis-benchmark -c 50 -t set,get -P <pipeline>` against one redis-server on 127.0.0.1: directly, and "
        "through anygate's stream (1 thread, `allow` checked per connection), haproxy `mode tcp` (`nbthread 1`, "
        "a source ACL) and nginx's `stream` module (1 worker, `allow`), interleaved per round; medians. "
        "cpu = user+system time of the proxy per request (SET and GET counted).",
        "",
        "| pipeline | test | contender | req/s | p50 ms | p99 ms | cpu µs/req | vs direct | vs haproxy | vs nginx |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups = {}
    for r in results:
        groups.setdefault((r["pipeline"], r["test"], r["contender"]), []).append(r)
    med = {k: {f: statistics.median([x[f] for x in v]) for f in ("rps", "p50", "p99", "cpu_us")}
           for k, v in groups.items()}
    order = ["direct", "anygate", "haproxy", "nginx"]
    for pipeline, test in sorted({(k[0], k[1]) for k in med}, key=lambda k: (k[0], k[1] != "SET")):
        for name in order:
            m = med.get((pipeline, test, name))
            if not m:
                continue

            def vs(other):
                o = med.get((pipeline, test, other))
                return f"{m['rps'] / o['rps']:.2f}×" if o and o["rps"] and other != name else ""
            cpu = f"{m['cpu_us']:.1f}" if m["cpu_us"] == m["cpu_us"] else "-"
            lines.append(f"| {pipeline} | {test} | {name} | {m['rps']:.0f} | {m['p50']:.3f} | {m['p99']:.3f} | "
                         f"{cpu} | {vs('direct')} | {vs('haproxy')} | {vs('nginx')} |")
    lines.append("")
    return lines


def append_report(path, results):
    """Adds the stream section at the end of the results file bench.py wrote."""
    with open(path, "a") as f:
        f.write("\n" + "\n".join(report(results)) + "\n")
    b.log(f"added the stream scenario to {path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--anygate", required=True)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="anygate-bench-streams-")
    print("\n".join(report(run(args.anygate, workdir, args.quick))))
    b.shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
