//! Session tokens: `v1.<payload>.<mac>`, both parts base64url without padding. The payload is
//! JSON with the app, the user and the validity window; the MAC is HMAC-SHA256 over
//! `v1.<payload>` with the first configured key. Any configured key verifies (key rotation).
//! The WeChat session key is never in a token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const VERSION: &str = "v1";
/// Longer "tokens" are refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 2048;
/// Shortest key accepted: a key is a secret, not a password.
pub const MIN_KEY_LEN: usize = 32;
/// Longest openid/unionid/appid a token (and so a header) may carry.
pub const MAX_ID_LEN: usize = 128;

/// What a token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    pub appid: String,
    pub openid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unionid: Option<String>,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds (the token is refused from this second on).
    pub exp: u64,
}

/// Why a token was refused (each is a 401; the reason goes to the log, not the client).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    Malformed,
    BadSignature,
    Expired,
}

impl Invalid {
    pub fn as_str(self) -> &'static str {
        match self {
            Invalid::Malformed => "malformed token",
            Invalid::BadSignature => "bad token signature",
            Invalid::Expired => "expired token",
        }
    }
}

/// The signing keys, ready to use: the first signs, all verify.
#[derive(Clone)]
pub struct Keys(Vec<HmacSha256>);

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} keys)", self.0.len())
    }
}

impl Keys {
    /// Reads the value of the keys variable: comma-separated keys, surrounding spaces ignored.
    pub fn parse(value: &str) -> Result<Keys, String> {
        let value = value.trim();
        if value.is_empty() {
            return Err("is empty".into());
        }
        let mut keys = Vec::new();
        for (i, k) in value.split(',').map(str::trim).enumerate() {
            if k.len() < MIN_KEY_LEN {
                return Err(format!(
                    "key {} is {} characters long; keys need at least {MIN_KEY_LEN} (e.g. `openssl rand -hex 32`)",
                    i + 1,
                    k.len()
                ));
            }
            let mac = <HmacSha256 as Mac>::new_from_slice(k.as_bytes())
                .map_err(|_| format!("key {} cannot be used", i + 1))?;
            keys.push(mac);
        }
        Ok(Keys(keys))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Signs `claims` with the first key.
    pub fn sign(&self, claims: &Claims) -> String {
        let payload = serde_json::to_vec(claims).unwrap_or_default();
        let mut token = String::with_capacity(8 + payload.len() * 2);
        token.push_str(VERSION);
        token.push('.');
        B64.encode_string(&payload, &mut token);
        // `parse` never returns an empty list.
        if let Some(first) = self.0.first() {
            let mut mac = first.clone();
            mac.update(token.as_bytes());
            token.push('.');
            B64.encode_string(mac.finalize().into_bytes(), &mut token);
        }
        token
    }

    /// Checks the signature with every key (constant-time compare), then the expiry at `now`.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, Invalid> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Invalid::Malformed);
        }
        let (signed, sig) = token.rsplit_once('.').ok_or(Invalid::Malformed)?;
        let (version, payload) = signed.split_once('.').ok_or(Invalid::Malformed)?;
        if version != VERSION {
            return Err(Invalid::Malformed);
        }
        let sig = B64.decode(sig).map_err(|_| Invalid::Malformed)?;
        if sig.len() != 32 {
            return Err(Invalid::Malformed);
        }
        let good = self.0.iter().any(|k| {
            let mut mac = k.clone();
            mac.update(signed.as_bytes());
            mac.verify_slice(&sig).is_ok()
        });
        if !good {
            return Err(Invalid::BadSignature);
        }
        let payload = B64.decode(payload).map_err(|_| Invalid::Malformed)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| Invalid::Malformed)?;
        if !valid_id(&claims.appid)
            || !valid_id(&claims.openid)
            || claims.unionid.as_deref().is_some_and(|u| !valid_id(u))
        {
            return Err(Invalid::Malformed);
        }
        if now >= claims.exp {
            return Err(Invalid::Expired);
        }
        Ok(claims)
    }
}

/// An id that can go into a header as is: 1 to 128 visible ASCII characters.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_LEN && s.bytes().all(|b| b.is_ascii_graphic())
}

