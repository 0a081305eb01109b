//! A minimal Pingora proxy: `upstream_peer` and nothing else. `bench/run` runs it beside
//! anygate to show what anygate's plugin chain costs on top of Pingora itself.
//!
//! bare-proxy LISTEN UPSTREAM THREADS [WORK_STEALING]   (true or false, default true)

use async_trait::async_trait;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};
use std::net::SocketAddr;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _s: &mut Session,
        _c: &mut (),
    ) -> pingora_core::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream), Some(threads)) = (args.get(1), args.get(2), args.get(3))
    else {
        eprintln!("usage: bare-proxy LISTEN UPSTREAM THREADS");
        std::process::exit(2);
    };
    let (Ok(upstream), Ok(threads)) = (upstream.parse::<SocketAddr>(), threads.parse::<usize>())
    else {
        eprintln!("bare-proxy: UPSTREAM must be IP:port and THREADS a number");
        std::process::exit(2);
    };
    let work_stealing = args.get(4).is_none_or(|v| v != "false");
    let conf = ServerConf {
        threads,
        work_stealing,
        upstream_keepalive_pool_size: 1024,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        pid_file: format!("/tmp/bare-proxy-{}.pid", std::process::id()),
        upgrade_sock: format!("/tmp/bare-proxy-{}.sock", std::process::id()),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, Bare { upstream });
    let read = std::env::var("BARE_L4_READ")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut cfg = pingora_core::listeners::ListenerConfig::tcp(listen.as_str());
    if let Some(r) = read {
        cfg = cfg.l4_buffer(pingora_core::protocols::l4::stream::L4BufferSettings {
            read: Some(r),
            write: None,
        });
    }
    proxy.add_listener(cfg);
    server.add_service(proxy);
    server.run_forever()
}
