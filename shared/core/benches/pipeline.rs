//! The in-process cost of a GitHub push delivery, next to the floor that no implementation
//! can beat.
//!
//! - `floor/{small,large}`: HMAC-SHA256 of the body plus
//!   `serde_json::from_slice::<IgnoredAny>` (reading the JSON without keeping anything): the
//!   least any verifier-and-parser must do with the bytes.
//! - `pipeline/{small,large}`: the functions `POST /organization/{org}/webhooks/{provider}` calls
//!   in process, in its order (`shared/api/src/web/webhooks.rs`, then `deploy_pushes` in
//!   `shared/api/src/deploy/push.rs`): `verify_signature`, `delivery_id`, `parse_delivery`,
//!   `delivery_keys` (one lookup per distinct repository key in an index of 10,000 services, a
//!   `HashMap` standing for the store's index), `plan_push` and
//!   `PushPlan::nothing_to_deploy`. Not timed: the store's and the queue's calls and the
//!   response.
//! - `stages-{small,large}/*`: the pipeline's stages one by one, to see where time goes.
//! - with `PIPELINE_PAIRED=1`, no criterion run but floor and pipeline alternated in one
//!   process (see [`paired`]), which a busy machine disturbs less.
//!
//! Payloads: `gp-push.json` as published (8,471 bytes, one commit), and a ~1 MiB push
//! synthesized from it by repeating its commit 1,200 times with distinct ids, messages and
//! file paths (under GitHub's 2,048-commit cap, so the file list is known and restrictions
//! apply), pretty-printed as GitHub sends it.
//!
//! The 10,000 services are built once, outside the timed loop: 1,000 repositories of 10
//! services each (exact and glob branches, plain and glob path restrictions, auto-deploy off,
//! a job), one of which is the fixture's repository.
//!
//! Run: `scripts/bench` (or `cargo bench -p autodeploy-core --bench pipeline`).

use std::collections::HashMap;
use std::hint::black_box;

use autodeploy_core::model::{Service, parse_service_document};
use autodeploy_core::plan::{DeliveryKeys, ServiceView, delivery_keys, plan_push};
use autodeploy_core::provider::GitProvider;
use autodeploy_core::push::{Delivery, delivery_id, parse_delivery, verify_signature};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &[u8] = b"a-webhook-secret-of-the-organization";
const SMALL: &[u8] = include_bytes!("../../../tests/fixtures/webhooks/github/gp-push.json");
/// Commits in the synthesized large push: ~1 MiB of body.
const LARGE_COMMITS: usize = 1200;

fn hmac_hex(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The headers GitHub sends with a push, signed for `body`.
fn headers(body: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    let mut set = |name: &'static str, value: &str| {
        map.insert(name, HeaderValue::from_str(value).expect("header value"));
    };
    set("content-type", "application/json");
    set("user-agent", "GitHub-Hookshot/044aadd");
    set("x-github-event", "push");
    set("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958");
    set("x-github-hook-id", "292430182");
    set("x-hub-signature-256", &format!("sha256={}", hmac_hex(body)));
    map
}

/// `gp-push.json` with its one commit repeated `n` times, each with its own id and files, as
/// a long-lived branch merged in would list them. Serialized pretty, as GitHub sends it.
fn large_push(n: usize) -> Vec<u8> {
    let mut doc: Value = serde_json::from_slice(SMALL).expect("fixture is JSON");
    let template = doc["commits"][0].clone();
    let commits: Vec<Value> = (0..n)
        .map(|i| {
            let mut commit = template.clone();
            let id = format!("{i:08x}e7642b48eaad6e3f155c10e46810ec72");
            commit["url"] = json!(format!("https://github.com/binkkatal/sample_app/commit/{id}"));
            commit["id"] = json!(id);
            commit["message"] = json!(format!("Change {i}: a commit message of a realistic length, and a body\n\nthat explains why the change was made and what it touches."));
            commit["added"] = json!([format!("app/models/model_{i}.rb")]);
            commit["modified"] = json!([
                format!("app/controllers/controller_{}.rb", i % 97),
                format!("spec/models/model_{i}_spec.rb")
            ]);
            commit["removed"] = json!(if i % 10 == 0 { vec![format!("docs/old_{i}.md")] } else { vec![] });
            commit
        })
        .collect();
    doc["after"] = commits.last().expect("n > 0")["id"].clone();
    doc["head_commit"]["id"] = doc["after"].clone();
    doc["commits"] = Value::Array(commits);
    serde_json::to_vec_pretty(&doc).expect("serializes")
}

