"""Memory per idle keep-alive client connection: open N connections to a proxy, send one
request on each (one at a time, so the proxy's upstream pool stays at one connection), keep
them all open and idle, and divide the growth of the proxy's resident memory (VmRSS of its
whole process tree) by N. `wrk` cannot show this: it keeps every connection busy."""

import resource
import socket
import time

import bench


def rss_kb(pid):
    total = 0
    for p in bench.descendants(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def raise_fd_limit(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def one_request(sock, raw, deadline):
    sock.sendall(raw)
    buf = b""
    while b"\r\n\r\n" not in buf:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed before the answer")
        buf += chunk
    return buf.split(b" ", 2)[1] if buf.startswith(b"HTTP/1.1 ") else b"?"


def measure(server, n, headers, path="/api/hello", timeout=120):
    """KB of the proxy's memory per idle connection, with n connections open."""
    limit = raise_fd_limit(n + 200)
    if limit < n + 100:
        raise RuntimeError(f"the open-files limit ({limit}) is too low for {n} connections")
    try:
        return _measure(server, n, headers, path, timeout)
    except OSError as e:
        raise RuntimeError(f"{type(e).__name__}: {e}") from e


def _measure(server, n, headers, path, timeout):
    raw = ("\r\n".join([f"GET {path} HTTP/1.1"] + headers + ["", ""])).encode()
    deadline = time.monotonic() + timeout
    # Warm up: pools, caches and the allocator's first pages.
    warm = []
    for _ in range(50):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        one_request(s, raw, deadline)
        warm.append(s)
    for s in warm:
        s.close()
    time.sleep(0.5)
    before = rss_kb(server.proc.pid)
    socks, bad = [], 0
    try:
        for _ in range(n):
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(socks)} of {n} connections opened in {timeout}s")
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            socks.append(s)
            if one_request(s, raw, deadline) != b"200":
                bad += 1
        time.sleep(1.0)
        after = rss_kb(server.proc.pid)
        # Every connection must still be open and idle (not closed by the proxy).
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    bad += 1
            except BlockingIOError:
                pass
    finally:
        for s in socks:
            s.close()
    return {"kb_per_conn": (after - before) / n, "before_kb": before, "after_kb": after, "errors": bad}
