#!/usr/bin/env python3
"""anygate's side-by-side benchmark: anygate (full edge chain), nginx as a reverse proxy doing
the closest equivalent work, and a bare Pingora proxy, all in front of the same nginx backend on
127.0.0.1, interleaved A B C A B C ..., reported as medians and ratios against nginx.

It measures; it does not judge: it exits 0 whatever the numbers. Run it through `bench/run`.
"""

import argparse
import datetime
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "bench-env.service.tcloudbase.com"
TOKEN_KEYS = "bench-signing-key-0123456789abcdef0123456789"
APPID = "wxbench0000000001"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}) before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def descendants(pid):
    """pid and all its descendants (nginx: master and workers)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid):
    """user+system CPU of a process tree, in seconds."""
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            pass
    return total / CLK_TCK


class Server:
    def __init__(self, name, cmd, port, workdir, env=None):
        self.name, self.port = name, port
        self.logfile = open(os.path.join(workdir, f"{name}.log"), "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=self.logfile, stderr=subprocess.STDOUT, env=full_env,
                                     start_new_session=True)
        wait_port(port, self.proc)

    def cpu(self):
        return cpu_seconds(self.proc.pid)

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        self.logfile.close()


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_duration_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)$", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")


def wrk(url, conns, seconds, headers):
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "requests": int(total.group(1)) if total else 0,
        "p50": parse_duration_ms(p50.group(1)) if p50 else float("nan"),
        "p99": parse_duration_ms(p99.group(1)) if p99 else float("nan"),
        "errors": (int(non2xx.group(1)) if non2xx else 0) + (sum(int(x) for x in sock.groups()) if sock else 0),
        "raw": out,
    }


def anygate_config(port, backend, threads, workdir, routes, chain="full"):
    lines = [
        "env: bench-env",
        f'listen: {{ http: "127.0.0.1:{port}" }}',
        f"server: {{ threads: {threads}, grace_period: 0s, graceful_shutdown_timeout: 1s, "
        f'upgrade_sock: "{workdir}/anygate-{port}.sock", pid_file: "{workdir}/anygate-{port}.pid" }}',
        "instances:",
    ]
    if routes == 1:
        lines.append(f'  - {{ id: lhins-bench, address: "{backend}" }}')
        lines += ["routes:", "  - { domain: default, path: /api, instance: lhins-bench }"]
    else:
        for i in range(routes):
            lines.append(f'  - {{ id: lhins-{i:05d}, address: "{backend}" }}')
        lines.append("routes:")
        for i in range(routes):
            lines.append(f"  - {{ domain: default, path: /svc{i}/api, instance: lhins-{i:05d} }}")
    if chain == "full":
        lines += [
            "plugins:",
            "  - name: request_id",
            "  - name: identity",
            "    mode: session",
            "    session:",
            f"      apps: [{{ appid: {APPID}, secret_env: BENCH_WX_SECRET, role: owner }}]",
            "      token_keys_env: BENCH_TOKEN_KEYS",
            "  - name: routing",
            "  - name: forwarded_for",
            "  - name: upstream_info",
            "  - name: access_log",
            f'    path: "{workdir}/anygate-access-{port}.log"',
            "  - name: metrics",
        ]
    return "\n".join(lines) + "\n"


NGINX_PROXY = r"""
worker_processes {workers};
pid {workdir}/nginx-proxy-{port}.pid;
error_log {workdir}/nginx-proxy-{port}.error.log warn;
events {{ worker_connections 16384; }}
http {{
    log_format json escape=json '{{"time":"$time_iso8601","request_id":"$request_id",'
        '"client":"$remote_addr","method":"$request_method","host":"$host","path":"$request_uri",'
        '"status":$status,"upstream_status":"$upstream_status",'
        '"upstream_time":"$upstream_response_time","duration":$request_time,'
        '"bytes":$bytes_sent,"user_agent":"$http_user_agent"}}';
    access_log {workdir}/nginx-access-{port}.log json buffer=64k flush=1s;
    keepalive_requests 1000000;
    upstream backend {{ server {backend}; keepalive 1024; keepalive_requests 1000000; }}
    # SDK calls: X-Vm-Service names the instance.
    map $http_x_vm_service $instance_ok {{ lhins-bench 1; default 0; }}
    server {{
        listen 127.0.0.1:{port} backlog=8192;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Host $host;
        proxy_set_header X-Cloudbase-Request-Id $request_id;
        add_header X-Cloudbase-Request-Id $request_id always;
        add_header X-Cloudbase-Upstream-Status-Code $upstream_status always;
        add_header X-Cloudbase-Upstream-Timecost $upstream_response_time always;
        add_header X-Cloudbase-Upstream-Type Lighthouse always;
        # HTTP access: the trigger prefix /api is replaced by / (nginx's idiomatic prefix strip,
        # no regex); SDK calls (X-WX-SERVICE) go to a named location with the path unchanged.
        location /api/ {{
            error_page 418 = @sdk;
            if ($http_x_wx_service) {{ return 418; }}
            proxy_pass http://backend/;
        }}
        location @sdk {{
            if ($instance_ok = 0) {{ return 404; }}
            proxy_pass http://backend;
        }}
    }}
}}
"""

NGINX_BACKEND = r"""
worker_processes 1;
pid {workdir}/nginx-backend.pid;
error_log {workdir}/nginx-backend.error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} backlog=8192;
        location / {{ return 200 "ok\n"; }}
    }}
}}
"""


def start_nginx(name, template, workdir, **kw):
    path = os.path.join(workdir, f"{name}.conf")
    with open(path, "w") as f:
        f.write(template.format(workdir=workdir, **kw))
    return Server(name, ["nginx", "-p", workdir, "-c", path, "-g", "daemon off;"], kw["port"], workdir)


def mint_token(anygate, workdir, port, backend):
    cfg = os.path.join(workdir, "token.yaml")
    with open(cfg, "w") as f:
        f.write(anygate_config(port, backend, 1, workdir, 1))
    env = dict(os.environ, BENCH_TOKEN_KEYS=TOKEN_KEYS, BENCH_WX_SECRET="bench-secret")
    out = subprocess.run([anygate, "token", "-c", cfg, "--openid", "oBENCH0000000000000000001", "--ttl", "24h"],
                         capture_output=True, text=True, env=env, check=True)
    return out.stdout.strip()


def measure_reload(anygate, workdir, backend, routes=10_000):
    """Writes a 10,000-route file over the running one; time until the new route answers."""
    port = free_port()
    cfg = os.path.join(workdir, "reload.yaml")
    with open(cfg, "w") as f:
        f.write(anygate_config(port, backend, 1, workdir, routes, chain="core"))
    env = {"BENCH_TOKEN_KEYS": TOKEN_KEYS, "BENCH_WX_SECRET": "bench-secret", "RUST_LOG": "info"}
    srv = Server("anygate-reload", [anygate, "run", "-c", cfg], port, workdir, env)
    try:
        text = anygate_config(port, backend, 1, workdir, routes, chain="core").replace(
            "/svc0/api", "/svc-new/api")
        tmp = cfg + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        start = time.monotonic()
        os.rename(tmp, cfg)
        deadline = start + 30
        live = None
        while time.monotonic() < deadline:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=1)
                s.sendall(f"GET /svc-new/api/x HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
                head = s.recv(64)
                s.close()
                if head.startswith(b"HTTP/1.1 200"):
                    live = (time.monotonic() - start) * 1000
                    break
            except OSError:
                pass
            time.sleep(0.005)
        with open(os.path.join(workdir, "anygate-reload.log"), errors="replace") as f:
            m = re.findall(r"reloaded: generation \d+ in (\d+) ms", f.read())
        return {"live_ms": live, "compile_ms": float(m[-1]) if m else None}
    finally:
        srv.stop()


def median(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a few seconds: one round, 1 s runs (CI)")
    ap.add_argument("--anygate", required=True)
    ap.add_argument("--bare", required=True)
    ap.add_argument("--profile", default="release")
    ap.add_argument("--out", default=os.path.join(BENCH, "RESULTS.md"))
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    seconds, rounds = (1, 1) if args.quick else (args.seconds, args.rounds)
    worker_counts = [1] if args.quick else [1, 2]
    conn_counts = [50] if args.quick else [50, 500]

    workdir = tempfile.mkdtemp(prefix="anygate-bench-")
    servers = []
    results = []  # dicts: scenario, contender, workers, conns, round, rps, p50, p99, cpu_us, errors
    try:
        backend_port = free_port()
        servers.append(start_nginx("nginx-backend", NGINX_BACKEND, workdir, port=backend_port))
        backend = f"127.0.0.1:{backend_port}"
        token = mint_token(args.anygate, workdir, free_port(), backend)
        env = {"BENCH_TOKEN_KEYS": TOKEN_KEYS, "BENCH_WX_SECRET": "bench-secret", "RUST_LOG": "warn"}
        http_headers = [f"Host: {HOST}", f"Authorization: Bearer {token}", "User-Agent: wrk"]
        sdk_headers = http_headers + ["X-WX-SERVICE: tcbanyservice", "X-Vm-Service: lhins-bench"]
        for workers in worker_counts:
            contenders = {}
            p = free_port()
            cfg = os.path.join(workdir, f"anygate-{workers}.yaml")
            with open(cfg, "w") as f:
                f.write(anygate_config(p, backend, workers, workdir, 1))
            contenders["anygate"] = Server(f"anygate-{workers}", [args.anygate, "run", "-c", cfg], p, workdir, env)
            p = free_port()
            contenders["nginx"] = start_nginx(f"nginx-proxy-{workers}", NGINX_PROXY, workdir, port=p,
                                              workers=workers, backend=backend)
            p = free_port()
            contenders["pingora"] = Server(f"bare-{workers}", [args.bare, f"127.0.0.1:{p}", backend, str(workers)],
                                           p, workdir)
            if not args.quick:
                p = free_port()
                cfg = os.path.join(workdir, f"anygate-10k-{workers}.yaml")
                with open(cfg, "w") as f:
                    f.write(anygate_config(p, backend, workers, workdir, 10_000))
                contenders["anygate-10k"] = Server(f"anygate-10k-{workers}", [args.anygate, "run", "-c", cfg], p,
                                                   workdir, env)
            servers.extend(contenders.values())
            scenarios = [
                ("http", "/api/hello", http_headers, ["anygate", "nginx", "pingora"]),
                ("sdk", "/api/hello", sdk_headers, ["anygate", "nginx", "pingora"]),
            ]
            if not args.quick:
                scenarios.append(("http-10k", "/svc5000/api/hello", http_headers, ["anygate-10k"]))
            for conns in conn_counts:
                for scenario, path, headers, names in scenarios:
                    for name in names:  # warm up pools and caches
                        srv = contenders[name]
                        wrk(f"http://127.0.0.1:{srv.port}{path}", conns, 1, headers)
                    for r in range(rounds):
                        for name in names:
                            srv = contenders[name]
                            before = srv.cpu()
                            res = wrk(f"http://127.0.0.1:{srv.port}{path}", conns, seconds, headers)
                            cpu = srv.cpu() - before
                            res.update(scenario=scenario, contender=name, workers=workers, conns=conns, round=r,
                                       cpu_us=cpu / res["requests"] * 1e6 if res["requests"] else float("nan"))
                            results.append(res)
                            log(f"{scenario:8} {name:11} w={workers} c={conns:<3} r={r}: {res['rps']:9.0f} rps "
                                f"p50 {res['p50']:.2f} ms p99 {res['p99']:.2f} ms cpu {res['cpu_us']:.1f} us/req "
                                f"errors {res['errors']}")
            for name, srv in contenders.items():
                srv.stop()
                servers.remove(srv)
        reload = measure_reload(args.anygate, workdir, backend) if not args.quick else None
        import streams  # bench/streams.py: redis-benchmark through TCP proxies
        stream_results = streams.run(args.anygate, workdir, args.quick)
    finally:
        for s in servers:
            s.stop()
    write_report(args, results, reload, seconds, rounds)
    streams.append_report(args.out, stream_results)
    shutil.rmtree(workdir, ignore_errors=True)


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def write_report(args, results, reload, seconds, rounds):
    cpu_model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "unknown")
    except OSError:
        pass
    rev = version(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    lines = [
        "# Benchmark results",
        "",
        f"Written by `bench/run{' --quick' if args.quick else ''}` on "
        f"{datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        f"- machine: {os.cpu_count()} CPUs ({cpu_model}), {platform.system()} {platform.release()}",
        f"- anygate: git {rev}, `{args.profile}` profile; {version(['rustc', '--version'])}",
        f"- {version(['nginx', '-v'])}; {version(['wrk', '--version'])}",
        f"- every run: `wrk -t1 -c<conns> -d{seconds}s --latency` on 127.0.0.1, {rounds} round(s) per contender, "
        "interleaved A B C A B C; medians below. The backend is one nginx worker answering `200 ok`.",
        "- cpu = user+system time of the proxy's processes during the run, divided by the requests served.",
        "- anygate: full edge chain (request_id, identity in session mode verifying a Bearer token on every "
        "request, routing with prefix strip, forwarded_for, upstream_info, access_log to a file, metrics).",
        "- nginx: proxy_pass to a keepalive upstream, prefix rewrite, X-Forwarded-For, `$request_id` up and down, "
        "`add_header` of upstream status, time and type, JSON access log to a file (buffered). It verifies no token.",
        "- pingora: a bare `ProxyHttp` with only `upstream_peer` (bench/src/bare_proxy.rs), same profile and allocator.",
        "",
    ]
    groups = {}
    for r in results:
        groups.setdefault((r["scenario"], r["workers"], r["conns"]), {}).setdefault(r["contender"], []).append(r)
    lines += [
        "| scenario | workers | conns | contender | req/s | p50 ms | p99 ms | cpu µs/req | errors | "
        "req/s vs nginx | p99 vs nginx | cpu vs nginx | vs pingora |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    med = {}
    for key in sorted(groups):
        for name, rs in sorted(groups[key].items()):
            med[key + (name,)] = {k: median([r[k] for r in rs]) for k in ("rps", "p50", "p99", "cpu_us")}
            med[key + (name,)]["errors"] = sum(r["errors"] for r in rs)
    for key in sorted(groups):
        scenario, workers, conns = key
        base_key = ("http" if scenario == "http-10k" else scenario, workers, conns)
        nginx = med.get(base_key + ("nginx",))
        bare = med.get(base_key + ("pingora",))
        for name in sorted(groups[key]):
            m = med[key + (name,)]
            def ratio(a, b):
                return f"{a / b:.2f}×" if b and a == a and b == b else "-"
            vs_nginx = (ratio(m["rps"], nginx["rps"]), ratio(m["p99"], nginx["p99"]), ratio(m["cpu_us"], nginx["cpu_us"])) \
                if nginx and name != "nginx" else ("", "", "")
            vs_bare = ratio(m["rps"], bare["rps"]) if bare and name not in ("pingora",) else ""
            lines.append(f"| {scenario} | {workers} | {conns} | {name} | {m['rps']:.0f} | {m['p50']:.2f} | "
                         f"{m['p99']:.2f} | {m['cpu_us']:.1f} | {m['errors']} | {vs_nginx[0]} | {vs_nginx[1]} | "
                         f"{vs_nginx[2]} | {vs_bare} |")
    lines.append("")
    tenk = []
    for (scenario, workers, conns, name), m in med.items():
        if scenario == "http-10k":
            one = med.get(("http", workers, conns, "anygate"))
            if one:
                tenk.append(f"- 10,000 instances and routes, {workers} worker(s), {conns} conns: "
                            f"{m['rps'] / one['rps']:.2f}× the requests/s of the 1-route config")
    if tenk:
        lines += ["## 10,000 routes", ""] + tenk + [""]
    if reload:
        lines += ["## Reload of a 10,000-route file", "",
                  f"- compile and publish (from the log): {reload['compile_ms']} ms",
                  f"- rename of the file to the new route answering: "
                  f"{reload['live_ms']:.0f} ms" if reload["live_ms"] else "- the new route never answered", ""]
    lines += ["## Raw runs", "", "| scenario | workers | conns | contender | round | req/s | p50 ms | p99 ms | cpu µs/req |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['scenario']} | {r['workers']} | {r['conns']} | {r['contender']} | {r['round']} | "
                     f"{r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['cpu_us']:.1f} |")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
