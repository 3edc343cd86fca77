//! The dispatcher's HTTP client: one attempt to deliver a request to a target.
//!
//! One client per process (connections are pooled and reused), built from the stack the AWS
//! SDK already links: hyper 1 with hyper-util's client, rustls on aws-lc, Mozilla's roots
//! compiled in (`webpki-root-certs`) unless the operator asks for the system's. HTTP/1.1
//! only, no proxy, no redirect followed (a 3xx is an answer, and a failure).
//!
//! Addresses are checked where the connection is made, so that what was checked is what is
//! connected to: host names are resolved by [`CheckedResolver`], which refuses a name when
//! any of its addresses is not allowed (`autodeploy_core::target::address`), and the
//! connector refuses a literal address that is not allowed before connecting to it. A
//! refused address fails the deployment; nothing is sent.
//!
//! An attempt has a time limit (15 s by default) from connecting to the response's headers;
//! what is left of it bounds reading the response's body, of which at most 64 KiB is read.

use std::error::Error as StdError;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use autodeploy_core::target::TargetSpec;
use autodeploy_core::target::address::address_allowed;
use autodeploy_core::target::delivery::{ATTEMPT_TIMEOUT, AttemptOutcome, Observation, classify, response_message};
use bytes::Bytes;
use http::Uri;
use http::header::RETRY_AFTER;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

type BoxError = Box<dyn StdError + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// How long connecting to one address may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of a response's body that is read (for the target's error message).
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// How long an idle pooled connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How the sender is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderConfig {
    /// `AUTODEPLOY_TARGETS_ALLOW_PRIVATE`: allow every address, and `http`.
    pub allow_private: bool,
    /// The time limit of one attempt.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Trust the operating system's roots (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured) instead
    /// of the compiled-in ones, e.g. for an on-premises engine behind a private CA.
    pub system_roots: bool,
}

impl SenderConfig {
    pub fn new(allow_private: bool) -> Self {
        SenderConfig {
            allow_private,
            timeout: ATTEMPT_TIMEOUT,
            connect_timeout: CONNECT_TIMEOUT,
            system_roots: false,
        }
    }
}

/// Why the sender could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    #[error("building the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("no trusted root certificate could be loaded")]
    NoRoots,
}

/// Why an address was refused: the attempt fails and nothing is sent. The message is the
/// deployment's `last_error`; it does not say what a name resolved to (that would show a
/// tenant the operator's internal DNS), while `Debug` does, for the operator's logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the target's address {0} is not public, and private targets are not allowed")]
    Address(IpAddr),
    #[error("the target's host name resolves to an address that is not public, and private targets are not allowed")]
    ResolvesTo(IpAddr),
}

/// Sends attempts to targets. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct Sender {
    client: Client<HttpsConnector<CheckedConnector>, Full<Bytes>>,
    config: SenderConfig,
}

impl Sender {
    pub fn new(config: SenderConfig) -> Result<Sender, SenderError> {
        Sender::trusting(config, roots(config.system_roots))
    }

    /// A sender that trusts exactly `roots` (`config.system_roots` aside): a private CA's, for
    /// an on-premises engine or a test's receiver.
    pub fn trusting(config: SenderConfig, roots: rustls::RootCertStore) -> Result<Sender, SenderError> {
        let tls = tls_config(roots)?;
        let mut http = HttpConnector::new_with_resolver(CheckedResolver {
            allow_private: config.allow_private,
        });
        // The TLS layer above takes the `https` URIs.
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(CheckedConnector {
                inner: http,
                allow_private: config.allow_private,
            });
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Ok(Sender { client, config })
    }

    pub fn config(&self) -> &SenderConfig {
        &self.config
    }

    /// Make one attempt at `target` (a request from
    /// `autodeploy_core::target::request::build_request`) and say what it means for that
    /// engine. The target's credentials, those the request carries and a webhook's secret
    /// alike, are removed from its message (whatever their case).
    pub async fn send_to(&self, target: &TargetSpec, request: http::Request<Vec<u8>>) -> AttemptOutcome {
        let observation = self.observe(request, &target.secrets()).await;
        classify(target.target_type(), observation, SystemTime::now())
    }

    async fn observe(&self, request: http::Request<Vec<u8>>, redacted: &[&str]) -> Observation {
        match request.uri().scheme_str() {
            Some("https") => {}
            Some("http") if self.config.allow_private => {}
            _ => {
                return Observation::NotSent(
                    "the target URL must use https, and private targets are not allowed".to_owned(),
                );
            }
        }
        let mut secrets = credentials(&request);
        secrets.extend(redacted.iter().map(|s| (*s).to_owned()));
        let started = Instant::now();
        let request = request.map(|body| Full::new(Bytes::from(body)));
        let response = match tokio::time::timeout(self.config.timeout, self.client.request(request)).await {
            Err(_) => return Observation::TimedOut(self.config.timeout),
            Ok(Err(error)) => return failure(&error),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header(RETRY_AFTER.as_str());
        let rate_limit_reset = header("x-ratelimit-remaining")
            .is_some_and(|remaining| remaining.trim() == "0")
            .then(|| header("x-ratelimit-reset").unwrap_or_default());
        // Read the body (bounded, in the attempt's remaining time) so that the connection can
        // be reused, and for the target's own message when it refused.
        let remaining = self.config.timeout.saturating_sub(started.elapsed());
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BODY).collect();
        let message = match tokio::time::timeout(remaining, body).await {
            Ok(Ok(body)) if !status.is_success() => {
                let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
                response_message(&body.to_bytes(), &secrets)
            }
            _ => None,
        };
        Observation::Response {
            status: status.as_u16(),
            retry_after,
            message,
            rate_limit_reset,
        }
    }
}