fn service(org: &str, id: &str, doc: Value) -> Service {
    let spec = parse_service_document(org, id, &doc).unwrap_or_else(|e| panic!("{id}: {e:?}"));
    Service {
        id: id.to_owned(),
        organization_id: org.to_owned(),
        spec,
        version: 1,
        created_at: "2026-01-01T00:00:00Z".to_owned(),
        updated_at: "2026-01-01T00:00:00Z".to_owned(),
    }
}

/// Ten services of one repository: (branch, auto_deploy, kind, restrictions).
fn ten_services(org: &str, repo_url: &str, repo_index: usize) -> Vec<Service> {
    let m = |v: &str| json!({"mode": "MATCH", "type": "PATH", "value": v});
    let x = |v: &str| json!({"mode": "EXCLUDE", "type": "PATH", "value": v});
    let variants = [
        ("master", true, "APPLICATION", json!([])),
        ("master", true, "APPLICATION", json!([m("app/")])),
        ("master", true, "APPLICATION", json!([x("docs"), x("README.md")])),
        ("master", true, "APPLICATION", json!([m("**/*.rb")])),
        ("*", true, "APPLICATION", json!([])),
        ("main", true, "APPLICATION", json!([])),
        ("release/*", true, "APPLICATION", json!([m("services/api")])),
        ("master", false, "APPLICATION", json!([])),
        (
            "master",
            true,
            "APPLICATION",
            json!([m("services/api"), x("services/api/docs")]),
        ),
        ("master", true, "JOB", json!([x("**/*.md"), x("docs/**")])),
    ];
    variants
        .into_iter()
        .enumerate()
        .map(|(i, (branch, auto, kind, rules))| {
            service(
                org,
                &format!("svc-{repo_index}-{i}"),
                json!({
                    "environment_id": "production",
                    "kind": kind,
                    "auto_deploy": auto,
                    "git_repository": {"provider": "GITHUB", "url": repo_url, "branch": branch},
                    "deployment_restrictions": rules,
                }),
            )
        })
        .collect()
}

/// 1,000 repositories × 10 services, indexed by normalized repository as the store does.
/// Repository 0 is the fixture's, written as a user would (the ssh form).
fn index() -> HashMap<String, Vec<Service>> {
    let mut by_repo: HashMap<String, Vec<Service>> = HashMap::new();
    for r in 0..1000 {
        let url = if r == 0 {
            "git@github.com:binkkatal/sample_app.git".to_owned()
        } else {
            format!("https://github.com/org-{}/repo-{r}", r % 37)
        };
        for service in ten_services("acme", &url, r) {
            let key = service.repository_key().expect("valid repository URL");
            by_repo.entry(key).or_default().push(service);
        }
    }
    assert_eq!(by_repo.values().map(Vec::len).sum::<usize>(), 10_000);
    by_repo
}

/// A service as the store hands it to the planner (there, a row read back with its last push).
struct Stored<'a>(&'a Service);

impl ServiceView for Stored<'_> {
    fn service(&self) -> &Service {
        self.0
    }
}

/// The candidates of a delivery as `deploy_pushes` fetches them: one lookup in the index per
/// distinct repository key of its pushes.
fn candidates<'a>(keys: &DeliveryKeys, index: &'a HashMap<String, Vec<Service>>) -> HashMap<String, Vec<Stored<'a>>> {
    keys.distinct()
        .into_iter()
        .map(|key| {
            let services = index
                .get(key)
                .map(|services| services.iter().map(Stored).collect())
                .unwrap_or_default();
            (key.to_owned(), services)
        })
        .collect()
}

/// What the webhook route computes for one delivery before it writes: (deploy, skipped)
/// counts of the plan.
#[inline(never)]
fn pipeline(headers: &HeaderMap, body: &[u8], index: &HashMap<String, Vec<Service>>) -> (usize, usize) {
    verify_signature(GitProvider::Github, headers, body, SECRET).expect("signed");
    black_box(delivery_id(GitProvider::Github, headers, body)).expect("a delivery id");
    let pushes = match parse_delivery(GitProvider::Github, headers, body) {
        Ok(Delivery::Pushes(pushes)) => pushes,
        other => panic!("not a push: {other:?}"),
    };
    let keys = delivery_keys(&pushes);
    let by_key = candidates(&keys, index);
    let plan = plan_push(&pushes, &keys, &by_key);
    black_box(plan.nothing_to_deploy("acme", &pushes));
    let deploy = plan.decisions.iter().filter(|d| d.verdict.is_ok()).count();
    (deploy, plan.decisions.len() - deploy)
}

