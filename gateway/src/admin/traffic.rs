//! `GET /api/v1/traffic`: server-sent events, one `traffic` event per second (see
//! [`crate::monitor::traffic::Second`]). `?history=N` first replays up to the last N seconds
//! (the console's chart uses it to start full); a reconnecting client's `Last-Event-ID`
//! resumes after the event it last saw.

use super::Answer;
use crate::monitor::{Monitor, TRAFFIC_HISTORY};
use anygate_plugins::ErrorCode;
use bytes::Bytes;
use http::{Method, StatusCode, Version};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_http::{RequestHeader, ResponseHeader};
use std::time::Duration;

/// A client that stops reading for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A stream about to start: the last second the client has already seen.
pub struct Start {
    after: u64,
}

impl Start {
    pub fn new(monitor: &Monitor, req: &RequestHeader, query: &str) -> Result<Start, Answer> {
        let newest = *monitor.subscribe().borrow();
        let mut after = newest;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("history", n)) => match n.parse::<usize>() {
                    Ok(n) if n <= TRAFFIC_HISTORY => after = newest.saturating_sub(n as u64),
                    _ => {
                        return Err(Answer::error(
                            ErrorCode::InvalidRequest,
                            &format!(
                                "`history` is a number of seconds from 0 to {TRAFFIC_HISTORY}"
                            ),
                        ))
                    }
                },
                _ => {
                    return Err(Answer::error(
                        ErrorCode::InvalidRequest,
                        "unknown parameter: /api/v1/traffic takes only `history=SECONDS`",
                    ))
                }
            }
        }
        let resume = req
            .headers
            .get("Last-Event-ID")
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        if let Some(id) = resume.filter(|id| *id <= newest) {
            after = id;
        }
        Ok(Start { after })
    }

    fn header(req: &RequestHeader) -> Option<ResponseHeader> {
        let mut h = ResponseHeader::build(StatusCode::OK, Some(6)).ok()?;
        h.insert_header("Content-Type", "text/event-stream; charset=utf-8")
            .ok()?;
        h.insert_header("Cache-Control", "no-store").ok()?;
        h.insert_header("X-Content-Type-Options", "nosniff").ok()?;
        // A proxy in front (nginx) must not hold the events back.
        h.insert_header("X-Accel-Buffering", "no").ok()?;
        // HTTP/1.0 has no chunks: the stream then ends with the connection.
        if req.version != Version::HTTP_10 {
            h.insert_header("Transfer-Encoding", "chunked").ok()?;
        }
        Some(h)
    }

    /// Writes events until the client leaves or the process drains.
    pub async fn stream(
        self,
        http: &mut ServerSession,
        monitor: &Monitor,
        mut shutdown: ShutdownWatch,
    ) {
        let Some(header) = Start::header(http.req_header()) else {
            return;
        };
        http.set_keepalive(None);
        http.set_write_timeout(Some(WRITE_TIMEOUT));
        if http.write_response_header(Box::new(header)).await.is_err()
            || http.req_header().method == Method::HEAD
        {
            return;
        }
        let mut rx = monitor.subscribe();
        let mut after = self.after;
        // Reconnect after a second if the connection drops.
        let mut chunk = b"retry: 1000\n\n".to_vec();
        loop {
            for (n, json) in monitor.seconds_after(after) {
                chunk.extend_from_slice(format!("id: {n}\nevent: traffic\ndata: ").as_bytes());
                chunk.extend_from_slice(json.as_bytes());
                chunk.extend_from_slice(b"\n\n");
                after = n;
            }
            if !chunk.is_empty() {
                let body = Bytes::from(std::mem::take(&mut chunk));
                if http.write_response_body(body, false).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                r = rx.changed() => if r.is_err() { break },
            }
        }
        let _ = http.write_response_body(Bytes::new(), true).await;
    }
}
