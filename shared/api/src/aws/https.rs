//! The HTTPS client every SDK client of a function shares.
//!
//! It is the SDK's default client (hyper 1, rustls on aws-lc, proxies from the environment),
//! built the way the SDK builds it, except for the certificates it trusts: Mozilla's root set,
//! compiled in (`webpki-root-certs`, the set browsers and rustls ship), rather than the
//! operating system's store. Loading the system store means opening and decoding a file per
//! certificate (~150 on a Debian image) at every cold start: that was most of the functions'
//! init time (README "Cold start"). An operator who needs the system store (a private CA on a
//! custom endpoint, a TLS-inspecting proxy) sets `SSL_CERT_FILE` or `SSL_CERT_DIR`, as for
//! any OpenSSL-style client, and gets it.
//!
//! The SDK builds one connector when each client is created, only so that the system store
//! loads during init rather than on the first request, and throws it away (see
//! `validate_base_client_config` in `aws-smithy-http-client`). With the roots compiled in there
//! is nothing to load, so that throwaway connector gets no roots at all; the connectors that
//! carry requests, built with the request's settings, get the whole set. The first request
//! decodes the roots once (~0.3 ms), where every client's creation would have done it.

use std::sync::OnceLock;

use aws_sdk_dynamodb::config::SharedHttpClient;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use base64::Engine;

/// Where the client's trusted roots come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roots {
    /// Mozilla's root set, compiled in.
    Compiled,
    /// The operating system's store (`SSL_CERT_FILE` / `SSL_CERT_DIR` or the platform's
    /// default locations).
    System,
}

impl Roots {
    /// `System` when the environment points at a certificate file or directory, as OpenSSL
    /// reads them; `Compiled` otherwise. `var` reads one variable.
    pub fn from_env_with(var: impl Fn(&str) -> Option<String>) -> Roots {
        let set = |name: &str| var(name).is_some_and(|v| !v.trim().is_empty());
        if set("SSL_CERT_FILE") || set("SSL_CERT_DIR") {
            Roots::System
        } else {
            Roots::Compiled
        }
    }

    pub fn from_env() -> Roots {
        Roots::from_env_with(|name| std::env::var(name).ok())
    }
}

/// The HTTPS client for the SDK, trusting the roots the environment selects.
pub fn https_client() -> Result<SharedHttpClient, String> {
    match Roots::from_env() {
        Roots::Compiled => https_client_with(compiled_roots),
        Roots::System => https_client_with(TrustStore::default),
    }
}

/// The HTTPS client for the SDK, trusting exactly `roots` for requests.
pub fn https_client_trusting(roots: TrustStore) -> Result<SharedHttpClient, String> {
    https_client_with(move || roots.clone())
}

/// The HTTPS client for the SDK; `roots` gives the trust store of each connector that carries
/// requests, when it is built (so the compiled-in bundle is not even encoded during init).
fn https_client_with(roots: impl Fn() -> TrustStore + Send + Sync + 'static) -> Result<SharedHttpClient, String> {
    let context = |roots: TrustStore| {
        TlsContext::builder()
            .with_trust_store(roots)
            .build()
            .map_err(|e| format!("building the TLS configuration: {e}"))
    };
    let trusting_nothing = context(TrustStore::empty())?;
    Ok(Builder::new().build_with_connector_fn(move |settings, components| {
        let mut builder = ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::AwsLc));
        builder.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            builder.set_sleep_impl(components.sleep_impl());
        }
        builder.set_proxy_config(Some(ProxyConfig::from_env()));
        // Neither settings nor components: the connector the SDK builds at client creation and
        // discards (module comment). Every other one carries requests and gets the roots.
        let tls = if settings.is_none() && components.is_none() {
            trusting_nothing.clone()
        } else {
            // `TlsContextBuilder::build` cannot fail today; should it ever, trust nothing
            // (every HTTPS request fails, loudly) rather than something unintended.
            context(roots()).unwrap_or_else(|err| {
                tracing::error!(error = %err, "no TLS configuration: HTTPS requests to AWS will fail");
                trusting_nothing.clone()
            })
        };
        builder.tls_context(tls).build()
    }))
}

/// Mozilla's root certificates, for the SDK's trust store.
pub fn compiled_roots() -> TrustStore {
    TrustStore::empty().with_pem_certificate(compiled_roots_pem())
}

/// Mozilla's root certificates as one PEM bundle (the SDK's trust store takes PEM), encoded
/// once per process.
fn compiled_roots_pem() -> &'static [u8] {
    static PEM: OnceLock<Vec<u8>> = OnceLock::new();
    PEM.get_or_init(encode_compiled_roots)
}

/// Mozilla's root certificates, PEM-encoded (uncached: `benches/tls_roots.rs` times it).
#[doc(hidden)]
pub fn encode_compiled_roots() -> Vec<u8> {
    let base64 = base64::engine::general_purpose::STANDARD;
    let mut pem = Vec::with_capacity(webpki_root_certs::TLS_SERVER_ROOT_CERTS.len() * 2_400);
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        pem.extend_from_slice(base64.encode(cert.as_ref()).as_bytes());
        pem.extend_from_slice(b"\n-----END CERTIFICATE-----\n");
    }
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_store_only_when_the_environment_names_one() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
        };
        assert_eq!(Roots::from_env_with(env(&[])), Roots::Compiled);
        assert_eq!(Roots::from_env_with(env(&[("SSL_CERT_FILE", " ")])), Roots::Compiled);
        assert_eq!(
            Roots::from_env_with(env(&[("SSL_CERT_FILE", "/etc/pki/tls/certs/ca-bundle.crt")])),
            Roots::System
        );
        assert_eq!(
            Roots::from_env_with(env(&[("SSL_CERT_DIR", "/etc/ssl/certs")])),
            Roots::System
        );
    }

    #[test]
    fn the_compiled_bundle_holds_every_mozilla_root() {
        let pem = std::str::from_utf8(compiled_roots_pem()).unwrap();
        let base64 = base64::engine::general_purpose::STANDARD;
        let decoded: Vec<Vec<u8>> = pem
            .split("-----BEGIN CERTIFICATE-----\n")
            .skip(1)
            .map(|block| {
                let (body, rest) = block.split_once("\n-----END CERTIFICATE-----\n").unwrap();
                assert!(rest.is_empty(), "{rest}");
                base64.decode(body).unwrap()
            })
            .collect();
        let roots: Vec<&[u8]> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .map(|c| c.as_ref())
            .collect();
        assert_eq!(decoded, roots);
        assert!(roots.len() > 100, "{}", roots.len());
        let store = format!("{:?}", compiled_roots());
        assert!(store.contains("enable_native_roots: false"), "{store}");
    }
}
