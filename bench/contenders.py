"""The proxies anygate is measured against, each configured to do the closest equivalent of
anygate's full edge chain in front of the same backend (see bench/README.md):

- nginx: `proxy_pass` to a keep-alive upstream pool, prefix strip, `X-Forwarded-*`,
  `X-Real-IP`, `$request_id` up and down, the upstream status, time and type as response
  headers, a JSON access log to a file (buffered);
- haproxy: the same in `mode http` (`replace-path`, `option forwardfor`, `unique-id`,
  `http-after-response set-header`), its JSON log lines into an in-memory ring (haproxy has
  no buffered file log: a line per `write()` to stdout would handicap it);
- Caddy: `reverse_proxy` with `handle_path` prefix strip, `header_up`/`header_down`, its JSON
  access log to a file.

None of them verifies the session token anygate verifies on every request. Every contender
gets the same worker count, an upstream keep-alive pool at least as large as anygate's (1024)
and no per-connection request limit.
"""

import os

NGINX_PROXY = r"""
worker_processes {workers};
pid {workdir}/nginx-proxy-{port}.pid;
error_log {workdir}/nginx-proxy-{port}.error.log warn;
events {{ worker_connections 19000; }}
worker_rlimit_nofile 19500;
http {{
    log_format json escape=json '{{"time":"$time_iso8601","request_id":"$request_id",'
        '"client":"$remote_addr","method":"$request_method","host":"$host","path":"$request_uri",'
        '"status":$status,"upstream_status":"$upstream_status",'
        '"upstream_time":"$upstream_response_time","duration":$request_time,'
        '"bytes":$bytes_sent,"user_agent":"$http_user_agent"}}';
    access_log {workdir}/nginx-access-{port}.log json buffer=64k flush=1s;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream backend {{ server {backend}; keepalive 1024; keepalive_requests 1000000; keepalive_timeout 60s; }}
    # SDK calls: X-Vm-Service names the instance.
    map $http_x_vm_service $instance_ok {{ lhins-bench 1; default 0; }}
    server {{
        listen 127.0.0.1:{port} backlog=8192;
        {tls_listen}
        {tls_cert}
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
events {{ worker_connections 19000; }}
worker_rlimit_nofile 19500;
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port} backlog=8192;
        location / {{ return 200 "ok\n"; }}
    }}
}}
"""

HAPROXY = r"""
global
    nbthread {workers}
    # haproxy reserves two descriptors per connection: the open-files limit here is 20000.
    maxconn 9900
    pidfile {workdir}/haproxy-{port}.pid
    tune.bufsize 16384
ring anygate-bench-log
    format raw
    maxlen 2048
    size 4194304
defaults
    mode http
    log ring@anygate-bench-log local0
    option http-keep-alive
    timeout connect 3s
    timeout client 75s
    timeout server 60s
    timeout http-keep-alive 75s
    timeout http-request 10s
    unique-id-format %{{+X}}o%ci:%cp_%fi:%fp_%Ts_%rt:%pid
    log-format '{{"time":"%tr","request_id":"%ID","client":"%ci","method":"%HM","path":"%HU","status":%ST,"upstream_time":%Tr,"duration":%Ta,"bytes":%B}}'
frontend fe
    bind 127.0.0.1:{port} {tls_bind}
    maxconn 9900
    option forwardfor
    http-request set-header X-Real-IP %[src]
    http-request set-header X-Forwarded-Proto {scheme}
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header X-Cloudbase-Request-Id %[unique-id]
    acl sdk req.hdr(x-wx-service) -m found
    acl known req.hdr(x-vm-service) -m str lhins-bench
    http-request return status 404 if sdk !known
    http-request replace-path ^/api(/.*)?$ /\1 if !sdk
    http-response set-header X-Cloudbase-Upstream-Status-Code %[status]
    http-response set-header X-Cloudbase-Upstream-Timecost %Tr
    http-response set-header X-Cloudbase-Upstream-Type Lighthouse
    http-after-response set-header X-Cloudbase-Request-Id %[unique-id]
    default_backend be
backend be
    http-reuse always
    server s1 {backend} pool-max-conn 1024
"""

CADDY = r"""
{{
    admin off
    auto_https off
    servers {{
        protocols h1 h2
    }}
}}
{site} {{
    bind 127.0.0.1
    {tls}
    log {{
        output file {workdir}/caddy-access-{port}.log
        format json
    }}
    header X-Cloudbase-Request-Id {{http.request.uuid}}
    @sdk header X-WX-SERVICE *
    handle @sdk {{
        @unknown not header X-Vm-Service lhins-bench
        respond @unknown 404
        reverse_proxy {backend} {{
            header_up X-Real-IP {{remote_host}}
            header_up X-Cloudbase-Request-Id {{http.request.uuid}}
            header_down X-Cloudbase-Upstream-Status-Code {{http.reverse_proxy.status_code}}
            header_down X-Cloudbase-Upstream-Timecost {{http.reverse_proxy.upstream.latency_ms}}
            header_down X-Cloudbase-Upstream-Type Lighthouse
            transport http {{
                keepalive 75s
                keepalive_idle_conns 1024
                keepalive_idle_conns_per_host 1024
            }}
        }}
    }}
    handle_path /api* {{
        reverse_proxy {backend} {{
            header_up X-Real-IP {{remote_host}}
            header_up X-Cloudbase-Request-Id {{http.request.uuid}}
            header_down X-Cloudbase-Upstream-Status-Code {{http.reverse_proxy.status_code}}
            header_down X-Cloudbase-Upstream-Timecost {{http.reverse_proxy.upstream.latency_ms}}
            header_down X-Cloudbase-Upstream-Type Lighthouse
            transport http {{
                keepalive 75s
                keepalive_idle_conns 1024
                keepalive_idle_conns_per_host 1024
            }}
        }}
    }}
}}
"""


def write(workdir, name, text):
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def nginx_conf(workdir, port, workers, backend, tls=None):
    tls_listen = tls_cert = ""
    if tls:
        tls_listen = f"listen 127.0.0.1:{tls['port']} ssl http2 backlog=8192;"
        tls_cert = (f"ssl_certificate {tls['cert']}; ssl_certificate_key {tls['key']}; "
                    "ssl_session_cache shared:SSL:10m; ssl_protocols TLSv1.2 TLSv1.3;")
    return write(workdir, f"nginx-proxy-{port}.conf",
                 NGINX_PROXY.format(workdir=workdir, port=port, workers=workers, backend=backend,
                                    tls_listen=tls_listen, tls_cert=tls_cert))


def haproxy_conf(workdir, port, workers, backend, tls=None):
    tls_bind, scheme = "", "http"
    if tls:
        tls_bind, scheme = f"ssl crt {tls['pem']} alpn h2,http/1.1", "https"
    return write(workdir, f"haproxy-{port}.cfg",
                 HAPROXY.format(workdir=workdir, port=port, workers=workers, backend=backend,
                                tls_bind=tls_bind, scheme=scheme))


def caddy_conf(workdir, port, backend, tls=None):
    if tls:
        site, tls_line = f"https://:{port}", f"tls {tls['cert']} {tls['key']}"
    else:
        site, tls_line = f"http://:{port}", ""
    return write(workdir, f"Caddyfile-{port}",
                 CADDY.format(workdir=workdir, port=port, backend=backend, site=site, tls=tls_line))
