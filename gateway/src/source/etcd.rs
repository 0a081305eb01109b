//! The etcd client of cluster mode: one `etcd-client` connection per member, tried in turn
//! (a request that fails on a dead or leaderless member goes to the next one), every request
//! bounded in time, and errors sorted into what the callers act on.

use super::bootstrap::Bootstrap;
use etcd_client::{
    Client, ConnectOptions, GetOptions, GetResponse, Txn, TxnResponse, WatchOptions, WatchStream,
};
use std::future::Future;
use std::time::Duration;

/// One connection attempt to a member.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One request to a member (a member that lost its leader answers after about this long).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtcdError {
    /// No member answered: each one's reason.
    Unreachable(String),
    /// The revision asked for was compacted away.
    Compacted(String),
    /// The revision asked for is newer than etcd's.
    FutureRevision(String),
    /// A member answered with an error that another member would give too.
    Refused(String),
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EtcdError::Unreachable(why) => write!(f, "no etcd member answered ({why})"),
            EtcdError::Compacted(m) | EtcdError::FutureRevision(m) | EtcdError::Refused(m) => {
                f.write_str(m)
            }
        }
    }
}

/// What one attempt's error means.
enum Kind {
    /// Try the next member.
    Retry(String),
    Final(EtcdError),
}

fn classify(e: etcd_client::Error) -> Kind {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(s) => {
            let msg = s.message().to_string();
            match s.code() {
                tonic::Code::OutOfRange if msg.contains("compacted") => {
                    Kind::Final(EtcdError::Compacted(msg))
                }
                tonic::Code::OutOfRange if msg.contains("future revision") => {
                    Kind::Final(EtcdError::FutureRevision(msg))
                }
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
                | tonic::Code::Aborted
                | tonic::Code::ResourceExhausted => Kind::Retry(status_text(&s)),
                _ => Kind::Final(EtcdError::Refused(status_text(&s))),
            }
        }
        E::TransportError(t) => Kind::Retry(match source_chain(&t) {
            causes if causes.is_empty() => t.to_string(),
            causes => format!("{t}: {causes}"),
        }),
        E::IoError(io) => Kind::Retry(io.to_string()),
        E::WatchError(w) => Kind::Retry(w),
        other => Kind::Final(EtcdError::Refused(other.to_string())),
    }
}

fn status_text(s: &tonic::Status) -> String {
    let text = match s.message() {
        "" => format!("{:?}", s.code()),
        m => m.to_string(),
    };
    match source_chain(s) {
        causes if causes.is_empty() || text.contains(&causes) => text,
        causes => format!("{text}: {causes}"),
    }
}

/// The innermost cause of an error (e.g. "Connection refused (os error 111)"), if any.
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut last = String::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        last = s.to_string();
        cur = s.source();
    }
    last
}

struct Member {
    url: String,
    client: Option<Client>,
}

/// The cluster, as one client with failover.
pub struct Etcd {
    members: Vec<Member>,
    user: Option<(String, String)>,
    /// The member that answered last: tried first.
    preferred: usize,
}

impl Etcd {
    /// No connection is made before the first request.
    pub fn new(boot: &Bootstrap) -> Etcd {
        Etcd {
            members: boot
                .endpoints
                .iter()
                .map(|url| Member {
                    url: url.clone(),
                    client: None,
                })
                .collect(),
            user: boot.user.clone(),
            preferred: 0,
        }
    }

    /// The member that answered last.
    pub fn endpoint(&self) -> &str {
        self.members
            .get(self.preferred)
            .map_or("", |m| m.url.as_str())
    }

    /// Starts the next requests with the member after the current one.
    pub fn rotate(&mut self) {
        if !self.members.is_empty() {
            self.preferred = (self.preferred + 1) % self.members.len();
        }
    }

