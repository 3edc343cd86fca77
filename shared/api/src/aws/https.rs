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
//! When a client is created, the SDK builds one connector and throws it away, only so that the
//! system store loads during init rather than on the first request (see
//! `validate_base_client_config` in `aws-smithy-http-client`). With the roots compiled in
//! there is nothing to load, and that connector (a rustls configuration and a hyper client per
//! SDK client) would be init time spent on nothing, so [`https_client`] skips that step. The
//! connectors that carry requests are built with the request's settings and get the whole set:
//! the first request decodes the roots once (docs/cold-start.md has what it costs).

use std::sync::OnceLock;

use aws_sdk_dynamodb::config::{ConfigBag, HttpClient, RuntimeComponents, SharedHttpClient};
use aws_sdk_dynamodb::error::BoxError;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{HttpConnectorSettings, SharedHttpConnector};
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
    Ok(match Roots::from_env() {
        Roots::Compiled => SharedHttpClient::new(NoWarmUp(https_client_with(compiled_roots)?)),
        // The SDK's warm-up loads the system store during init, as it intends.
        Roots::System => https_client_with(TrustStore::default)?,
    })
}

/// The HTTPS client for the SDK, trusting exactly `roots` for requests.
pub fn https_client_trusting(roots: TrustStore) -> Result<SharedHttpClient, String> {
    Ok(SharedHttpClient::new(NoWarmUp(https_client_with(move || {
        roots.clone()
    })?)))
}

/// The HTTPS client for the SDK; `roots` gives the trust store of each connector, when it is
/// built (so the compiled-in bundle is not even encoded during init).
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
        // `TlsContextBuilder::build` cannot fail today; should it ever, trust nothing (every
        // HTTPS request fails, loudly) rather than something unintended.
        let tls = context(roots()).unwrap_or_else(|err| {
            tracing::error!(error = %err, "no TLS configuration: HTTPS requests to AWS will fail");
            trusting_nothing.clone()
        });
        builder.tls_context(tls).build()
    }))
}

/// An HTTPS client that skips the SDK's warm-up connector (module comment): everything else
/// is the wrapped client's.
#[derive(Debug)]
struct NoWarmUp(SharedHttpClient);

impl HttpClient for NoWarmUp {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    // `validate_base_client_config` keeps the trait's default, which builds nothing.

    fn validate_final_config(&self, components: &RuntimeComponents, cfg: &ConfigBag) -> Result<(), BoxError> {
        self.0.validate_final_config(components, cfg)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.0.connector_metadata()
    }
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

    /// Counts the connectors built (each asks for its roots once).
    fn counting_client() -> (SharedHttpClient, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let built = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&built);
        let client = https_client_with(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            TrustStore::empty()
        })
        .unwrap();
        (client, built)
    }

    fn create_dynamodb_client(http: SharedHttpClient) {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_dynamodb::config::Region::new("eu-west-1"))
            .http_client(http)
            .build();
        let _ = aws_sdk_dynamodb::Client::from_conf(config);
    }

    #[test]
    fn creating_a_client_builds_no_connector() {
        use std::sync::atomic::Ordering;
        // The SDK's own behaviour, which the wrapper exists to skip.
        let (plain, built) = counting_client();
        create_dynamodb_client(plain);
        assert_eq!(built.load(Ordering::SeqCst), 1);

        let (plain, built) = counting_client();
        create_dynamodb_client(SharedHttpClient::new(NoWarmUp(plain)));
        assert_eq!(built.load(Ordering::SeqCst), 0);
    }
}
