//! ALPN on the HTTPS listener: HTTP/2 preferred, HTTP/1.1 allowed, and `acme-tls/1` for the
//! ACME CA's TLS-ALPN-01 validation (RFC 8737).
//!
//! Pingora's `enable_h2()` installs an ALPN select callback that knows only h2 and
//! http/1.1, and OpenSSL runs ALPN selection *after* the certificate callback for TLS 1.2
//! (before it for TLS 1.3). So the offer is read earlier, in the ClientHello callback, which
//! marks the connection; the certificate callback then serves the challenge certificate, and
//! this module's select callback (which replaces Pingora's) picks `acme-tls/1`.

use foreign_types::ForeignTypeRef;
use once_cell::sync::Lazy;
use pingora_core::tls::ssl::{
    select_next_proto, AlpnError, ClientHelloResponse, Ssl, SslAcceptorBuilder, SslRef,
};

/// The protocol name of RFC 8737.
pub const ACME_TLS_1: &[u8] = b"acme-tls/1";
/// ALPN wire format: h2, then http/1.1.
const H2_H1: &[u8] = b"\x02h2\x08http/1.1";
const ACME_WIRE: &[u8] = b"\x0aacme-tls/1";
/// TLS extension number of ALPN.
const EXT_ALPN: u32 = 16;

/// Per-connection mark: the client offered `acme-tls/1`.
static ACME_OFFERED: Lazy<Option<openssl::ex_data::Index<Ssl, bool>>> =
    Lazy::new(|| Ssl::new_ex_index::<bool>().ok());

/// Whether a protocol list in ALPN wire format (length-prefixed names) holds `name`.
pub fn offers(list: &[u8], name: &[u8]) -> bool {
    let mut rest = list;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        if tail.len() < len {
            return false;
        }
        if &tail[..len] == name {
            return true;
        }
        rest = &tail[len..];
    }
    false
}

/// The ALPN extension of the ClientHello being processed (the protocol list, without its
/// 2-byte length), if the client sent one. Only valid inside the ClientHello callback.
fn client_hello_alpn(ssl: &SslRef) -> Option<&[u8]> {
    let mut data: *const u8 = std::ptr::null();
    let mut len: usize = 0;
    // SAFETY: OpenSSL points `data` into the ClientHello it holds for the duration of the
    // callback; the slice does not outlive `ssl`'s borrow.
    let found = unsafe {
        pingora_core::tls::ssl_sys::SSL_client_hello_get0_ext(
            ssl.as_ptr(),
            EXT_ALPN,
            &mut data,
            &mut len,
        )
    };
    if found != 1 || data.is_null() || len < 2 {
        return None;
    }
    // SAFETY: see above; `len` bytes at `data` belong to the ClientHello.
    let ext = unsafe { std::slice::from_raw_parts(data, len) };
    let declared = usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    ext.get(2..2 + declared)
}

/// Whether the handshake on `ssl` is an ACME TLS-ALPN-01 validation.
pub fn is_acme_validation(ssl: &SslRef) -> bool {
    ACME_OFFERED
        .as_ref()
        .and_then(|i| ssl.ex_data(*i))
        .copied()
        .unwrap_or(false)
}

/// Installs the ClientHello and ALPN callbacks on the listener's acceptor.
pub fn install(b: &mut SslAcceptorBuilder) {
    b.set_client_hello_callback(|ssl, _alert| {
        if let Some(index) = ACME_OFFERED.as_ref() {
            if client_hello_alpn(ssl).is_some_and(|l| offers(l, ACME_TLS_1)) {
                ssl.set_ex_data(*index, true);
            }
        }
        Ok(ClientHelloResponse::SUCCESS)
    });
    b.set_alpn_select_callback(|ssl, client| {
        if client.is_empty() {
            return Err(AlpnError::NOACK);
        }
        let server = if is_acme_validation(ssl) {
            ACME_WIRE
        } else {
            H2_H1
        };
        // Unknown protocols only: no ALPN, the client falls back to HTTP/1.1.
        select_next_proto(server, client).ok_or(AlpnError::NOACK)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_lists() {
        assert!(offers(b"\x0aacme-tls/1", ACME_TLS_1));
        assert!(offers(b"\x02h2\x0aacme-tls/1", ACME_TLS_1));
        assert!(!offers(b"\x02h2\x08http/1.1", ACME_TLS_1));
        assert!(!offers(b"\x0bacme-tls/1", ACME_TLS_1), "truncated list");
        assert!(!offers(b"", ACME_TLS_1));
    }
}
