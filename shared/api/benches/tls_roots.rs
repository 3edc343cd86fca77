//! What a Lambda function's first AWS request spends on its TLS roots, the part of a cold
//! start that `scripts/coldstart` does not see (README "Cold start"). The SDK builds a
//! connector per client configuration on the first request, and each connector decodes its
//! trust store:
//!
//! - `compiled roots: encode bundle` — the Mozilla roots to PEM, once per process;
//! - `compiled roots: connector` — a connector trusting that bundle (PEM decoding and
//!   certificate parsing), what each first request of a client configuration pays;
//! - `system roots: connector` — the same with the operating system's store once it has been
//!   read (the SDK caches the files it read at init, which `scripts/coldstart` measures).
//!
//! Run: `cargo bench -p autodeploy-api --features aws --bench tls_roots`

use autodeploy_api::aws::{compiled_roots, encode_compiled_roots};
use aws_smithy_http_client::Connector;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore};
use criterion::{Criterion, criterion_group, criterion_main};

fn connector(roots: TrustStore) -> Connector {
    let context = TlsContext::builder()
        .with_trust_store(roots)
        .build()
        .unwrap_or_default();
    Connector::builder()
        .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build()
}

fn tls_roots(c: &mut Criterion) {
    let mut group = c.benchmark_group("tls roots");
    group.bench_function("compiled roots: encode bundle", |b| b.iter(encode_compiled_roots));
    group.bench_function("compiled roots: connector", |b| b.iter(|| connector(compiled_roots())));
    // The first connector reads the system store (and the SDK keeps it); later ones parse it.
    drop(connector(TrustStore::default()));
    group.bench_function("system roots: connector", |b| {
        b.iter(|| connector(TrustStore::default()))
    });
    group.finish();
}

criterion_group!(benches, tls_roots);
criterion_main!(benches);