    fn options(&self) -> ConnectOptions {
        let mut o = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            // HTTP/2 pings notice a member that vanished without closing the connection.
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_keep_alive_while_idle(true)
            // A member cut off from its cluster refuses (and ends watches) instead of
            // answering from a stale copy.
            .with_require_leader(true);
        if let Some((u, p)) = &self.user {
            // etcd's tokens expire (5 minutes by default): authenticate again when one does.
            o = o
                .with_user(u.clone(), p.clone())
                .with_auto_token_refresh(true);
        }
        o
    }

    async fn client(&mut self, i: usize) -> Result<Client, Kind> {
        if let Some(c) = &self.members[i].client {
            return Ok(c.clone());
        }
        let url = self.members[i].url.clone();
        let connect = Client::connect([url.as_str()], Some(self.options()));
        let client = match tokio::time::timeout(REQUEST_TIMEOUT, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(classify(e)),
            Err(_) => return Err(Kind::Retry(format!("timed out after {REQUEST_TIMEOUT:?}"))),
        };
        self.members[i].client = Some(client.clone());
        Ok(client)
    }

    /// Runs `call` on one member after another until one answers; each attempt is bounded
    /// by `REQUEST_TIMEOUT`.
    pub async fn call<T, F, Fut>(&mut self, mut call: F) -> Result<T, EtcdError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.members.len();
        let mut why = Vec::new();
        for k in 0..n {
            let i = (self.preferred + k) % n;
            let attempt = match self.client(i).await {
                Ok(client) => match tokio::time::timeout(REQUEST_TIMEOUT, call(client)).await {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(e)) => Err(classify(e)),
                    Err(_) => Err(Kind::Retry(format!("timed out after {REQUEST_TIMEOUT:?}"))),
                },
                Err(k) => Err(k),
            };
            match attempt {
                Ok(v) => {
                    self.preferred = i;
                    return Ok(v);
                }
                Err(Kind::Final(e)) => {
                    self.preferred = i;
                    return Err(e);
                }
                Err(Kind::Retry(msg)) => why.push(format!("{}: {msg}", self.members[i].url)),
            }
        }
        Err(EtcdError::Unreachable(why.join("; ")))
    }

    /// Like [`Etcd::call`], going round the members again (an election takes a second or
    /// two) until `patience` has passed.
    pub async fn call_patiently<T, F, Fut>(
        &mut self,
        patience: Duration,
        mut call: F,
    ) -> Result<T, EtcdError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            match self.call(&mut call).await {
                Err(EtcdError::Unreachable(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                other => return other,
            }
        }
    }

    /// The key (at `revision`, or the newest with 0).
    pub async fn get(&mut self, key: &str, revision: i64) -> Result<GetResponse, EtcdError> {
        let key = key.to_string();
        self.call(move |mut c| {
            let key = key.clone();
            async move {
                c.get(key, Some(GetOptions::new().with_revision(revision)))
                    .await
            }
        })
        .await
    }

    /// The key's metadata only (revisions, no value): the watcher's health check.
    pub async fn stat(&mut self, key: &str) -> Result<GetResponse, EtcdError> {
        let key = key.to_string();
        self.call(move |mut c| {
            let key = key.clone();
            async move { c.get(key, Some(GetOptions::new().with_keys_only())).await }
        })
        .await
    }

    /// Every key under `prefix`.
    pub async fn get_prefix(&mut self, prefix: &str) -> Result<GetResponse, EtcdError> {
        let prefix = prefix.to_string();
        self.call(move |mut c| {
            let prefix = prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })
        .await
    }

    pub async fn txn(&mut self, txn: Txn, patience: Duration) -> Result<TxnResponse, EtcdError> {
        self.call_patiently(patience, move |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
    }

    /// Opens a watch of `key` from `revision` on the first member that accepts it.
    pub async fn watch(&mut self, key: &str, revision: i64) -> Result<WatchStream, EtcdError> {
        let key = key.to_string();
        self.call(move |mut c| {
            let key = key.clone();
            async move {
                c.watch(key, Some(WatchOptions::new().with_start_revision(revision)))
                    .await
            }
        })
        .await
    }
}
