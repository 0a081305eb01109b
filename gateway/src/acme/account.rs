//! The ACME account: its HTTPS client to the CA (the system's roots plus `ca_roots`) and its
//! key, kept in the store and made once.

use instant_acme::{Account, AccountCredentials, NewAccount};
use log::info;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::path::Path;
use std::sync::Arc;

use super::order::why;
use super::settings::Settings;
use super::storage::CertStore;

/// The client's HTTPS stack: rustls (the listener stays on OpenSSL; the two never share
/// anything), trusting the platform's roots and `ca_roots`.
fn http_client(ca_roots: Option<&Path>) -> Result<Box<dyn instant_acme::HttpClient>, String> {
    let extra = match ca_roots {
        Some(p) => CertificateDer::pem_file_iter(p)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read `ca_roots` {}: {e}", p.display()))?,
        None => Vec::new(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(|e| format!("cannot set up the roots to trust the CA with: {e}"))?;
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client settings: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(https);
    Ok(Box::new(client))
}

/// The account for `settings.directory`: the stored one (unless `fresh`), or a new one (then
/// stored, replacing the old).
pub async fn load_or_create(
    settings: &Settings,
    store: &dyn CertStore,
    fresh: bool,
) -> Result<Account, String> {
    let builder = || http_client(settings.ca_roots.as_deref()).map(Account::builder_with_http);
    let stored = match fresh {
        true => None,
        false => store.account().await.map_err(|e| e.to_string())?,
    };
    if let Some(bytes) = stored {
        let creds: AccountCredentials = serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "the stored account ({}) is unreadable: {e}",
                store.describe()
            )
        })?;
        return builder()?.from_credentials(creds).await.map_err(|e| {
            format!(
                "cannot reach the ACME directory {}: {}",
                settings.directory,
                why(&e)
            )
        });
    }
    let contact = settings.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, creds) = builder()?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory.clone(),
            None,
        )
        .await
        .map_err(|e| {
            format!(
                "cannot create an account at {}: {}",
                settings.directory,
                why(&e)
            )
        })?;
    let bytes = serde_json::to_vec(&creds).map_err(|e| e.to_string())?;
    store.put_account(&bytes).await.map_err(|e| e.to_string())?;
    info!(
        "ACME: created account {} at {} (stored in {})",
        account.id(),
        settings.directory,
        store.describe()
    );
    Ok(account)
}
