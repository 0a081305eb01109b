//! `GET /api/v1/requests/{requestId}` and `GET /api/v1/requests?status=5xx&instance=ID&
//! route=NAME&error=CODE&limit=N`: the recent-request buffer.

use super::Answer;
use crate::monitor::recent::Filter;
use crate::monitor::Monitor;
use anygate_plugins::ErrorCode;
use percent_encoding::percent_decode_str;
use serde::Serialize;

/// `limit` when not given, and its largest value.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

fn not_kept(monitor: &Monitor) -> Option<Answer> {
    (monitor.recent.capacity() == 0).then(|| {
        Answer::error(
            ErrorCode::NotFound,
            "no requests are kept (admin.recent_requests is 0); search the access log by request id instead",
        )
    })
}

pub fn one(monitor: &Monitor, id: &str) -> Answer {
    if let Some(a) = not_kept(monitor) {
        return a;
    }
    let id = percent_decode_str(id).decode_utf8_lossy();
    let id = id.trim();
    match monitor.recent.find(id) {
        Some(r) => Answer::json(&r),
        None if id.len() > 64 || id.is_empty() => {
            Answer::error(ErrorCode::NotFound, "that is not a request id")
        }
        None => Answer::error(
            ErrorCode::NotFound,
            &format!(
                "no request `{id}` among the last {} (unknown, or evicted: the access log keeps every request)",
                monitor.recent.capacity()
            ),
        ),
    }
}

/// A query string's `key=value` pairs, decoded as a form (`+` is a space).
fn pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        let dec = |s: &str| {
            percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        (dec(k), dec(v))
    })
}

/// Reads the listing's query; the message says what is wrong.
pub fn parse(query: &str) -> Result<(Filter, usize), String> {
    let mut f = Filter::default();
    let mut limit = DEFAULT_LIMIT;
    for (k, v) in pairs(query) {
        match k.as_str() {
            "status" => {
                let b = v.as_bytes();
                match b {
                    [c @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => {
                        f.status_class = Some(u16::from(c - b'0'))
                    }
                    _ => match v.parse::<u16>() {
                        Ok(s) if (100..=999).contains(&s) => f.status = Some(s),
                        _ => {
                            return Err(format!(
                                "`status` is a class like `5xx` or a code like `502`, not `{v}`"
                            ))
                        }
                    },
                }
            }
            "instance" => f.instance = Some(v),
            "route" => f.route = Some(v),
            "error" => match ErrorCode::ALL.iter().find(|c| c.as_str() == v) {
                Some(c) => f.error = Some(*c),
                None => {
                    return Err(format!(
                        "`error` `{v}` is not an error code (e.g. REQUEST_SERVICE_FAILED)"
                    ))
                }
            },
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => limit = n,
                _ => {
                    return Err(format!(
                        "`limit` is a number from 1 to {MAX_LIMIT}, not `{v}`"
                    ))
                }
            },
            other => {
                return Err(format!(
                    "unknown parameter `{other}`: use status, instance, route, error or limit"
                ))
            }
        }
    }
    Ok((f, limit))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Listing {
    requests: Vec<crate::monitor::recent::Record>,
    /// How many records the buffer keeps.
    capacity: usize,
    /// Requests recorded since start (older ones were evicted).
    recorded: u64,
}

pub fn list(monitor: &Monitor, query: &str) -> Answer {
    let (filter, limit) = match parse(query) {
        Ok(x) => x,
        Err(m) => return Answer::error(ErrorCode::InvalidRequest, &m),
    };
    Answer::json(&Listing {
        requests: monitor.recent.list(&filter, limit),
        capacity: monitor.recent.capacity(),
        recorded: monitor.recent.recorded(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries() {
        let (f, limit) = parse("status=5xx&instance=lhins-a&route=default%2Fapi&limit=7").unwrap();
        assert_eq!(f.status_class, Some(5));
        assert_eq!(f.instance.as_deref(), Some("lhins-a"));
        assert_eq!(f.route.as_deref(), Some("default/api"));
        assert_eq!(limit, 7);
        let (f, limit) = parse("status=502&error=SERVICE_TIMEOUT").unwrap();
        assert_eq!(
            (f.status, f.error),
            (Some(502), Some(ErrorCode::ServiceTimeout))
        );
        assert_eq!(limit, DEFAULT_LIMIT);
        assert_eq!(parse("").unwrap(), (Filter::default(), DEFAULT_LIMIT));
        for bad in [
            "status=6xx",
            "status=abc",
            "limit=0",
            "limit=1001",
            "error=NOPE",
            "x=1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
