//! The CloudBase error codes of SPEC §8: the only errors a client ever sees.

use http::StatusCode;

/// An error a request can end with. Each maps to one status and one `code` string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    ServiceNotFound,
    InvalidHost,
    InvalidPath,
    Unauthenticated,
    AccessDenied,
    ExceedMaxPayloadSize,
    ExceedRatelimit,
    RequestServiceFailed,
    ServiceTimeout,
    InvalidRequest,
    SysErr,
    /// Admin API (SPEC §12): no such request record or resource.
    NotFound,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::ServiceNotFound,
        ErrorCode::InvalidHost,
        ErrorCode::InvalidPath,
        ErrorCode::Unauthenticated,
        ErrorCode::AccessDenied,
        ErrorCode::ExceedMaxPayloadSize,
        ErrorCode::ExceedRatelimit,
        ErrorCode::RequestServiceFailed,
        ErrorCode::ServiceTimeout,
        ErrorCode::InvalidRequest,
        ErrorCode::SysErr,
        ErrorCode::NotFound,
    ];

    /// The `code` field of the JSON body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ServiceNotFound => "SERVICE_NOT_FOUND",
            ErrorCode::InvalidHost => "INVALID_HOST",
            ErrorCode::InvalidPath => "INVALID_PATH",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::AccessDenied => "ACCESS_DENIED",
            ErrorCode::ExceedMaxPayloadSize => "EXCEED_MAX_PAYLOAD_SIZE",
            ErrorCode::ExceedRatelimit => "EXCEED_RATELIMIT",
            ErrorCode::RequestServiceFailed => "REQUEST_SERVICE_FAILED",
            ErrorCode::ServiceTimeout => "SERVICE_TIMEOUT",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::SysErr => "SYS_ERR",
            ErrorCode::NotFound => "NOT_FOUND",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::ServiceNotFound
            | ErrorCode::InvalidHost
            | ErrorCode::InvalidPath
            | ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::AccessDenied => StatusCode::FORBIDDEN,
            ErrorCode::ExceedMaxPayloadSize => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::ExceedRatelimit => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RequestServiceFailed => StatusCode::BAD_GATEWAY,
            ErrorCode::ServiceTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorCode::SysErr => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The default human-readable `message`.
    pub fn default_message(self) -> &'static str {
        match self {
            ErrorCode::ServiceNotFound => "service not found",
            ErrorCode::InvalidHost => "no domain matches the host",
            ErrorCode::InvalidPath => "no trigger path matches the path",
            ErrorCode::Unauthenticated => "authentication required or token invalid",
            ErrorCode::AccessDenied => "access denied",
            ErrorCode::ExceedMaxPayloadSize => "request body too large",
            ErrorCode::ExceedRatelimit => "rate limit exceeded",
            ErrorCode::RequestServiceFailed => "request to the service failed",
            ErrorCode::ServiceTimeout => "the service did not answer in time",
            ErrorCode::InvalidRequest => "malformed request",
            ErrorCode::SysErr => "internal error",
            ErrorCode::NotFound => "not found",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_follow_the_spec_table() {
        let table: Vec<(&str, u16)> = ErrorCode::ALL
            .iter()
            .map(|c| (c.as_str(), c.status().as_u16()))
            .collect();
        assert_eq!(
            table,
            vec![
                ("SERVICE_NOT_FOUND", 404),
                ("INVALID_HOST", 404),
                ("INVALID_PATH", 404),
                ("UNAUTHENTICATED", 401),
                ("ACCESS_DENIED", 403),
                ("EXCEED_MAX_PAYLOAD_SIZE", 413),
                ("EXCEED_RATELIMIT", 429),
                ("REQUEST_SERVICE_FAILED", 502),
                ("SERVICE_TIMEOUT", 504),
                ("INVALID_REQUEST", 400),
                ("SYS_ERR", 500),
                ("NOT_FOUND", 404),
            ]
        );
    }
}
