"""Writes the benchmark's report (bench/RESULTS.md, or target/bench-quick.md for --quick):
medians of the interleaved rounds, ratios against nginx and the bare Pingora proxy, the idle
connection memory, and every raw run."""

import datetime
import os
import platform
import statistics
import subprocess

import bench


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "not installed"


def median(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def ratio(a, b):
    return f"{a / b:.2f}×" if b and a == a and b == b else "-"


def medians(results):
    groups = {}
    for r in results:
        groups.setdefault((r["scenario"], r["workers"], r["conns"]), {}).setdefault(r["contender"], []).append(r)
    med = {}
    for key, by_name in groups.items():
        for name, rs in by_name.items():
            m = {k: median([r[k] for r in rs]) for k in ("rps", "p50", "p99", "cpu_us")}
            m["errors"] = sum(r["errors"] for r in rs)
            med[key + (name,)] = m
    return groups, med


def targets(med, idle_rows):
    """The performance issue's targets, as measured in this run (1 worker)."""
    out = []

    def get(scenario, conns, name, workers=1):
        return med.get((scenario, workers, conns, name))

    idle = {(r["contender"], r["conns"]): r for r in idle_rows if "kb_per_conn" in r}
    for n in (10_000, 1_000, 200):
        a, g = idle.get(("anygate", n)), idle.get(("nginx", n))
        if a:
            out.append(f"| memory per idle keep-alive connection ({n:,} connections) | ≤ 16 KB (stretch ≤ 4 KB) "
                       f"| {a['kb_per_conn']:.1f} KB (nginx {g['kb_per_conn']:.1f} KB) |" if g else
                       f"| memory per idle keep-alive connection ({n:,} connections) | ≤ 16 KB | {a['kb_per_conn']:.1f} KB |")
            break
    for workers in (1, 2):
        a, n, p = get("http", 500, "anygate", workers), get("http", 500, "nginx", workers), get("http", 500, "pingora", workers)
        if a and n:
            out.append(f"| p99 at 500 connections, {workers} worker(s) | ≤ 1.5× nginx | {ratio(a['p99'], n['p99'])} "
                       f"({a['p99']:.1f} vs {n['p99']:.1f} ms; bare Pingora {ratio(p['p99'], n['p99']) if p else '-'}) |")
        a, n, p = get("http", 50, "anygate", workers), get("http", 50, "nginx", workers), get("http", 50, "pingora", workers)
        if a and n:
            out.append(f"| full chain req/s at 50 connections, {workers} worker(s) | ≥ 0.75× nginx | {ratio(a['rps'], n['rps'])} |")
        if a and p:
            out.append(f"| full chain req/s vs the bare Pingora proxy tuned the same way, {workers} worker(s) "
                       f"| ≥ 0.95× | {ratio(a['rps'], p['rps'])} |")
        if a and n:
            out.append(f"| CPU per request, 50 connections, {workers} worker(s) | ≤ 1.4× nginx | "
                       f"{ratio(a['cpu_us'], n['cpu_us'])} ({a['cpu_us']:.1f} vs {n['cpu_us']:.1f} µs) |")
    return out


# Sections appended by the long runs (bench/soak, bench/upgrade --results): a new benchmark
# report keeps the last of each rather than dropping them.
KEPT = ("## Soak", "## Graceful upgrade under load")


def kept_sections(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return ""
    sections, current = {}, None
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            current = next((k for k in KEPT if line.startswith(k)), None)
            if current:
                sections[current] = ""  # the last one of its kind wins
        if current:
            sections[current] += line
    return "".join("\n" + sections[k].rstrip("\n") + "\n" for k in KEPT if k in sections)


def write(args, report):
    results, idle_rows = report["results"], report["idle"]
    cpu_model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    except OSError:
        pass
    rev = version(["git", "-C", bench.ROOT, "rev-parse", "--short", "HEAD"])
    lines = [
        "# Benchmark results",
        "",
        f"Written by `bench/run{' --quick' if args.quick else ''}` on "
        f"{datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        f"- machine: {os.cpu_count()} CPUs ({cpu_model}), {platform.system()} {platform.release()}; "
        f"load average at the end: {os.getloadavg()[0]:.1f}",
        f"- anygate: git {rev}, `{args.profile}` profile; {version(['rustc', '--version'])}",
        f"- {version(['nginx', '-v'])}; {version(['haproxy', '-v'])}; Caddy {version(['caddy', 'version'])}",
        f"- load: {version(['wrk', '--version'])}; {version(['h2load', '--version'])}",
        f"- every run: {report['seconds']} s, {report['rounds']} round(s) per contender, interleaved A B C D E; "
        "medians below. The backend is one nginx worker answering `200 ok`. HTTP/1.1 runs use "
        "`wrk -t1 -c<conns> --latency`; `h2` runs `h2load -c 50 -m 10` (10 streams per connection; "
        "its p50 column is the mean, h2load gives no percentiles).",
        "- cpu = user+system time of the proxy's processes during the run, divided by the requests served.",
        "- anygate: full edge chain (request_id, identity in session mode verifying a Bearer token on every "
        "request, routing with prefix strip, forwarded_for, upstream_info, access_log to a file, metrics) and an "
        "admin listener, so every request is also kept in the console's recent-request buffer.",
        "- anygate-routing (full runs): the routing plugin alone (host and trigger-path lookup, prefix strip), "
        "no admin listener: what anygate costs as a Pingora application before the SPEC's per-request work "
        "(identity, request id, forwarding fields, debugging headers, access log, metrics, console).",
        "- nginx, haproxy, Caddy: the closest equivalent work (bench/contenders.py); none verifies a token.",
        "- pingora: a bare `ProxyHttp` with only `upstream_peer` (bench/src/bare_proxy.rs), same profile and "
        "allocator, tuned as anygate runs Pingora (no L4 read buffer on plain connections, one single-threaded "
        "runtime per thread, no downstream modules, its one upstream peer built once and shared).",
        "",
    ]
    groups, med = medians(results)
    t = targets(med, idle_rows)
    if t:
        lines += ["## Targets", "", "| target | wanted | measured |", "|---|---|---|"] + t + [""]
    if results:
        lines += [
            "## Requests",
            "",
            "| scenario | workers | conns | contender | req/s | p50 ms | p99 ms | cpu µs/req | errors | "
            "req/s vs nginx | p99 vs nginx | cpu vs nginx | req/s vs pingora |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for key in sorted(groups):
            scenario, workers, conns = key
            base = ("http" if scenario == "http-10k" else scenario, workers, conns)
            nginx, bare = med.get(base + ("nginx",)), med.get(base + ("pingora",))
            for name in sorted(groups[key], key=lambda n: (bench.PROXIES + ["anygate-routing", "anygate-10k"]).index(n)):
                m = med[key + (name,)]
                vn = (ratio(m["rps"], nginx["rps"]), ratio(m["p99"], nginx["p99"]), ratio(m["cpu_us"], nginx["cpu_us"])) \
                    if nginx and name != "nginx" else ("", "", "")
                vb = ratio(m["rps"], bare["rps"]) if bare and name != "pingora" else ""
                lines.append(f"| {scenario} | {workers} | {conns} | {name} | {m['rps']:.0f} | {m['p50']:.2f} | "
                             f"{m['p99']:.2f} | {m['cpu_us']:.1f} | {m['errors']} | {vn[0]} | {vn[1]} | {vn[2]} | {vb} |")
        lines.append("")
    if idle_rows:
        lines += ["## Memory per idle keep-alive connection", "",
                  "N connections opened one after the other, one request each, then held idle; the growth of "
                  "the proxy's resident memory (all its processes) divided by N (bench/idle.py). One worker.", "",
                  "| connections | contender | KB per connection | RSS before → after (KB) | vs nginx |",
                  "|---|---|---|---|---|"]
        by = {(r["contender"], r["conns"]): r for r in idle_rows}
        for r in idle_rows:
            if "failed" in r:
                lines.append(f"| {r['conns']} | {r['contender']} | failed: {r['failed']} | | |")
                continue
            g = by.get(("nginx", r["conns"]))
            vs = ratio(r["kb_per_conn"], g["kb_per_conn"]) if g and "kb_per_conn" in g and r["contender"] != "nginx" \
                and g["kb_per_conn"] > 0 else ""
            lines.append(f"| {r['conns']} | {r['contender']} | {r['kb_per_conn']:.2f} | "
                         f"{r['before_kb']} → {r['after_kb']} | {vs} |")
        lines.append("")
    tenk = []
    for (scenario, workers, conns, name), m in med.items():
        if scenario == "http-10k":
            one = med.get(("http", workers, conns, "anygate"))
            if one:
                tenk.append(f"- 10,000 instances and routes, {workers} worker(s), {conns} conns: "
                            f"{m['rps'] / one['rps']:.2f}× the requests/s of the 1-route config")
    if tenk:
        lines += ["## 10,000 routes", ""] + sorted(tenk) + [""]
    share = []
    for (scenario, workers, conns, name), m in sorted(med.items()):
        if scenario == "http" and name == "anygate-routing":
            bare, full = med.get(("http", workers, conns, "pingora")), med.get(("http", workers, conns, "anygate"))
            if bare and full:
                share.append(f"- {workers} worker(s), {conns} conns: anygate with the routing plugin alone "
                             f"{ratio(m['rps'], bare['rps'])} the bare proxy's requests/s "
                             f"(cpu {m['cpu_us']:.1f} vs {bare['cpu_us']:.1f} µs); the full chain "
                             f"{ratio(full['rps'], m['rps'])} of that (cpu {full['cpu_us']:.1f} µs)")
    if share:
        lines += ["## The gap to the bare proxy, in two parts", "",
                  "What anygate costs as a Pingora application (its connection front, context, config "
                  "snapshot, routing, timeouts), then what the SPEC's per-request chain costs on top:", ""] \
            + share + [""]
    reload = report["reload"]
    if reload:
        lines += ["## Reload of a 10,000-route file", "",
                  f"- compile and publish (from the log): {reload['compile_ms']} ms",
                  f"- rename of the file to the new route answering: {reload['live_ms']:.0f} ms"
                  if reload["live_ms"] else "- the new route never answered", ""]
    if results:
        lines += ["## Raw runs", "",
                  "| scenario | workers | conns | contender | round | req/s | p50 ms | p99 ms | cpu µs/req | errors |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in results:
            lines.append(f"| {r['scenario']} | {r['workers']} | {r['conns']} | {r['contender']} | {r['round']} | "
                         f"{r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['cpu_us']:.1f} | {r['errors']} |")
    kept = kept_sections(args.out)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n" + kept)
    bench.log(f"wrote {args.out}")
