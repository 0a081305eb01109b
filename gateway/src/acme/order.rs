//! One RFC 8555 order for one domain: publish the challenge answer, tell the CA, wait for the
//! validation, send the CSR, fetch the chain. Errors carry the CA's own text.

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy,
};
use std::time::Duration;

use super::storage::{CertStore, PendingChallenge, StoredCert};
use crate::config::model::Challenge;

/// How long the CA gets to validate, then to issue.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(1.5)
    .timeout(Duration::from_secs(120));

/// An error with its causes (hyper's "client error (Connect)" alone does not say why).
pub fn why(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// Orders a certificate for `domain` with `account`, answering `challenge` through `store`.
pub async fn order(
    account: &Account,
    domain: &str,
    challenge: Challenge,
    store: &dyn CertStore,
) -> Result<StoredCert, String> {
    let ids = [Identifier::Dns(domain.to_string())];
    let mut order = account
        .new_order(&NewOrder::new(&ids))
        .await
        .map_err(|e| format!("new order: {}", why(&e)))?;
    let mut published = Vec::new();
    let result = validate_and_finalize(&mut order, domain, challenge, store, &mut published).await;
    for p in &published {
        if let Err(e) = store.remove_challenge(p).await {
            log::warn!("ACME {domain}: cannot withdraw the challenge answer: {e}");
        }
    }
    result
}

async fn validate_and_finalize(
    order: &mut instant_acme::Order,
    domain: &str,
    challenge: Challenge,
    store: &dyn CertStore,
    published: &mut Vec<PendingChallenge>,
) -> Result<StoredCert, String> {
    let kind = match challenge {
        Challenge::Http01 => ChallengeType::Http01,
        Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(|e| format!("authorization: {}", why(&e)))?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(format!("the authorization is {other:?}")),
        }
        let mut ch = authz
            .challenge(kind.clone())
            .ok_or_else(|| format!("the CA offers no {kind:?} challenge"))?;
        let key_authorization = ch.key_authorization();
        let pending = match challenge {
            Challenge::Http01 => PendingChallenge::Http01 {
                token: ch.token.clone(),
                key_authorization: key_authorization.as_str().to_string(),
            },
            Challenge::TlsAlpn01 => {
                let mut digest = [0u8; 32];
                digest.copy_from_slice(key_authorization.digest().as_ref());
                PendingChallenge::TlsAlpn01 {
                    domain: domain.to_string(),
                    digest,
                }
            }
        };
        store
            .put_challenge(&pending)
            .await
            .map_err(|e| format!("cannot publish the challenge answer: {}", why(&e)))?;
        published.push(pending);
        ch.set_ready()
            .await
            .map_err(|e| format!("challenge: {}", why(&e)))?;
    }
    let status = order
        .poll_ready(&POLL)
        .await
        .map_err(|e| format!("validation: {}", why(&e)))?;
    if status != OrderStatus::Ready {
        return Err(format!("validation failed: {}", why_invalid(order).await));
    }
    let key_pem = order
        .finalize()
        .await
        .map_err(|e| format!("finalize: {}", why(&e)))?;
    let chain_pem = order
        .poll_certificate(&POLL)
        .await
        .map_err(|e| format!("certificate: {}", why(&e)))?;
    Ok(StoredCert { chain_pem, key_pem })
}

/// The CA's reasons for an invalid order: the errors of its challenges.
async fn why_invalid(order: &mut instant_acme::Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        if authz.refresh().await.is_err() {
            continue;
        }
        for c in &authz.challenges {
            if let Some(p) = &c.error {
                reasons.push(p.to_string());
            }
        }
    }
    if reasons.is_empty() {
        "the order is invalid (the CA gave no reason)".into()
    } else {
        reasons.join("; ")
    }
}