/// The credentials a request carries (its sensitive headers: an `Authorization` whole and
/// without its scheme; a `webhook-signature` whole, each of its space-separated signatures,
/// and each without its `v1,`), so that a target echoing one does not get it into
/// `last_error`.
fn credentials<B>(request: &http::Request<B>) -> Vec<String> {
    let mut out = Vec::new();
    for value in request.headers().values().filter(|v| v.is_sensitive()) {
        if let Ok(value) = value.to_str() {
            for part in value.split(' ').filter(|p| !p.is_empty()) {
                if let Some((_, signature)) = part.split_once(',') {
                    out.push(signature.to_owned());
                }
                out.push(part.to_owned());
            }
            out.push(value.to_owned());
        }
    }
    out.retain(|s| !is_scheme(s));
    // The longest first, so that a whole header is removed before its token part.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

/// An `Authorization` scheme alone (`Token`, `Bearer`): not a secret, and far too common a
/// word to remove from a message.
fn is_scheme(part: &str) -> bool {
    ["token", "bearer", "basic"]
        .iter()
        .any(|s| part.eq_ignore_ascii_case(s))
}

/// What a failed request means: a refused address (not sent), or a connection that could not
/// be made or broke (retried). The sentence names the deepest cause, which never holds a
/// header or the URL.
fn failure(error: &hyper_util::client::legacy::Error) -> Observation {
    let mut cause: &(dyn StdError + 'static) = error;
    loop {
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return Observation::NotSent(refused.to_string());
        }
        match cause.source() {
            Some(next) => cause = next,
            None => break,
        }
    }
    let detail = lower_first(&cause.to_string());
    Observation::ConnectionFailed(if error.is_connect() {
        format!("could not connect to the target: {detail}")
    } else {
        format!("the connection to the target failed: {detail}")
    })
}

fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The operating system's roots, or the compiled-in ones.
fn roots(system_roots: bool) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    if system_roots {
        // Certificates that fail to load or parse are skipped, as OpenSSL does.
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    } else {
        roots.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
    }
    roots
}

fn tls_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, SenderError> {
    if roots.is_empty() {
        return Err(SenderError::NoRoots);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Resolves host names through the system resolver (`getaddrinfo`, on Tokio's blocking pool)
/// and refuses a name any of whose addresses is not allowed: a name that also points inside
/// the network is refused whole rather than trusted for its other addresses.
#[derive(Debug, Clone, Copy)]
pub struct CheckedResolver {
    allow_private: bool,
}

impl Service<Name> for CheckedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            check_addresses(addresses.iter().map(SocketAddr::ip), allow_private)?;
            Ok(addresses.into_iter())
        })
    }
}

/// `Err` naming the first address that is not allowed.
fn check_addresses(addresses: impl IntoIterator<Item = IpAddr>, allow_private: bool) -> Result<(), Refused> {
    match addresses.into_iter().find(|ip| !address_allowed(*ip, allow_private)) {
        Some(ip) => Err(Refused::ResolvesTo(ip)),
        None => Ok(()),
    }
}

/// Check a target's host as it resolves now, for the API to refuse a target at write time
/// (SPEC: refused at write time and again at send time). A literal address is checked as it
/// is; a name that does not resolve (yet) is not refused: the attempts will tell.
pub async fn check_host(host: &str, allow_private: bool) -> Result<(), Refused> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return if address_allowed(ip, allow_private) {
            Ok(())
        } else {
            Err(Refused::Address(ip))
        };
    }
    match tokio::net::lookup_host((host, 0)).await {
        Ok(addresses) => check_addresses(addresses.map(|a| a.ip()), allow_private),
        Err(_) => Ok(()),
    }
}

/// The TCP connector with the literal-address check in front: the resolver only sees names,
/// so an address written in the URL is checked here before anything connects to it.
#[derive(Clone)]
pub struct CheckedConnector {
    inner: HttpConnector<CheckedResolver>,
    allow_private: bool,
}

impl Service<Uri> for CheckedConnector {
    type Response = <HttpConnector<CheckedResolver> as Service<Uri>>::Response;
    type Error = BoxError;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let literal = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse::<IpAddr>().ok());
        if let Some(ip) = literal.filter(|ip| !address_allowed(*ip, self.allow_private)) {
            return Box::pin(async move { Err(Refused::Address(ip).into()) });
        }
        let connecting = self.inner.call(uri);
        Box::pin(async move { connecting.await.map_err(Into::into) })
    }
}

#[cfg(test)]
#[path = "send_tests.rs"]
mod tests;
