//! The one place that turns an error into a response: SPEC §8's JSON body, the right status,
//! and (through the chain's response phase) the SPEC §7 headers.

use anygate_plugins::{Chain, Ctx, ErrorCode, Reply};
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method};
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use serde::Serialize;

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