/// The `Bearer` credentials of an `Authorization` value (empty when only the scheme is
/// there), or `None` for another scheme.
pub fn bearer(value: &[u8]) -> Option<&[u8]> {
    let v = value.trim_ascii();
    let (scheme, rest) = v.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first().is_some_and(|b| *b != b' ') {
        return None;
    }
    Some(rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "k1-0123456789abcdef0123456789abcdef";
    const K2: &str = "k2-0123456789abcdef0123456789abcdef";

    fn claims() -> Claims {
        Claims {
            appid: "wx1234567890abcdef".into(),
            openid: "oABCD1234567890".into(),
            unionid: Some("oUNIONabcd123456".into()),
            iat: 1_000,
            exp: 8_200,
        }
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let keys = Keys::parse(K1).unwrap();
        let t = keys.sign(&claims());
        assert!(t.starts_with("v1."));
        assert_eq!(keys.verify(&t, 1_000), Ok(claims()));
        assert_eq!(keys.verify(&t, 8_199), Ok(claims()));
        assert_eq!(keys.verify(&t, 8_200), Err(Invalid::Expired));
    }

    #[test]
    fn the_token_carries_no_session_key_and_no_unionid_when_unknown() {
        let keys = Keys::parse(K1).unwrap();
        let mut c = claims();
        c.unionid = None;
        let t = keys.sign(&c);
        let payload = B64.decode(t.split('.').nth(1).unwrap()).unwrap();
        let text = String::from_utf8(payload).unwrap();
        assert_eq!(
            text,
            r#"{"appid":"wx1234567890abcdef","openid":"oABCD1234567890","iat":1000,"exp":8200}"#
        );
        assert_eq!(keys.verify(&t, 1_000), Ok(c));
    }

    #[test]
    fn tampering_anywhere_breaks_the_signature() {
        let keys = Keys::parse(K1).unwrap();
        let t = keys.sign(&claims());
        // Another user in the payload, signature kept.
        let mut other = claims();
        other.openid = "oSOMEONEELSE".into();
        let forged_payload = B64.encode(serde_json::to_vec(&other).unwrap());
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!("v1.{forged_payload}.{}", parts[2]);
        assert_eq!(keys.verify(&forged, 1_000), Err(Invalid::BadSignature));
        // Every single-character change is refused.
        for i in 0..t.len() {
            let mut bytes = t.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let Ok(s) = String::from_utf8(bytes) else {
                continue;
            };
            if s == t {
                continue;
            }
            assert!(keys.verify(&s, 1_000).is_err(), "changed at {i}: {s}");
        }
    }

    #[test]
    fn wrong_key_fails_and_rotated_keys_verify() {
        let old = Keys::parse(K1).unwrap();
        let new = Keys::parse(K2).unwrap();
        let rotated = Keys::parse(&format!("{K2}, {K1}")).unwrap();
        let by_old = old.sign(&claims());
        assert_eq!(new.verify(&by_old, 1_000), Err(Invalid::BadSignature));
        assert_eq!(rotated.verify(&by_old, 1_000), Ok(claims()));
        // The first key signs.
        let by_rotated = rotated.sign(&claims());
        assert_eq!(new.verify(&by_rotated, 1_000), Ok(claims()));
        assert_eq!(old.verify(&by_rotated, 1_000), Err(Invalid::BadSignature));
    }

    #[test]
    fn malformed_tokens() {
        let keys = Keys::parse(K1).unwrap();
        let good = keys.sign(&claims());
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        let v2 = good.replacen("v1.", "v2.", 1);
        for t in [
            "",
            "v1",
            "v1.",
            "v1..",
            "abc",
            "v1.abc",
            "v1.e30.",
            "v1.e30.!!!",
            long.as_str(),
            v2.as_str(),
        ] {
            assert_eq!(keys.verify(t, 1_000), Err(Invalid::Malformed), "{t}");
        }
        // Correctly signed, but not the claims shape.
        let mut mac = HmacSha256::new_from_slice(K1.as_bytes()).unwrap();
        let signed = format!("v1.{}", B64.encode(br#"{"appid":"a"}"#));
        mac.update(signed.as_bytes());
        let t = format!("{signed}.{}", B64.encode(mac.finalize().into_bytes()));
        assert_eq!(keys.verify(&t, 1_000), Err(Invalid::Malformed));
        // Correctly signed, but an id a header cannot carry.
        let mut c = claims();
        c.openid = "o\r\nX-WX-OPENID: evil".into();
        assert_eq!(keys.verify(&keys.sign(&c), 1_000), Err(Invalid::Malformed));
    }

    #[test]
    fn key_lists() {
        assert_eq!(Keys::parse(&format!(" {K1} ,{K2} \n")).unwrap().len(), 2);
        let trailing = format!("{K1},");
        let double = format!("{K1},,{K2}");
        for bad in ["", "  ", "short", &trailing, &double] {
            assert!(Keys::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format!("{:?}", Keys::parse(K1).unwrap()), "Keys(1 keys)");
    }

    #[test]
    fn bearer_credentials() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer   abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"BEARER abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer(b"Bearer"), Some(&b""[..]));
        assert_eq!(bearer(b"Bear"), None);
        assert_eq!(bearer(b"Bearerabc"), None);
    }
}
