//! The one place that turns an error into a response: SPEC §8's JSON body, the right status,
//! and (through the chain's response phase) the SPEC §7 headers.

use anygate_plugins::telemetry::upstream_error_kind;
use anygate_plugins::{Chain, Ctx, Entry, ErrorCode, Reply, Served};
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method};
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use serde::Serialize;
use std::time::Duration;

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(rename = "requestId")]
    request_id: &'a str,
}

/// The JSON body of an error.
pub fn error_body(code: ErrorCode, message: &str, request_id: &str) -> Bytes {
    let body = Body {
        code: code.as_str(),
        message,
        request_id,
    };
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// Which SPEC error a Pingora error is, or `None` when the client is gone and nothing can be
/// sent.
pub fn classify(e: &Error) -> Option<ErrorCode> {
    use ErrorType::*;
    match (e.esource(), e.etype()) {
        (ErrorSource::Upstream, ConnectTimedout | ReadTimedout | WriteTimedout) => {
            Some(ErrorCode::ServiceTimeout)
        }
        (ErrorSource::Upstream, _) => Some(ErrorCode::RequestServiceFailed),
        (ErrorSource::Downstream, ReadError | WriteError | ConnectionClosed) => None,
        (ErrorSource::Downstream, ReadTimedout | WriteTimedout) => None,
        (ErrorSource::Downstream, _) => Some(ErrorCode::InvalidRequest),
        (_, ConnectTimedout) => Some(ErrorCode::ServiceTimeout),
        (_, ConnectRefused | ConnectNoRoute | ConnectError | TLSHandshakeFailure) => {
            Some(ErrorCode::RequestServiceFailed)
        }
        _ => Some(ErrorCode::SysErr),
    }
}

/// The reply for a request that failed with `e`: the SPEC code, and for the instance's
/// failures a message that names the cause, so the CloudBase FAQ's checks (is the service
/// listening on the port? a firewall?) can be followed from the error alone. The instance's
/// address is not told to the client, only its id and port.
pub fn for_error(e: &Error, ctx: &Ctx) -> Option<Reply> {
    let code = classify(e)?;
    let message = match (&ctx.instance, upstream_error_kind(e)) {
        (Some(i), Some(kind)) if code != ErrorCode::SysErr => {
            let read = Some(match ctx.entry {
                Entry::Sdk => i.timeouts.sdk,
                _ => i.timeouts.http,
            });
            let connect = Some(i.timeouts.connect);
            Some(failure_message(
                kind,
                e.etype(),
                &i.id,
                i.addr.port(),
                connect,
                read,
            ))
        }
        _ => None,
    };
    Some(match message {
        Some(m) => Reply::error_with(code, m),
        None => Reply::error(code),
    })
}

fn human(d: Option<Duration>) -> String {
    d.map_or_else(|| "its timeout".into(), crate::health::probe::human)
}

/// What happened between anygate and instance `id`, in words.
pub fn failure_message(
    kind: &str,
    etype: &ErrorType,
    id: &str,
    port: u16,
    connect: Option<Duration>,
    read: Option<Duration>,
) -> String {
    match kind {
        "connect_refused" => format!("instance {id} refused the connection on port {port}: is the service listening on that port?"),
        "connect_timeout" => format!("connecting to instance {id} on port {port} timed out after {}: is the instance up, and does its firewall let port {port} through?", human(connect)),
        "connect_error" => format!("cannot connect to instance {id} on port {port} ({etype:?}): is the instance up and reachable from the gateway?"),
        "tls" => format!("the TLS handshake with instance {id} on port {port} failed"),
        "timeout" if *etype == ErrorType::WriteTimedout => format!("sending the request to instance {id} timed out after {}", human(read)),
        "timeout" => format!("instance {id} accepted the connection on port {port} but did not answer within {}", human(read)),
        "closed" => format!("instance {id} closed the connection on port {port} without answering"),
        "reset" => format!("instance {id} reset the connection on port {port}"),
        "bad_response" => format!("instance {id} answered on port {port} with something that is not valid HTTP"),
        _ => format!("the request to instance {id} on port {port} failed ({etype:?})"),
    }
}

/// Builds the response header and body of a reply (without the chain's headers).
pub fn render(reply: Reply, ctx: &mut Ctx) -> Result<(ResponseHeader, Bytes)> {
    match reply {
        Reply::Error {
            code,
            message,
            headers,
            status,
        } => {
            ctx.error = Some(code);
            let message = message.as_deref().unwrap_or(code.default_message());
            let body = error_body(code, message, ctx.request_id().to_str().unwrap_or("-"));
            let status = status.unwrap_or(code.status());
            let mut h = ResponseHeader::build(status, Some(4 + headers.len()))?;
            h.insert_header(CONTENT_TYPE, HeaderValue::from_static("application/json"))?;
            h.insert_header(CONTENT_LENGTH, HeaderValue::from(body.len()))?;
            h.insert_header(CACHE_CONTROL, HeaderValue::from_static("no-store"))?;
            for (name, value) in headers {
                h.insert_header(name, value)?;
            }
            Ok((h, body))
        }
        Reply::Response { header, body } => Ok((*header, body)),
    }
}

/// An error answered outside any request's phases, with every response header the chain adds
/// (the request id among them, in `ctx`): for requests refused before they could be parsed.
pub fn standalone_error(
    chain: &Chain,
    ctx: &mut Ctx,
    code: ErrorCode,
    message: String,
) -> Option<(ResponseHeader, Bytes)> {
    let (mut header, body) = render(Reply::error_with(code, message), ctx).ok()?;
    chain.response(&mut header, ctx);
    Some((header, body))
}

/// An error as the bytes of a whole HTTP/1.1 response, with every response header the chain
/// adds and `Connection: close`: for the connection front, which answers some requests
/// (a header over the size limit) before Pingora has parsed them.
/// Also says what the client will have got once the bytes are written, for the access log.
pub fn wire_error(
    chain: &Chain,
    ctx: &mut Ctx,
    code: ErrorCode,
    message: String,
) -> (Vec<u8>, Served<'static>) {
    let Some((mut header, body)) = standalone_error(chain, ctx, code, message) else {
        return (Vec::new(), Served::unparsed(0, 0));
    };
    let _ = header.insert_header(http::header::CONNECTION, HeaderValue::from_static("close"));
    let status = header.status;
    let mut out = Vec::with_capacity(512 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    header.header_to_h1_wire(&mut out);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    (out, Served::unparsed(status.as_u16(), body.len()))
}

/// Writes a reply to the client, with every response header the chain adds.
pub async fn write(
    session: &mut Session,
    ctx: &mut Ctx,
    chain: &Chain,
    reply: Reply,
) -> Result<u16> {
    let (mut header, body) = render(reply, ctx)?;
    chain.response(&mut header, ctx);
    let status = header.status.as_u16();
    ctx.status = status;
    // An unread request body would have to be drained before the connection can serve the
    // next request; close it instead (the response says so).
    // After a refused CONNECT the client may already be sending tunnel bytes: close too.
    if (!session.is_body_empty() && !session.is_body_done())
        || session.req_header().method == Method::CONNECT
        || crate::drain::draining()
    {
        session.set_keepalive(None);
    }
    let head = session.req_header().method == Method::HEAD;
    let no_body = head || body.is_empty();
    session
        .write_response_header(Box::new(header), no_body)
        .await?;
    if !no_body {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_is_the_spec_json() {
        let b = error_body(ErrorCode::InvalidPath, "no \"route\"", "abc");
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            r#"{"code":"INVALID_PATH","message":"no \"route\"","requestId":"abc"}"#
        );
    }

    #[test]
    fn failures_are_told_in_words() {
        let m = |kind, t| {
            failure_message(
                kind,
                &t,
                "lhins-a",
                8080,
                Some(Duration::from_secs(3)),
                Some(Duration::from_millis(500)),
            )
        };
        assert_eq!(
            m("connect_refused", ErrorType::ConnectRefused),
            "instance lhins-a refused the connection on port 8080: is the service listening on that port?"
        );
        assert!(m("connect_timeout", ErrorType::ConnectTimedout).contains("timed out after 3s"));
        assert!(m("timeout", ErrorType::ReadTimedout).contains("did not answer within 500ms"));
        assert!(m("reset", ErrorType::ReadError).contains("reset the connection"));
        assert!(m("closed", ErrorType::ConnectionClosed).contains("closed the connection"));
        assert!(m("bad_response", ErrorType::InvalidHTTPHeader).contains("not valid HTTP"));
    }

    #[test]
    fn pingora_errors_map_to_spec_codes() {
        let up = |t: ErrorType| {
            let mut e = Error::new(t);
            e.as_up();
            classify(&e)
        };
        let down = |t: ErrorType| {
            let mut e = Error::new(t);
            e.as_down();
            classify(&e)
        };
        assert_eq!(
            up(ErrorType::ConnectRefused),
            Some(ErrorCode::RequestServiceFailed)
        );
        assert_eq!(
            up(ErrorType::ConnectTimedout),
            Some(ErrorCode::ServiceTimeout)
        );
        assert_eq!(up(ErrorType::ReadTimedout), Some(ErrorCode::ServiceTimeout));
        assert_eq!(
            up(ErrorType::InvalidHTTPHeader),
            Some(ErrorCode::RequestServiceFailed)
        );
        assert_eq!(
            up(ErrorType::ConnectionClosed),
            Some(ErrorCode::RequestServiceFailed)
        );
        assert_eq!(down(ErrorType::ConnectionClosed), None);
        assert_eq!(
            down(ErrorType::InvalidHTTPHeader),
            Some(ErrorCode::InvalidRequest)
        );
        assert_eq!(
            classify(&Error::new(ErrorType::InternalError)),
            Some(ErrorCode::SysErr)
        );
    }
}
