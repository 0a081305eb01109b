use async_trait::async_trait;
use pingora_core::apps::HttpServerApp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::configuration::ServerConf;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};
use std::sync::Arc;

struct Bare;
#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(
        &self,
        _s: &mut Session,
        _c: &mut (),
    ) -> pingora_core::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new("127.0.0.1:1", false, String::new())))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let conf = Arc::new(ServerConf::default());
    let proxy = Arc::new(pingora_proxy::http_proxy(&conf, Bare));
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    let c = tokio::net::TcpStream::connect(a).await.unwrap();
    let s: pingora_core::protocols::l4::stream::Stream = c.into();
    let session = ServerSession::new_http1(Box::new(s));
    println!("ServerSession {}", std::mem::size_of_val(&session));
    let fut = proxy.process_new_http(session, &rx);
    println!("process_new_http future {}", std::mem::size_of_val(&*fut));
    println!("Session(proxy) {}", std::mem::size_of::<Session>());
}
