//! The `acme:` section and the `tls: acme` domains, checked when a config is compiled
//! (`anygate check` included) without contacting the CA.

use crate::config::model::{Challenge, DomainTls};
use crate::config::units::parse_duration;
use crate::config::{ConfigError, FileConfig, Item, Mark};
use crate::snapshot::{relative_to, Listeners};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Let's Encrypt's production directory (SPEC §11's default).
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Where account, keys and certificates go when `storage` is not set.
pub const DEFAULT_STORAGE: &str = "/var/lib/anygate/acme";
const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);

/// Everything the ACME service needs from the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub directory: String,
    /// Without `mailto:`.
    pub email: Option<String>,
    pub ca_roots: Option<PathBuf>,
    pub storage: PathBuf,
    pub renew_before: Duration,
    pub challenge: Challenge,
    /// The `tls: acme` domains, lower case, in file order.
    pub domains: Vec<String>,
}

fn valid_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((user, host)) => {
            !user.is_empty()
                && host.contains('.')
                && !host.starts_with('.')
                && !host.ends_with('.')
                && !host.contains('@')
                && s.chars()
                    .all(|c| c.is_ascii_graphic() && !matches!(c, ',' | '<' | '>' | '"'))
        }
        None => false,
    }
}

/// `None` when the directory URL is usable, else why not.
fn directory_problem(url: &str) -> Option<String> {
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(_) => return Some(format!("`{url}` is not a URL")),
    };
    if uri.scheme_str() != Some("https") {
        return Some(format!(
            "the ACME directory `{url}` must be an https:// URL (RFC 8555 requires HTTPS)"
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Some(format!("the ACME directory `{url}` has no host"));
    }
    None
}

/// `None` when PEM certificates can be read from `path`, else why not.
fn roots_problem(path: &Path) -> Option<String> {
    let pem = match std::fs::read(path) {
        Ok(p) => p,
        Err(e) => return Some(format!("cannot read `ca_roots` `{}`: {e}", path.display())),
    };
    match openssl::x509::X509::stack_from_pem(&pem) {
        Ok(certs) if !certs.is_empty() => None,
        Ok(_) => Some(format!("`{}` holds no PEM certificate", path.display())),
        Err(e) => Some(format!(
            "`{}` is not a PEM certificate: {}",
            path.display(),
            crate::tls::first_reason(&e)
        )),
    }
}

/// Whether the process can write to `dir` (an existing directory).
fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a NUL-terminated path that lives across the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// `None` when `dir` exists as a writable directory or can be created, else why not. Nothing
/// is created here (`check` has no side effects); the ACME service creates it.
pub fn storage_problem(dir: &Path) -> Option<String> {
    let shown = dir.display();
    let mut at = dir;
    loop {
        match std::fs::metadata(at) {
            Ok(m) if !m.is_dir() => {
                return Some(if at == dir {
                    format!("`storage` `{shown}` is not a directory")
                } else {
                    format!(
                        "`storage` `{shown}` cannot be created: `{}` is not a directory",
                        at.display()
                    )
                })
            }
            Ok(_) if writable(at) => return None,
            Ok(_) if at == dir => {
                return Some(format!(
                    "`storage` `{shown}` is not writable by this process"
                ))
            }
            Ok(_) => {
                return Some(format!(
                    "`storage` `{shown}` cannot be created: `{}` is not writable by this process",
                    at.display()
                ))
            }
            // Missing, or under a file: look at the parent.
            Err(e)
                if e.kind() != std::io::ErrorKind::NotFound
                    && e.raw_os_error() != Some(libc::ENOTDIR) =>
            {
                return Some(format!("`storage` `{shown}` cannot be used: {e}"))
            }
            Err(_) => match at.parent() {
                Some(p) if !p.as_os_str().is_empty() => at = p,
                _ => return None,
            },
        }
    }
}

/// Checks the `acme` section against the domains and listeners; `None` when no domain has
/// `tls: acme` (the section alone is checked, then ignored).
pub fn compile(
    file: &FileConfig,
    listeners: &Listeners,
    errors: &mut Vec<ConfigError>,
) -> Option<Settings> {
    let mut err = |mark: Mark, m: String| errors.push(file.error(mark, m));
    let mut domains = Vec::new();
    for d in &file.domains {
        if d.value.tls != Some(DomainTls::Acme) {
            continue;
        }
        let at = d.mark_of("tls");
        let name = d.value.name.to_ascii_lowercase();
        let name = name.strip_suffix('.').unwrap_or(&name).to_string();
        if name.starts_with("*.") {
            err(at, format!("`{name}`: HTTP-01 and TLS-ALPN-01 cannot validate a wildcard name (it needs DNS-01, which anygate does not do); give it `tls: {{ cert, key }}`"));
            continue;
        }
        if file.acme.is_none() && !file.incomplete.acme {
            err(at, "`tls: acme` needs the top-level `acme:` section (e.g. `acme: { email: ops@example.com, storage: /var/lib/anygate/acme }`)".into());
        }
        if listeners.https.is_none() {
            err(
                at,
                "`tls: acme` needs an HTTPS listener (`listen.https`) to serve the certificate"
                    .into(),
            );
        }
        domains.push(name);
    }
    let item: &Item<crate::config::model::Acme> = file.acme.as_ref()?;
    let a = &item.value;
    let directory = a.directory.clone().unwrap_or_else(|| LETS_ENCRYPT.into());
    if let Some(m) = directory_problem(&directory) {
        err(item.mark_of("directory"), m);
    }
    let email = a.email.as_ref().map(|e| {
        let e = e.trim();
        e.strip_prefix("mailto:").unwrap_or(e).to_string()
    });
    if let Some(e) = &email {
        if !valid_email(e) {
            err(
                item.mark_of("email"),
                format!("`email` `{e}` is not an email address"),
            );
        }
    }
    let ca_roots = a.ca_roots.as_ref().map(|p| relative_to(&file.path, p));
    if let Some(m) = ca_roots.as_deref().and_then(roots_problem) {
        err(item.mark_of("ca_roots"), m);
    }
    let storage = relative_to(&file.path, a.storage.as_deref().unwrap_or(DEFAULT_STORAGE));
    if !domains.is_empty() || a.storage.is_some() {
        if let Some(m) = storage_problem(&storage) {
            err(item.mark_of("storage"), m);
        }
    }
    let renew_before = match a.renew_before.as_deref().map(parse_duration) {
        None => DEFAULT_RENEW_BEFORE,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(Ok(_)) => {
            err(
                item.mark_of("renew_before"),
                "`renew_before` must be more than 0".into(),
            );
            DEFAULT_RENEW_BEFORE
        }
        Some(Err(m)) => {
            err(item.mark_of("renew_before"), m);
            DEFAULT_RENEW_BEFORE
        }
    };
    let challenge = match a.challenge.as_deref() {
        None | Some("http-01") => Challenge::Http01,
        Some("tls-alpn-01") => Challenge::TlsAlpn01,
        Some(other) => {
            err(
                item.mark_of("challenge"),
                format!("`challenge` is `http-01` or `tls-alpn-01`, not `{other}` (anygate does not do dns-01)"),
            );
            Challenge::Http01
        }
    };
    if !domains.is_empty() {
        let (listener, needs) = match challenge {
            Challenge::Http01 => (listeners.http, "`challenge: http-01` needs an HTTP listener (`listen.http`, reachable on port 80 from the CA); or use `challenge: tls-alpn-01`"),
            Challenge::TlsAlpn01 => (listeners.https, "`challenge: tls-alpn-01` needs an HTTPS listener (`listen.https`, reachable on port 443 from the CA)"),
        };
        if listener.is_none() {
            err(item.mark_of("challenge"), needs.into());
        }
    }
    (!domains.is_empty()).then_some(Settings {
        directory,
        email,
        ca_roots,
        storage,
        renew_before,
        challenge,
        domains,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_and_directories() {
        assert!(valid_email("ops@example.com"));
        for bad in [
            "",
            "ops",
            "@example.com",
            "ops@",
            "ops@localhost",
            "a b@example.com",
            "a@b@example.com",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
        assert_eq!(directory_problem("https://acme.example/dir"), None);
        assert!(directory_problem("http://acme.example/dir").is_some());
        assert!(directory_problem("acme.example").is_some());
        assert!(directory_problem("https:///dir").is_some());
    }

    #[test]
    fn storage_is_checked_without_creating_it() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("a/b/c");
        assert_eq!(storage_problem(&new), None);
        assert!(!new.exists(), "check creates nothing");
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        assert!(storage_problem(&file)
            .unwrap()
            .contains("is not a directory"));
        let under_file = file.join("sub");
        assert!(storage_problem(&under_file)
            .unwrap()
            .contains("cannot be created"));
    }
}
