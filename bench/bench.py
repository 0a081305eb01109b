#!/usr/bin/env python3
"""anygate's side-by-side benchmark: anygate (full edge chain), nginx, haproxy and Caddy doing
the closest equivalent work, and a bare Pingora proxy tuned the way anygate runs Pingora, all
in front of the same nginx backend on 127.0.0.1, interleaved A B C D E A B C D E ..., reported
as medians and ratios (bench/README.md).

It measures; it does not judge: it exits 0 whatever the numbers. Run it through `bench/run`.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import contenders  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "bench-env.service.tcloudbase.com"
TOKEN_KEYS = "bench-signing-key-0123456789abcdef0123456789"
APPID = "wxbench0000000001"
NGINX_BACKEND = contenders.NGINX_BACKEND
PROXIES = ["anygate", "pingora", "nginx", "haproxy", "caddy"]


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
    def __init__(self, name, cmd, port, workdir, env=None, tls_port=None):
        self.name, self.port, self.tls_port = name, port, tls_port
        self.logfile = open(os.path.join(workdir, f"{name}.log"), "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=self.logfile, stderr=subprocess.STDOUT, env=full_env,
                                     start_new_session=True)
        wait_port(port, self.proc)
        if tls_port:
            wait_port(tls_port, self.proc)

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
    }


def h2load(url, conns, streams, seconds, headers):
    """HTTP/2 over TLS: `conns` connections with `streams` concurrent streams each."""
    cmd = ["h2load", "-c", str(conns), "-m", str(streams), "-D", str(seconds)]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored",
                     out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "requests": int(done.group(1)) if done else 0,
        "p50": parse_duration_ms(mean.group(1)) if mean else float("nan"),  # h2load gives the mean
        "p99": float("nan"),
        "errors": (int(done.group(3)) + int(done.group(4))) if done else 0,
    }


def anygate_config(port, backend, threads, workdir, routes, chain="full", tls=None, admin_port=None):
    """`chain`: "full" (the edge chain the benchmark measures), "routing" (the routing plugin
    alone: what anygate costs as a Pingora application before the SPEC's per-request work), or
    "core" (no `plugins` key: the default chain)."""
    listen = f'http: "127.0.0.1:{port}"'
    if tls:
        listen += f', https: "127.0.0.1:{tls["port"]}"'
    if admin_port:
        listen += f', admin: "127.0.0.1:{admin_port}"'
    lines = [
        "env: bench-env",
        f"listen: {{ {listen} }}",
        f"server: {{ threads: {threads}, grace_period: 0s, graceful_shutdown_timeout: 1s, "
        f'upgrade_sock: "{workdir}/anygate-{port}.sock", pid_file: "{workdir}/anygate-{port}.pid" }}',
    ]
    if tls:
        lines.append(f'tls: {{ default: {{ cert: "{tls["cert"]}", key: "{tls["key"]}" }} }}')
    lines.append("instances:")
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
    elif chain == "routing":
        lines += ["plugins:", "  - name: routing"]
    return "\n".join(lines) + "\n"


ANYGATE_ENV = {"BENCH_TOKEN_KEYS": TOKEN_KEYS, "BENCH_WX_SECRET": "bench-secret", "RUST_LOG": "warn"}


def start_nginx(name, template, workdir, **kw):
    path = os.path.join(workdir, f"{name}.conf")
    with open(path, "w") as f:
        f.write(template.format(workdir=workdir, **kw))
    return Server(name, ["nginx", "-p", workdir, "-c", path, "-g", "daemon off;"], kw["port"], workdir)


def make_cert(workdir):
    """A self-signed certificate for the bench host (load tools do not verify it)."""
    cert, key, pem = (os.path.join(workdir, n) for n in ("bench.crt", "bench.key", "bench.pem"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={HOST}",
                    "-addext", f"subjectAltName=DNS:{HOST},IP:127.0.0.1"],
                   check=True, capture_output=True)
    with open(pem, "w") as f:
        f.write(open(cert).read() + open(key).read())
    return {"cert": cert, "key": key, "pem": pem}


def start(name, workers, args, workdir, backend, tls=None):
    """Starts one contender; `tls` (a cert dict) adds an HTTPS listener."""
    port = free_port()
    t = dict(tls, port=free_port()) if tls else None
    tag = f"{name}-{workers}{'-tls' if tls else ''}"
    if name in ("anygate", "anygate-10k", "anygate-routing"):
        cfg = os.path.join(workdir, f"{tag}.yaml")
        with open(cfg, "w") as f:
            if name == "anygate-routing":
                # No admin listener either: no console buffer, no traffic figures.
                f.write(anygate_config(port, backend, workers, workdir, 1, chain="routing", tls=t))
            else:
                f.write(anygate_config(port, backend, workers, workdir, 10_000 if name == "anygate-10k" else 1,
                                       tls=t, admin_port=free_port()))
        return Server(tag, [args.anygate, "run", "--no-watch", "-c", cfg], port, workdir, ANYGATE_ENV,
                      t and t["port"])
    if name == "pingora":
        cmd = [args.bare, f"127.0.0.1:{t['port'] if t else port}", backend, str(workers)]
        if t:
            cmd += ["--tls", t["cert"], t["key"]]
        srv = Server(tag, cmd, t["port"] if t else port, workdir)
        srv.tls_port = t and t["port"]
        return srv
    if name == "nginx":
        path = contenders.nginx_conf(workdir, port, workers, backend, t)
        return Server(tag, ["nginx", "-p", workdir, "-c", path, "-g", "daemon off;"], port, workdir,
                      tls_port=t and t["port"])
    if name == "haproxy":
        path = contenders.haproxy_conf(workdir, t["port"] if t else port, workers, backend, t)
        srv = Server(tag, ["haproxy", "-db", "-f", path], t["port"] if t else port, workdir)
        srv.tls_port = t and t["port"]
        return srv
    if name == "caddy":
        path = contenders.caddy_conf(workdir, t["port"] if t else port, backend, t)
        srv = Server(tag, ["caddy", "run", "--adapter", "caddyfile", "--config", path],
                     t["port"] if t else port, workdir, {"GOMAXPROCS": str(workers), "HOME": workdir})
        srv.tls_port = t and t["port"]
        return srv
    raise ValueError(name)


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
    env = dict(ANYGATE_ENV, RUST_LOG="info")
    srv = Server("anygate-reload", [anygate, "run", "-c", cfg], port, workdir, env)
    try:
        text = anygate_config(port, backend, 1, workdir, routes, chain="core").replace("/svc0/api", "/svc-new/api")
        tmp = cfg + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        start_t = time.monotonic()
        os.rename(tmp, cfg)
        deadline = start_t + 30
        live = None
        while time.monotonic() < deadline:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=1)
                s.sendall(f"GET /svc-new/api/x HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
                head = s.recv(64)
                s.close()
                if head.startswith(b"HTTP/1.1 200"):
                    live = (time.monotonic() - start_t) * 1000
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


def run_rounds(results, scenario, servers, names, workers, conns, rounds, seconds, load):
    """Interleaved rounds of `load(server)` over `names`, after a warm-up run each."""
    for name in names:
        load(servers[name], 1)
    for r in range(rounds):
        for name in names:
            srv = servers[name]
            before = srv.cpu()
            res = load(srv, seconds)
            cpu = srv.cpu() - before
            res.update(scenario=scenario, contender=name, workers=workers, conns=conns, round=r,
                       cpu_us=cpu / res["requests"] * 1e6 if res["requests"] else float("nan"))
            results.append(res)
            log(f"{scenario:16} {name:11} w={workers} c={conns:<3} r={r}: {res['rps']:9.0f} rps "
                f"p50 {res['p50']:.2f} ms p99 {res['p99']:.2f} ms cpu {res['cpu_us']:.1f} us/req errors {res['errors']}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a few seconds per part: one round, 1 s runs (CI)")
    ap.add_argument("--anygate", required=True)
    ap.add_argument("--bare", required=True)
    ap.add_argument("--profile", default="release")
    ap.add_argument("--out", default=os.path.join(BENCH, "RESULTS.md"))
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", help="comma-separated parts: http,tls,idle,reload,streams (default: all)")
    args = ap.parse_args()
    quick = args.quick
    seconds, rounds = (1, 1) if quick else (args.seconds, args.rounds)
    parts = set((args.only or "http,tls,idle,reload,streams").split(","))
    worker_counts = [1] if quick else [1, 2]
    conn_counts = [50] if quick else [50, 500]
    proxies = [p for p in PROXIES if p != "caddy" or shutil.which("caddy")]

    workdir = tempfile.mkdtemp(prefix="anygate-bench-")
    import idle  # noqa: E402  (needs this module's helpers)
    report = {"results": [], "idle": [], "reload": None, "streams": None, "proxies": proxies,
              "seconds": seconds, "rounds": rounds}
    results = report["results"]
    backend_srv = start_nginx("nginx-backend", NGINX_BACKEND, workdir, port=free_port())
    try:
        backend = f"127.0.0.1:{backend_srv.port}"
        token = mint_token(args.anygate, workdir, free_port(), backend)
        http_headers = [f"Host: {HOST}", f"Authorization: Bearer {token}", "User-Agent: wrk"]
        sdk_headers = http_headers + ["X-WX-SERVICE: tcbanyservice", "X-Vm-Service: lhins-bench"]
        cert = make_cert(workdir)
        for workers in worker_counts:
            if "http" in parts:
                servers = {n: start(n, workers, args, workdir, backend) for n in proxies}
                if not quick:
                    for extra in ("anygate-10k", "anygate-routing"):
                        servers[extra] = start(extra, workers, args, workdir, backend)
                try:
                    for conns in conn_counts:
                        for scenario, path, headers, names in [
                            ("http", "/api/hello", http_headers,
                             proxies + ([] if quick else ["anygate-routing"])),
                            ("sdk", "/api/hello", sdk_headers, proxies),
                        ] + ([] if quick else [("http-10k", "/svc5000/api/hello", http_headers, ["anygate-10k"])]):
                            run_rounds(results, scenario, servers, names, workers, conns, rounds, seconds,
                                       lambda s, d, p=path, h=headers, c=conns:
                                       wrk(f"http://127.0.0.1:{s.port}{p}", c, d, h))
                finally:
                    for s in servers.values():
                        s.stop()
            if "tls" in parts:
                servers = {n: start(n, workers, args, workdir, backend, tls=cert) for n in proxies}
                try:
                    url = lambda s: f"https://127.0.0.1:{s.tls_port}/api/hello"  # noqa: E731
                    run_rounds(results, "https", servers, proxies, workers, 50, rounds, seconds,
                               lambda s, d: wrk(url(s), 50, d, http_headers))
                    run_rounds(results, "https-handshake", servers, proxies, workers, 50, rounds, seconds,
                               lambda s, d: wrk(url(s), 50, d, http_headers + ["Connection: close"]))
                    run_rounds(results, "h2", servers, proxies, workers, 50, rounds, seconds,
                               lambda s, d: h2load(url(s), 50, 10, d, [f":authority: {HOST}",
                                                                         f"authorization: Bearer {token}"]))
                finally:
                    for s in servers.values():
                        s.stop()
        if "idle" in parts:
            sizes = [200] if quick else [1000, 10_000]
            for n in sizes:
                for name in proxies:
                    if name == "haproxy" and n > 9000:
                        report["idle"].append({"contender": name, "conns": n, "failed": (
                            "not run: haproxy reserves two descriptors per connection, and the "
                            "open-files limit here (20000) caps it at 9,900 connections")})
                        continue
                    srv = start(name, 1, args, workdir, backend)
                    try:
                        r = idle.measure(srv, n, http_headers)
                        r.update(contender=name, conns=n)
                        report["idle"].append(r)
                        log(f"idle        {name:11} n={n}: {r['kb_per_conn']:.2f} KB per connection "
                            f"(RSS {r['before_kb']} -> {r['after_kb']} KB, errors {r['errors']})")
                    except RuntimeError as e:
                        report["idle"].append({"contender": name, "conns": n, "failed": str(e)})
                        log(f"idle        {name:11} n={n}: {e}")
                    finally:
                        srv.stop()
        if "reload" in parts and not quick:
            report["reload"] = measure_reload(args.anygate, workdir, backend)
        if "streams" in parts:
            import streams  # bench/streams.py: redis-benchmark through TCP proxies
            report["streams"] = streams.run(args.anygate, workdir, quick)
    finally:
        backend_srv.stop()
    import results as writer  # bench/results.py
    writer.write(args, report)
    if report["streams"] is not None:
        import streams
        streams.append_report(args.out, report["streams"])
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
