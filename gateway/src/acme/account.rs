//! The ACME account: its HTTPS client to the CA (the system's roots plus `ca_roots`) and its
//! key, kept in the store and made once.

use bytes::Bytes;
use http::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use instant_acme::{Account, AccountCredentials, BodyWrapper, BytesResponse, NewAccount};
use log::info;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::order::why;
use super::settings::Settings;
use super::storage::CertStore;

/// One request to the CA gives up after this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The roots the client trusts: the system's (where OpenSSL finds them: `SSL_CERT_FILE`,
/// `SSL_CERT_DIR`, else e.g. /etc/ssl/certs/ca-certificates.crt) and `ca_roots`.
fn roots(ca_roots: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    let mut system = openssl::x509::store::X509StoreBuilder::new().map_err(|e| e.to_string())?;
    // No system bundle is not an error as long as `ca_roots` gives some.
    let _ = system.set_default_paths();
    let mut certs: Vec<openssl::x509::X509> =
        system.build().all_certificates().into_iter().collect();
    if let Some(p) = ca_roots {
        let pem =
            std::fs::read(p).map_err(|e| format!("cannot read `ca_roots` {}: {e}", p.display()))?;
        let extra = openssl::x509::X509::stack_from_pem(&pem)
            .map_err(|e| format!("`ca_roots` {} is not PEM: {e}", p.display()))?;
        certs.extend(extra);
    }
    let mut store = rustls::RootCertStore::empty();
    let ders: Vec<Vec<u8>> = certs.iter().filter_map(|c| c.to_der().ok()).collect();
    store.add_parsable_certificates(
        ders.into_iter()
            .map(rustls::pki_types::CertificateDer::from),
    );
    if store.is_empty() {
        return Err("no roots to trust the CA's HTTPS with: install the system's CA certificates (Debian: ca-certificates) or set `ca_roots`".into());
    }
    Ok(store)
}

/// The client's HTTPS stack: hyper and rustls (the listener stays on OpenSSL; the two share
/// nothing).
struct Https(
    hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<HttpConnector>,
        BodyWrapper<Bytes>,
    >,
);

impl instant_acme::HttpClient for Https {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let sent = tokio::time::timeout(REQUEST_TIMEOUT, self.0.request(req));
        Box::pin(async move {
            match sent.await {
                Ok(Ok(rsp)) => Ok(BytesResponse::from(rsp)),
                Ok(Err(e)) => Err(instant_acme::Error::Other(Box::new(e))),
                Err(_) => Err(instant_acme::Error::Other(
                    format!("no answer from the CA within {REQUEST_TIMEOUT:?}").into(),
                )),
            }
        })
    }
}

fn http_client(ca_roots: Option<&Path>) -> Result<Box<dyn instant_acme::HttpClient>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client settings: {e}"))?
        .with_root_certificates(roots(ca_roots)?)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(https);
    Ok(Box::new(Https(client)))
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
