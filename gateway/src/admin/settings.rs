//! The `admin:` section (SPEC §12), compiled: the bearer token (kept as a digest only) and the
//! size of the recent-request buffer.

use crate::config::{ConfigError, FileConfig};
use crate::snapshot::EnvLookup;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use subtle::ConstantTimeEq;

/// `admin.recent_requests` when not set.
pub const DEFAULT_RECENT_REQUESTS: usize = 10_000;
/// The most records the buffer may keep (each takes 384 bytes, made at start).
pub const MAX_RECENT_REQUESTS: usize = 1_000_000;
/// The shortest token accepted: anything shorter can be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// The admin token, as its SHA-256 digest: the token itself is not kept, and comparing two
/// digests of the same length in constant time reveals nothing, not even the token's length.
#[derive(Clone, PartialEq, Eq)]
pub struct Token([u8; 32]);

impl Token {
    pub fn new(secret: &str) -> Token {
        Token(Sha256::digest(secret.as_bytes()).into())
    }

    /// Whether `candidate` is the token, in constant time.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(candidate).into();
        self.0.ct_eq(&digest).into()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// The compiled `admin:` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminSettings {
    /// `None`: the admin listener needs no token (loopback only).
    pub token: Option<Token>,
    /// The variable the token came from (shown by the status endpoint; never its value).
    pub token_env: Option<String>,
    pub recent_requests: usize,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            token: None,
            token_env: None,
            recent_requests: DEFAULT_RECENT_REQUESTS,
        }
    }
}

/// Reads `admin:`; `listen` is the admin listener's address, if any.
pub fn compile(
    file: &FileConfig,
    listen: Option<SocketAddr>,
    env: EnvLookup,
    errors: &mut Vec<ConfigError>,
) -> AdminSettings {
    let item = &file.admin;
    let v = &item.value;
    let mut out = AdminSettings::default();
    if let Some(n) = v.recent_requests {
        if n > MAX_RECENT_REQUESTS {
            errors.push(file.error(
                item.mark_of("recent_requests"),
                format!(
                    "`admin.recent_requests` must be at most {MAX_RECENT_REQUESTS} (0 keeps none)"
                ),
            ));
        } else {
            out.recent_requests = n;
        }
    }
    match &v.token_env {
        Some(var) => {
            out.token_env = Some(var.clone());
            let at = item.mark_of("token_env");
            // An unset variable is reported by the compile, like every `_env` key's.
            match env(var) {
                Some(t) if t.trim().len() >= MIN_TOKEN_LEN => out.token = Some(Token::new(t.trim())),
                Some(_) => errors.push(file.error(
                    at,
                    format!("the admin token in `{var}` is shorter than {MIN_TOKEN_LEN} characters (make one with `openssl rand -hex 32`)"),
                )),
                None => {}
            }
        }
        None => {
            if let Some(addr) = listen.filter(|a| !a.ip().is_loopback()) {
                errors.push(file.error(
                    file.listen.mark_of("admin"),
                    format!("the admin listener {addr} is not on a loopback address: set `admin.token_env` so that its API and /metrics need a token"),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_digest() {
        let t = Token::new("0123456789abcdef-secret");
        assert!(t.matches(b"0123456789abcdef-secret"));
        assert!(!t.matches(b"0123456789abcdef-secreT"));
        assert!(!t.matches(b""));
        assert_eq!(format!("{t:?}"), "Token(..)", "never printed");
    }
}
