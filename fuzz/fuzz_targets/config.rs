//! The config file: YAML text → checked, compiled snapshot (what `run`, every reload and
//! `anygate check` do with operator input). Nothing here may panic; every error carries a
//! position inside the text.
//!
//! The first byte picks `run`'s strict compile or `check`'s lenient one. The compile runs
//! offline (host names are never resolved) and cannot touch the file system: access logs go
//! to stdout and certificate paths point into a directory that does not exist.
#![no_main]

use anygate::config::{
    self,
    model::{DomainTls, Tls},
};
use anygate::snapshot::{compile_offline, Purpose};
use anygate_plugins::telemetry::Telemetry;
use anygate_plugins::PluginConfig;
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::{Arc, OnceLock};

const FILE: &str = "/nonexistent-anygate-fuzz/anygate.yaml";

fn telemetry() -> &'static Arc<Telemetry> {
    static T: OnceLock<Arc<Telemetry>> = OnceLock::new();
    T.get_or_init(|| Arc::new(Telemetry::new().expect("telemetry")))
}

fn env(name: &str) -> Option<String> {
    // Set for half the names, so both the stand-in and the real value are exercised.
    (name.len() % 2 == 0).then(|| "fuzz-secret-0123456789abcdef0123456789abcdef".to_string())
}

fn confine(tls: &mut Tls) {
    tls.cert = "cert.pem".into();
    tls.key = "key.pem".into();
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    // Lines as YAML counts them: `\r\n`, `\n` or a lone `\r` ends one.
    let lines = text.replace("\r\n", "\n").matches(['\n', '\r']).count() + 1;
    let mut file = match config::load_str(Path::new(FILE), text) {
        Ok(f) => f,
        Err(errors) => {
            for e in &errors.0 {
                assert!(e.mark.line >= 1 && e.mark.col >= 1, "{e}");
                assert!(e.mark.line <= lines + 1, "{e} (text has {lines} lines)");
            }
            return;
        }
    };
    for p in file.plugins.iter_mut().flatten() {
        if let PluginConfig::AccessLog(c) = &mut p.value {
            c.path = "stdout".into();
        }
    }
    for d in &mut file.domains {
        if let Some(DomainTls::Files(tls)) = &mut d.value.tls {
            confine(tls);
        }
    }
    if let Some(tls) = &mut file.tls.value.default {
        confine(tls);
    }
    let purpose = if mode & 1 == 0 {
        Purpose::Serve
    } else {
        Purpose::Check
    };
    let compiled = compile_offline(&file, &env, telemetry(), purpose);
    if let Err(errors) = &compiled.snapshot {
        assert!(!errors.0.is_empty());
        for e in &errors.0 {
            assert!(e.mark.line >= 1 && e.mark.col >= 1, "{e}");
        }
    }
});
