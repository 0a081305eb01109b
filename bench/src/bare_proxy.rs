//! A minimal Pingora proxy: `upstream_peer` and nothing else. `bench/run` runs it beside
//! anygate to show what anygate's plugin chain costs on top of Pingora itself.
//!
//! bare-proxy LISTEN UPSTREAM THREADS [--stock] [--tls CERT KEY]
//!
//! By default it is tuned the way anygate runs Pingora (no L4 read buffer on plain
//! connections, a record-sized one on TLS ones, one single-threaded runtime per thread, no
//! downstream modules, the same upstream pool, the peer built once and shared as anygate shares
//! each instance's); `--stock` keeps Pingora's defaults instead, and builds a peer per request
//! as Pingora's examples do.
//! `--tls` listens for HTTPS (HTTP/2 and HTTP/1.1 by ALPN) instead of plain HTTP.

use async_trait::async_trait;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::modules::http::HttpModules;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};
use std::net::SocketAddr;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: anygate::alloc::MiMalloc = anygate::alloc::MiMalloc;

struct Bare {
    upstream: SocketAddr,
    stock: bool,
    /// The peer handed to every request (not with `--stock`).
    peer: Arc<HttpPeer>,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        if self.stock {
            modules.add_module(
                pingora_core::modules::http::compression::ResponseCompressionBuilder::enable(0),
            );
        }
    }

    async fn upstream_peer(
        &self,
        _s: &mut Session,
        _c: &mut (),
    ) -> pingora_core::Result<Arc<HttpPeer>> {
        if self.stock {
            return Ok(Arc::new(HttpPeer::new(self.upstream, false, String::new())));
        }
        Ok(self.peer.clone())
    }
}

fn usage() -> ! {
    eprintln!("usage: bare-proxy LISTEN UPSTREAM THREADS [--stock] [--tls CERT KEY]");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream), Some(threads)) = (args.get(1), args.get(2), args.get(3))
    else {
        usage()
    };
    let (Ok(upstream), Ok(threads)) = (upstream.parse::<SocketAddr>(), threads.parse::<usize>())
    else {
        usage()
    };
    let mut stock = false;
    let mut tls = None;
    let mut rest = args[4..].iter();
    while let Some(a) = rest.next() {
        match a.as_str() {
            "--stock" => stock = true,
            "--tls" => match (rest.next(), rest.next()) {
                (Some(c), Some(k)) => tls = Some((c.clone(), k.clone())),
                _ => usage(),
            },
            _ => usage(),
        }
    }
    let conf = ServerConf {
        threads,
        work_stealing: stock,
        upstream_keepalive_pool_size: 1024,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        pid_file: format!("/tmp/bare-proxy-{}.pid", std::process::id()),
        upgrade_sock: format!("/tmp/bare-proxy-{}.sock", std::process::id()),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(
        &server.configuration,
        Bare {
            upstream,
            stock,
            peer: Arc::new(HttpPeer::new(upstream, false, String::new())),
        },
    );
    let mut endpoint = ListenerConfig::tcp(listen.as_str());
    if let Some((cert, key)) = tls {
        let Ok(mut settings) = TlsSettings::intermediate(&cert, &key) else {
            eprintln!("bare-proxy: cannot load {cert} / {key}");
            std::process::exit(2);
        };
        settings.enable_h2();
        endpoint = endpoint.tls(settings);
        if !stock {
            endpoint = endpoint.l4_buffer(L4BufferSettings::default().read(17 * 1024));
        }
    } else if !stock {
        endpoint = endpoint.l4_buffer(L4BufferSettings::default().read(0));
    }
    proxy.add_listener(endpoint);
    server.add_service(proxy);
    server.run_forever()
}