/// The floor: authenticate the bytes and read them as JSON, keeping nothing.
#[inline(never)]
fn floor(body: &[u8]) {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("any key length");
    mac.update(body);
    black_box(mac.finalize());
    black_box(serde_json::from_slice::<serde::de::IgnoredAny>(body).expect("JSON"));
}

fn benches(c: &mut Criterion) {
    let by_repo = index();
    let large = large_push(LARGE_COMMITS);
    let payloads: [(&str, &[u8], HeaderMap); 2] =
        [("small", SMALL, headers(SMALL)), ("large", &large, headers(&large))];
    for (name, body, headers) in &payloads {
        // The loop must time real decisions: on the fixture's repository, 6 of the 10 services
        // deploy, 2 are skipped (auto-deploy off, path restrictions), 2 follow other branches.
        let decided = pipeline(headers, body, &by_repo);
        eprintln!("{name}: {} bytes; (deploy, skipped) = {decided:?}", body.len());
        assert_eq!(decided, (6, 2), "{name}");
    }

    let mut group = c.benchmark_group("floor");
    for (name, body, _) in &payloads {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), body, |b, body| {
            b.iter(|| floor(black_box(body)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("pipeline");
    for (name, body, headers) in &payloads {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), body, |b, body| {
            b.iter(|| pipeline(black_box(headers), black_box(body), &by_repo))
        });
    }
    group.finish();

    // Where the pipeline's time goes, stage by stage (not part of the ratio).
    for (name, body, headers) in &payloads {
        let Ok(Delivery::Pushes(pushes)) = parse_delivery(GitProvider::Github, headers, body) else {
            unreachable!("checked above")
        };
        let mut group = c.benchmark_group(format!("stages-{name}"));
        group.bench_function("hmac", |b| {
            b.iter(|| {
                let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("any key length");
                mac.update(black_box(body));
                black_box(mac.finalize())
            })
        });
        group.bench_function("json-ignored", |b| {
            b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(black_box(body)).expect("JSON"))
        });
        group.bench_function("verify", |b| {
            b.iter(|| verify_signature(GitProvider::Github, headers, black_box(body), SECRET))
        });
        group.bench_function("parse", |b| {
            b.iter(|| parse_delivery(GitProvider::Github, headers, black_box(body)))
        });
        group.bench_function("delivery-keys", |b| b.iter(|| delivery_keys(black_box(&pushes))));
        let keys = delivery_keys(&pushes);
        let by_key = candidates(&keys, &by_repo);
        group.bench_function("plan", |b| {
            b.iter(|| {
                let pushes = black_box(&pushes[..]);
                let plan = plan_push(pushes, &keys, &by_key);
                black_box(plan.nothing_to_deploy("acme", pushes));
                plan.decisions.len()
            })
        });
        group.finish();
    }
}

/// `PIPELINE_PAIRED=1`: instead of criterion's runs, alternate batches of floor and pipeline
/// in one process and compare the fastest batch of each, and each pipeline batch with the
/// floor batch just before it. On a shared machine a neighbour slows whatever runs at the
/// time; alternating puts both under the same conditions, and the fastest batches are the
/// least disturbed. Prints one line per payload: `paired <payload> <bytes> <floor ns>
/// <pipeline ns> <ratio of fastest> <median ratio of pairs>`.
fn paired() {
    const PAIRS: usize = 200;
    let by_repo = index();
    let large = large_push(LARGE_COMMITS);
    let payloads: [(&str, &[u8], HeaderMap); 2] =
        [("small", SMALL, headers(SMALL)), ("large", &large, headers(&large))];
    for (name, body, headers) in &payloads {
        // Batches of about 2 ms of floor.
        let batch = (2_000_000 / body.len()).max(2);
        let time = |f: &mut dyn FnMut()| {
            let start = std::time::Instant::now();
            for _ in 0..batch {
                f();
            }
            start.elapsed().as_nanos() as f64 / batch as f64
        };
        let mut run_floor = || floor(black_box(body));
        let mut run_pipeline = || {
            black_box(pipeline(black_box(headers), black_box(body), &by_repo));
        };
        time(&mut run_floor);
        time(&mut run_pipeline);
        let (mut fastest_floor, mut fastest_pipeline) = (f64::MAX, f64::MAX);
        let mut ratios = Vec::with_capacity(PAIRS);
        for _ in 0..PAIRS {
            let floor_ns = time(&mut run_floor);
            let pipeline_ns = time(&mut run_pipeline);
            fastest_floor = fastest_floor.min(floor_ns);
            fastest_pipeline = fastest_pipeline.min(pipeline_ns);
            ratios.push(pipeline_ns / floor_ns);
        }
        ratios.sort_by(f64::total_cmp);
        println!(
            "paired {name} {} {fastest_floor:.0} {fastest_pipeline:.0} {:.3} {:.3}",
            body.len(),
            fastest_pipeline / fastest_floor,
            ratios[PAIRS / 2]
        );
    }
}

