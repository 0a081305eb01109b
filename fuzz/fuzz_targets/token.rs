//! Session tokens (`v1.<payload>.<mac>`) and `Authorization: Bearer`: any bytes a client
//! sends must be refused cleanly, and whatever verifies must be a token anygate signed.
//! The first byte picks what the rest is.
#![no_main]

use anygate_plugins::identity::token::{bearer, valid_id, Claims, Keys};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const K1: &str = "fuzz-key-one-0123456789abcdef0123456789";
const K2: &str = "fuzz-key-two-0123456789abcdef0123456789";
const NOW: u64 = 1_800_000_000;

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| Keys::parse(&format!("{K1}, {K2}")).expect("keys"))
}

fn sane(c: &Claims) {
    assert!(valid_id(&c.appid) && valid_id(&c.openid));
    assert!(c.unionid.as_deref().is_none_or(valid_id));
    assert!(NOW < c.exp);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode % 4 {
        // A token as a client sends it.
        0 => {
            if let Some(b) = bearer(rest) {
                if let Ok(t) = std::str::from_utf8(b) {
                    if let Ok(c) = keys().verify(t, NOW) {
                        sane(&c);
                    }
                }
            }
            if let Ok(c) = keys().verify(&text, NOW) {
                sane(&c);
                // Signed by us: signing the claims again gives a token that verifies the same.
                assert_eq!(keys().verify(&keys().sign(&c), NOW), Ok(c));
            }
        }
        // A payload of our own choosing with a valid MAC: only the JSON is under attack.
        1 => {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let signed = format!("v1.{}", b64.encode(rest));
            let token = forge(&signed);
            if let Ok(c) = keys().verify(&token, NOW) {
                sane(&c);
            }
        }
        // Claims → sign → verify gives the claims back.
        2 => {
            let mut parts = text.split('\n');
            let appid = parts.next().unwrap_or("").to_string();
            let openid = parts.next().unwrap_or("").to_string();
            let unionid = parts.next().map(str::to_string);
            let exp = NOW + rest.len() as u64 % 7200 + 1;
            let c = Claims {
                appid,
                openid,
                unionid,
                iat: NOW,
                exp,
            };
            let verified = keys().verify(&keys().sign(&c), NOW);
            let ok = valid_id(&c.appid)
                && valid_id(&c.openid)
                && c.unionid.as_deref().is_none_or(valid_id);
            if ok {
                assert_eq!(verified, Ok(c));
            } else {
                assert!(verified.is_err());
            }
        }
        // The keys variable.
        _ => {
            let _ = Keys::parse(&text);
        }
    }
});

/// `signed` with a valid MAC under K1.
fn forge(signed: &str) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(K1.as_bytes()).expect("key");
    mac.update(signed.as_bytes());
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signed}.{sig}")
}
