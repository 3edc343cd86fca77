//! The functions' HTTPS client (`autodeploy_api::aws::https_client`) against a local HTTPS
//! endpoint whose certificate comes from a test CA (`tests/fixtures/tls`): the connectors that
//! carry requests trust exactly the roots they were given. Trusting the test CA, a DynamoDB
//! call completes its TLS handshake and gets the endpoint's answer; with the compiled-in
//! Mozilla roots the same call is refused at the handshake and never reaches the endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::config::{Credentials, SharedHttpClient};
use aws_sdk_dynamodb::error::SdkError;
use aws_smithy_http_client::tls::TrustStore;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

const CA: &str = "tests/fixtures/tls/ca.pem";
const CERT: &str = "tests/fixtures/tls/server.pem";
const KEY: &str = "tests/fixtures/tls/server.key";

/// What the endpoint answers every request with: a DynamoDB error, so the SDK reports a
/// service error (the request went through) rather than a transport one.
const ANSWER: &str = r#"{"__type":"com.amazon.coral.validate#ValidationException","message":"reached the endpoint"}"#;

struct Endpoint {
    url: String,
    handshakes: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)).unwrap()
}

/// TLS as a local endpoint serves it: the test CA's certificate for `localhost` and
/// `127.0.0.1`.
pub(crate) fn test_tls_acceptor() -> tokio_rustls::TlsAcceptor {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&fixture(CERT))
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(&fixture(KEY)).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// The test CA, as a client trusts it.
pub(crate) fn test_ca_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&fixture(CA)) {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

/// The test CA's certificate file.
pub(crate) fn test_ca_file() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(CA)
}

async fn endpoint() -> Endpoint {
    let acceptor = test_tls_acceptor();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let (handshakes, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (ok, failed) = (Arc::clone(&handshakes), Arc::clone(&refused));
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, ok, failed) = (acceptor.clone(), Arc::clone(&ok), Arc::clone(&failed));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    failed.fetch_add(1, Ordering::SeqCst);
                    return;
                };
                ok.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(|_req| async {
                    http::Response::builder()
                        .status(400)
                        .header("content-type", "application/x-amz-json-1.0")
                        .body(Full::new(Bytes::from_static(ANSWER.as_bytes())))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Endpoint {
        url,
        handshakes,
        refused,
        task,
    }
}

/// A DynamoDB call to `endpoint` through `http_client`.
async fn describe_table(
    endpoint: &Endpoint,
    http_client: SharedHttpClient,
) -> Result<(), SdkError<aws_sdk_dynamodb::operation::describe_table::DescribeTableError>> {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .endpoint_url(&endpoint.url)
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&config)
        .describe_table()
        .table_name("t")
        .send()
        .await
        .map(|_| ())
}

#[tokio::test]
async fn requests_trust_the_roots_they_are_given() {
    let endpoint = endpoint().await;
    let trusting_test_ca =
        autodeploy_api::aws::https_client_trusting(TrustStore::empty().with_pem_certificate(fixture(CA))).unwrap();

    let err = describe_table(&endpoint, trusting_test_ca).await.unwrap_err();
    let service = err
        .as_service_error()
        .unwrap_or_else(|| panic!("not an answer of the endpoint: {err:?}"));
    assert!(format!("{service:?}").contains("reached the endpoint"), "{service:?}");
    assert_eq!(endpoint.refused.load(Ordering::SeqCst), 0);
    assert!(endpoint.handshakes.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn the_compiled_roots_refuse_a_certificate_they_do_not_sign() {
    let endpoint = endpoint().await;
    let err = describe_table(
        &endpoint,
        autodeploy_api::aws::https_client_trusting(autodeploy_api::aws::compiled_roots()).unwrap(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, SdkError::DispatchFailure(_)),
        "the call should fail at the TLS handshake: {err:?}"
    );
    let chain = format!("{:?}", aws_sdk_dynamodb::error::DisplayErrorContext(&err));
    assert!(chain.contains("UnknownIssuer"), "{chain}");
    assert_eq!(endpoint.handshakes.load(Ordering::SeqCst), 0);
    assert!(endpoint.refused.load(Ordering::SeqCst) >= 1);
}