/// One stage of [`stages`], run once per call.
type Stage<'a> = Box<dyn FnMut() + 'a>;

/// `PIPELINE_STAGES=1`: the stages of the pipeline and of the floor, each alone, alternated in
/// one process as [`paired`] does; prints one line per payload and stage: `stage <payload>
/// <stage> <fastest ns>`.
fn stages() {
    const ROUNDS: usize = 200;
    let by_repo = index();
    let large = large_push(LARGE_COMMITS);
    let payloads: [(&str, &[u8], HeaderMap); 2] =
        [("small", SMALL, headers(SMALL)), ("large", &large, headers(&large))];
    for (name, body, headers) in &payloads {
        let Ok(Delivery::Pushes(pushes)) = parse_delivery(GitProvider::Github, headers, body) else {
            unreachable!("a push")
        };
        let keys = delivery_keys(&pushes);
        let by_key = candidates(&keys, &by_repo);
        let batch = (2_000_000 / body.len()).max(2);
        let mut stages: Vec<(&str, Stage<'_>)> = vec![
            (
                "hmac",
                Box::new(|| {
                    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("any key length");
                    mac.update(black_box(body));
                    black_box(mac.finalize());
                }),
            ),
            (
                "json-ignored",
                Box::new(|| {
                    black_box(serde_json::from_slice::<serde::de::IgnoredAny>(black_box(body)).expect("JSON"));
                }),
            ),
            (
                "utf8",
                Box::new(|| {
                    black_box(std::str::from_utf8(black_box(body)).is_ok());
                }),
            ),
            (
                "json-ignored-str",
                Box::new(|| {
                    black_box(
                        serde_json::from_str::<serde::de::IgnoredAny>(
                            std::str::from_utf8(black_box(body)).expect("UTF-8"),
                        )
                        .expect("JSON"),
                    );
                }),
            ),
            (
                "json-value",
                Box::new(|| {
                    black_box(serde_json::from_slice::<serde_json::Value>(black_box(body)).expect("JSON"));
                }),
            ),
            (
                "verify",
                Box::new(|| {
                    black_box(verify_signature(GitProvider::Github, headers, black_box(body), SECRET)).expect("signed");
                }),
            ),
            (
                "delivery-id",
                Box::new(|| {
                    black_box(delivery_id(GitProvider::Github, headers, black_box(body))).expect("a delivery id");
                }),
            ),
            (
                "parse",
                Box::new(|| {
                    black_box(parse_delivery(GitProvider::Github, headers, black_box(body))).expect("a push");
                }),
            ),
            (
                "candidates",
                Box::new(|| {
                    black_box(candidates(black_box(&keys), &by_repo));
                }),
            ),
            (
                "delivery-keys",
                Box::new(|| {
                    black_box(delivery_keys(black_box(&pushes)));
                }),
            ),
            (
                "normalize-1",
                Box::new(|| {
                    black_box(autodeploy_core::repo_url::normalize_repository_url(black_box(
                        &pushes[0].repository_urls[0],
                    )))
                    .ok();
                }),
            ),
            (
                "decide-10",
                Box::new(|| {
                    for s in &by_repo["github.com/binkkatal/sample_app"] {
                        black_box(autodeploy_core::matching::decide_push(s, black_box(&pushes[0])));
                    }
                }),
            ),
            (
                "plan",
                Box::new(|| {
                    let pushes = black_box(&pushes[..]);
                    let plan = plan_push(pushes, &keys, &by_key);
                    black_box(plan.nothing_to_deploy("acme", pushes));
                }),
            ),
        ];
        let mut fastest = vec![f64::MAX; stages.len()];
        for _ in 0..ROUNDS {
            for ((_, stage), fastest) in stages.iter_mut().zip(&mut fastest) {
                let start = std::time::Instant::now();
                for _ in 0..batch {
                    stage();
                }
                *fastest = fastest.min(start.elapsed().as_nanos() as f64 / batch as f64);
            }
        }
        for ((stage, _), fastest) in stages.iter().zip(&fastest) {
            println!("stage {name} {stage} {fastest:.0}");
        }
    }
}

criterion_group!(pipeline_benches, benches);

fn main() {
    if std::env::var_os("PIPELINE_PAIRED").is_some() {
        paired();
        return;
    }
    if std::env::var_os("PIPELINE_STAGES").is_some() {
        stages();
        return;
    }
    pipeline_benches();
    Criterion::default().configure_from_args().final_summary();
}
