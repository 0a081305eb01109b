//! `X-WX-SOURCE` and `X-WX-PLATFORM` from the User-Agent of a verified WeChat user.
//!
//! - `wechatdevtools` anywhere: source `wx_devtools`, platform `devtools` (the developer tools
//!   also say `MicroMessenger` and imitate a phone, so this is checked first);
//! - else `MicroMessenger`: source `wx_client`, and the platform is the first of
//!   `OpenHarmony`/`HarmonyOS` → `harmonyos` (Harmony phones may also say `Android`),
//!   `Android` → `android`, `iPhone`/`iPad`/`iPod`/the word `iOS` → `ios`,
//!   `Windows` → `windows`, `Macintosh`/`Mac OS X`/`MacWechat` → `mac`; none of them: no platform;
//! - else neither header.
//!
//! Matching ignores case, except for `iOS`, which must be a whole word.

/// `(X-WX-SOURCE, X-WX-PLATFORM)` for a User-Agent.
pub fn classify(ua: &[u8]) -> (Option<&'static str>, Option<&'static str>) {
    if contains(ua, b"wechatdevtools") {
        return (Some("wx_devtools"), Some("devtools"));
    }
    if !contains(ua, b"micromessenger") {
        return (None, None);
    }
    let platform = if contains(ua, b"openharmony") || contains(ua, b"harmonyos") {
        Some("harmonyos")
    } else if contains(ua, b"android") {
        Some("android")
    } else if contains(ua, b"iphone")
        || contains(ua, b"ipad")
        || contains(ua, b"ipod")
        || has_word(ua, b"iOS")
    {
        Some("ios")
    } else if contains(ua, b"windows") {
        Some("windows")
    } else if contains(ua, b"macintosh") || contains(ua, b"mac os x") || contains(ua, b"macwechat")
    {
        Some("mac")
    } else {
        None
    };
    (Some("wx_client"), platform)
}

/// Case-insensitive substring search; `needle` is lower-case.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.len() >= needle.len()
        && hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Case-sensitive search for `word` not touching other letters.
fn has_word(hay: &[u8], word: &[u8]) -> bool {
    let n = word.len();
    hay.len() >= n
        && (0..=hay.len() - n).any(|i| {
            &hay[i..i + n] == word
                && (i == 0 || !hay[i - 1].is_ascii_alphabetic())
                && hay.get(i + n).is_none_or(|b| !b.is_ascii_alphabetic())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real User-Agents (shortened where the rest does not matter).
    const TABLE: &[(&str, Option<&str>, Option<&str>)] = &[
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN", Some("wx_client"), Some("ios")),
        ("Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.44", Some("wx_client"), Some("ios")),
        ("Mozilla/5.0 (Linux; Android 13; V2227A Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/116.0.0.0 Mobile Safari/537.36 XWEB/1160065 MMWEBSDK/20231202 MMWEBID/1234 MicroMessenger/8.0.47.2560(0x28002F30) WeChat/arm64 Weixin NetType/WIFI Language/zh_CN ABI/arm64 MiniProgramEnv/android", Some("wx_client"), Some("android")),
        ("Mozilla/5.0 (Phone; OpenHarmony 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/114.0.0.0 Safari/537.36 ArkWeb/4.1.6.1 Mobile MicroMessenger/8.0.1.26", Some("wx_client"), Some("harmonyos")),
        ("Mozilla/5.0 (Linux; Android 12; HarmonyOS; NOH-AN00) AppleWebKit/537.36 (KHTML, like Gecko) Mobile MicroMessenger/8.0.40", Some("wx_client"), Some("harmonyos")),
        ("Mozilla/5.0 (Windows NT 10.0; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/81.0.4044.138 Safari/537.36 NetType/WIFI MicroMessenger/7.0.20.1781(0x6700143B) WindowsWechat(0x63090a13) XWEB/9129 MiniProgramEnv/Windows", Some("wx_client"), Some("windows")),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) MicroMessenger/6.8.0(0x16080000) MacWechat/3.8.6(0x13080610) XWEB/1191 Flue MiniProgramEnv/Mac", Some("wx_client"), Some("mac")),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 13_2_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.0.3 Mobile/15E148 Safari/604.1 wechatdevtools/1.06.2401020 MicroMessenger/8.0.5 Language/zh_CN webview/", Some("wx_devtools"), Some("devtools")),
        ("Mozilla/5.0 (Linux; Android 6.0) wechatdevtools/1.05 MicroMessenger/7.0.4", Some("wx_devtools"), Some("devtools")),
        ("MicroMessenger/8.0.0 MiniProgramEnv/iOS", Some("wx_client"), Some("ios")),
        ("micromessenger/8.0 (unknown device)", Some("wx_client"), None),
        ("MicroMessenger/8.0 KiOSk", Some("wx_client"), None),
        ("curl/8.5.0", None, None),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Safari/604.1", None, None),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36", None, None),
        ("", None, None),
    ];

    #[test]
    fn user_agent_to_source_and_platform() {
        for (ua, source, platform) in TABLE {
            assert_eq!(
                classify(ua.as_bytes()),
                (*source, *platform),
                "User-Agent: {ua}"
            );
        }
    }

    #[test]
    fn words() {
        assert!(has_word(b"iOS", b"iOS"));
        assert!(has_word(b"Env/iOS 17", b"iOS"));
        assert!(!has_word(b"KiOSk", b"iOS"));
        assert!(!has_word(b"ios", b"iOS"));
        assert!(!has_word(b"iO", b"iOS"));
    }
}
