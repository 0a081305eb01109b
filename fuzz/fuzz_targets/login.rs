//! The session login: the body a client posts to `/.anygate/login`, the answer the
//! code2session endpoint gives, and the User-Agent that picks `X-WX-PLATFORM`. The first
//! byte picks which.
#![no_main]

use anygate_plugins::identity::login::parse_body;
use anygate_plugins::identity::token::valid_id;
use anygate_plugins::identity::{ua, wechat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            if let Ok(req) = parse_body(rest) {
                assert!(valid_id(&req.appid));
                assert!(!req.code.is_empty() && req.code.len() <= 256);
                assert!(req.code.bytes().all(|b| b.is_ascii_graphic()));
            }
        }
        1 => {
            if let Ok(user) = wechat::interpret(200, rest) {
                // What goes into X-WX-OPENID / X-WX-UNIONID must be a header-safe id.
                assert!(valid_id(&user.openid));
                assert!(user.unionid.as_deref().is_none_or(valid_id));
            }
        }
        _ => {
            let (source, platform) = ua::classify(rest);
            for v in [source, platform].into_iter().flatten() {
                assert!(http::HeaderValue::from_str(v).is_ok());
            }
        }
    }
});
