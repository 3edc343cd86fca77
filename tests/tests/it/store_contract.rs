//! The store contract: one set of cases, each run against SQLite (`<case>::sqlite`) and
//! against DynamoDB on moto (`<case>::dynamo`) by `on_both_stores!`. A case asserts what the trait documentation
//! in `shared/api/src/store.rs` promises, never one backend's choice where the docs leave
//! room (SQLite records deployments `QUEUED`, DynamoDB `PENDING`).
//!
//! Cases specific to AWS (the SQS queue, the table layout, Secrets Manager) follow at the end.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use autodeploy_api::store::{
    AttemptEnd, AttemptStart, DELIVERIES_PAGE_BYTES, DeliveryFilter, DeliveryKey, DeliveryQuery, DeploymentFilter,
    DeploymentQuery, DeploymentQueue, Expected, Guard, Page, PageRequest, RecordOutcome, SecretRecord, ServiceStore,
    Store, StoreError, StoredService, StoredTarget, TenantLimits, TokenRecord,
};
use autodeploy_api::util::deployment_ids_before;
use autodeploy_core::delivery::{DeliveryOutcome, DeliveryRecord, DeliverySource, SkippedService};
use autodeploy_core::deployment::{
    DeploymentRecord, DeploymentRequest, DeploymentResult, DeploymentStatus, ResultStatus, SCHEMA, Trigger,
};
use autodeploy_core::model::{DeployTarget, GitRepository, ImageSource, Service, ServiceKind, ServiceSpec};
use autodeploy_core::provider::GitProvider;
use autodeploy_core::registry::ImageSourceKind;
use autodeploy_core::target::{Secret, Target, TargetType};
use autodeploy_tests::{TestStore, on_both_stores};
use futures::future::join_all;

on_both_stores! {
    ping, put_get_replace, list_services_in_pages, delete_service, services_by_repository, services_by_image_path,
    secrets, tokens, record_with_push_guard, record_with_service_unchanged_guard, a_replay_cannot_roll_a_service_back,
    a_reapply_after_a_rollback_queues, concurrent_pushes_record_once, concurrent_replaces_one_wins,
    list_deployments_newest_first, pending_until_marked_queued, held_behind_older_pending, attempts_only_go_forward,
    concurrent_starts_start_once, deliveries, a_deliveries_page_stays_within_its_bytes, an_attempt_begins_and_delivers,
    a_retried_attempt_begins_again, the_newest_waiting_deployment_wins, final_statuses_never_move,
    an_attempt_ends_only_in_progress, a_deployment_overtaken_by_a_finished_one_never_starts,
    a_service_write_checks_its_targets_type, a_change_of_type_and_an_unfit_service_never_both_pass,
    record_with_still_as_read_guard,
}

// ---------------------------------------------------------------------------------------------
// Builders

const NOW: &str = "2026-11-26T12:00:00Z";

fn new_etag() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A deployment id: UUIDv7, so ids sort by time.
fn new_deployment_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

fn spec(kind: ServiceKind) -> ServiceSpec {
    ServiceSpec {
        environment_id: "production".to_owned(),
        name: "A service".to_owned(),
        kind,
        auto_deploy: true,
        git_repository: None,
        deployment_restrictions: Vec::new(),
        image: None,
        tag_policy: None,
        deploy_target: None,
    }
}

fn service(org: &str, id: &str, spec: ServiceSpec) -> Service {
    Service {
        id: id.to_owned(),
        organization_id: org.to_owned(),
        spec,
        version: 1,
        created_at: NOW.to_owned(),
        updated_at: NOW.to_owned(),
    }
}

/// An application following `https://github.com/{repo}.git` (normalized `github.com/{repo}`).
pub(crate) fn app(org: &str, id: &str, repo: &str) -> Service {
    let mut spec = spec(ServiceKind::Application);
    spec.git_repository = Some(GitRepository {
        provider: GitProvider::Github,
        url: format!("https://github.com/{repo}.git"),
        branch: "main".to_owned(),
        root_path: "/".to_owned(),
    });
    service(org, id, spec)
}

fn container(org: &str, id: &str, registry: &str, image_name: &str, tag: &str) -> Service {
    let mut spec = spec(ServiceKind::Container);
    spec.image = Some(ImageSource {
        registry: registry.to_owned(),
        image_name: image_name.to_owned(),
        tag: tag.to_owned(),
    });
    service(org, id, spec)
}

pub(crate) fn push_request(org: &str, service_id: &str) -> DeploymentRequest {
    DeploymentRequest {
        schema: SCHEMA.to_owned(),
        deployment_id: new_deployment_id(),
        organization_id: org.to_owned(),
        environment_id: "production".to_owned(),
        service_id: service_id.to_owned(),
        service_kind: ServiceKind::Application,
        git_commit_id: Some("9049f1265b7d61be4a8904a9a27120d2064dab3b".to_owned()),
        image_tag: None,
        trigger: Trigger::GitPush {
            provider: GitProvider::Github,
            repository: "github.com/acme/shop".to_owned(),
            branch: "main".to_owned(),
            before: "0000000000000000000000000000000000000001".to_owned(),
            commit_sha: "9049f1265b7d61be4a8904a9a27120d2064dab3b".to_owned(),
            delivery_id: Some("d-1".to_owned()),
            pusher: None,
        },
        requested_at: NOW.to_owned(),
    }
}

fn tag_request(org: &str, service_id: &str, previous: &str, tag: &str) -> DeploymentRequest {
    DeploymentRequest {
        service_kind: ServiceKind::Container,
        git_commit_id: None,
        image_tag: Some(tag.to_owned()),
        trigger: Trigger::ImageTag {
            source: ImageSourceKind::Api,
            registry: "docker.io".to_owned(),
            image_name: "acme/api".to_owned(),
            previous_tag: Some(previous.to_owned()),
            tag: tag.to_owned(),
        },
        ..push_request(org, service_id)
    }
}

/// The guard of a push `before..after`.
pub(crate) fn push(mark: &str) -> Guard {
    Guard::Push {
        mark: mark.to_owned(),
        before: mark.split_once("..").map_or("", |(before, _)| before).to_owned(),
    }
}

/// A delivery remembered until `expires_unix`.
fn key(source: &str, id: &str, expires_unix: i64) -> DeliveryKey {
    DeliveryKey {
        source: source.to_owned(),
        id: id.to_owned(),
        expires_unix,
    }
}

/// A page of one service's deployments, or of all.
fn of_service<'a>(service_id: Option<&str>, page: PageRequest<'a>) -> DeploymentQuery<'a> {
    let filter = DeploymentFilter {
        service_id: service_id.map(str::to_owned),
        status: None,
    };
    DeploymentQuery { filter, page }
}

/// Create `service`, returning its etag.
/// `service`, its deployments delivered by the dispatcher: it names a webhook target, as every
/// service whose deployments the dispatcher attempts does.
async fn create_dispatched(store: &dyn Store, service: &Service) {
    crate::aws_dispatcher::put_webhook_target(store, "hook", "https://deploy.example.com/hook").await;
    let mut service = service.clone();
    service.spec.deploy_target = Some(DeployTarget {
        target_id: "hook".to_owned(),
        external_id: None,
    });
    create(store, &service).await;
}

pub(crate) async fn create(store: &dyn Store, service: &Service) -> String {
    let etag = new_etag();
    store
        .put_service(
            &StoredService::new(service.clone(), etag.clone()),
            Expected::Absent,
            TenantLimits::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("creating {}: {e}", service.id));
    etag
}

async fn stored(store: &dyn Store, org: &str, id: &str) -> StoredService {
    store
        .get_service(org, id)
        .await
        .expect("get_service")
        .unwrap_or_else(|| panic!("service {org}/{id} missing"))
}

fn ids(services: &[StoredService]) -> Vec<String> {
    let mut ids: Vec<String> = services.iter().map(|s| s.service.id.clone()).collect();
    ids.sort();
    ids
}

fn deployment_ids(page: &Page<DeploymentRecord>) -> Vec<String> {
    page.items.iter().map(|d| d.request.deployment_id.clone()).collect()
}

fn recorded_status(outcome: RecordOutcome) -> DeploymentStatus {
    match outcome {
        RecordOutcome::Recorded(status) => status,
        RecordOutcome::GuardFailed => panic!("expected the deployment to be recorded, the guard failed"),
    }
}

/// Every deployment of `org` (optionally of one service), following the pages.
async fn all_deployments(
    store: &dyn Store,
    org: &str,
    service_id: Option<&str>,
    limit: usize,
) -> Vec<DeploymentRecord> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..100 {
        let page = store
            .list_deployments(org, &of_service(service_id, PageRequest::new(after.as_deref(), limit)))
            .await
            .expect("list_deployments");
        assert!(page.items.len() <= limit, "a page holds at most `limit` items");
        all.extend(page.items.iter().cloned());
        match page.last_key {
            Some(key) => {
                assert_eq!(page.items.len(), limit, "a page before the last is full");
                assert_eq!(Some(&key), page.items.last().map(|d| &d.request.deployment_id));
                after = Some(key);
            }
            None => return all,
        }
    }
    panic!("list_deployments never ended");
}

// ---------------------------------------------------------------------------------------------
// Cases

async fn ping(store: TestStore) {
    let store: &dyn Store = &*store;
    store.ping().await.expect("ping");
}

/// `acme`'s application `api`, naming target `engine` with `external_id`.
fn naming_engine(external_id: Option<&str>) -> Service {
    let mut api = app("acme", "api", "acme/shop");
    api.spec.deploy_target = Some(DeployTarget {
        target_id: "engine".to_owned(),
        external_id: external_id.map(str::to_owned),
    });
    api
}

/// `target` replaced by a `QOVERY` target, or a `WEBHOOK` one.
fn retyped(target: &StoredTarget, qovery: bool) -> StoredTarget {
    let spec = if qovery {
        Target::Qovery {
            token: Secret::new("qovery-token-0123456789"),
            api_url: "https://api.qovery.com".to_owned(),
        }
    } else {
        Target::Webhook {
            url: "https://deploy.example.com/hook".to_owned(),
            secret: Secret::new(crate::aws_dispatcher::secret()),
        }
    };
    StoredTarget {
        spec,
        etag: new_etag(),
        version: target.version + 1,
        ..target.clone()
    }
}

async fn engine(store: &dyn Store) -> StoredTarget {
    store
        .get_target("acme", "engine")
        .await
        .expect("get_target")
        .expect("the target")
}

/// A service write checks the type of the target it names in its own write, whatever its
/// caller checked before: a target that became `QOVERY` (no service named it then) refuses a
/// service without an `external_id`, or with one that is not one id, and nothing is stored.
async fn a_service_write_checks_its_targets_type(store: TestStore) {
    let store: &dyn Store = &*store;
    crate::aws_dispatcher::put_webhook_target(store, "engine", "https://deploy.example.com/hook").await;
    let webhook = engine(store).await;
    store
        .put_target(&retyped(&webhook, true), Expected::Etag(webhook.etag.clone()))
        .await
        .expect("put_target")
        .expect("no service names the target: its type may change");

    // Without an id, or with a placeholder for one.
    for external_id in [None, Some("<the Qovery service id>")] {
        let refused = store
            .put_service(
                &StoredService::new(naming_engine(external_id), new_etag()),
                Expected::Absent,
                TenantLimits::default(),
            )
            .await;
        assert!(
            matches!(refused, Err(StoreError::TargetUnfit(TargetType::Qovery))),
            "{external_id:?}: {refused:?}"
        );
        assert_eq!(store.get_service("acme", "api").await.expect("get"), None);
    }

    let fitting = naming_engine(Some("9d3c1e2a-6b5f-4e7d-8a9c-0b1d2e3f4a5c"));
    let etag = create(store, &fitting).await;
    assert_eq!(stored(store, "acme", "api").await.service, fitting);

    // A replacement without it is refused too: the service stays as it was.
    let unfit = Service {
        version: 2,
        ..naming_engine(None)
    };
    let refused = store
        .put_service(
            &StoredService::new(unfit, new_etag()),
            Expected::Etag(etag.clone()),
            TenantLimits::default(),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::TargetUnfit(TargetType::Qovery))),
        "{refused:?}"
    );
    let kept = stored(store, "acme", "api").await;
    assert_eq!((kept.service, kept.etag), (fitting, etag));
}

/// A target's change to `QOVERY` and a write of a service naming it without an `external_id`,
/// at the same time: never both.
async fn a_change_of_type_and_an_unfit_service_never_both_pass(store: TestStore) {
    let store: &dyn Store = &*store;
    crate::aws_dispatcher::put_webhook_target(store, "engine", "https://deploy.example.com/hook").await;
    for round in 0..16u64 {
        let webhook = engine(store).await;
        let qovery = retyped(&webhook, true);
        let service = StoredService::new(naming_engine(None), new_etag());
        // The service's write starts a little later each round, to meet the target's change
        // at each of its steps (a read, a query of its users, a conditioned write on DynamoDB).
        let (changed, written) = tokio::join!(store.put_target(&qovery, Expected::Etag(webhook.etag.clone())), async {
            tokio::time::sleep(Duration::from_millis(round % 8)).await;
            store
                .put_service(&service, Expected::Absent, TenantLimits::default())
                .await
        },);
        let changed = changed.expect("put_target");
        assert!(changed.is_err() || written.is_err(), "round {round}: both passed");
        assert!(
            matches!(written, Ok(()) | Err(StoreError::TargetUnfit(TargetType::Qovery))),
            "round {round}: {written:?}"
        );
        let now = engine(store).await;
        let named = store.get_service("acme", "api").await.expect("get_service");
        assert_eq!(
            now.spec.target_type() == TargetType::Qovery,
            changed.is_ok(),
            "round {round}"
        );
        assert_eq!(named.is_some(), written.is_ok(), "round {round}");
        // Back to a webhook target no service names.
        store.delete_service("acme", "api", None).await.expect("delete_service");
        store
            .put_target(&retyped(&now, false), Expected::Etag(now.etag.clone()))
            .await
            .expect("put_target")
            .expect("a webhook target");
    }
}

async fn put_get_replace(store: TestStore) {
    let store: &dyn Store = &*store;
    assert_eq!(store.get_service("acme", "api").await.expect("get"), None);
    let api = app("acme", "api", "acme/shop");
    let first = create(store, &api).await;
    let got = stored(store, "acme", "api").await;
    assert_eq!(got.service, api);
    assert_eq!(got.etag, first);
    assert_eq!(got.last_push, None);
    assert_eq!(
        store.get_service("other", "api").await.expect("get"),
        None,
        "organizations are apart"
    );

    // Creating over an existing service, or replacing with a stale etag, is refused.
    let changed = Service {
        version: 2,
        ..app("acme", "api", "acme/other")
    };
    let refused = store
        .put_service(
            &StoredService::new(changed.clone(), new_etag()),
            Expected::Absent,
            TenantLimits::default(),
        )
        .await;
    assert!(matches!(refused, Err(StoreError::PreconditionFailed)), "{refused:?}");
    let refused = store
        .put_service(
            &StoredService::new(changed.clone(), new_etag()),
            Expected::Etag(new_etag()),
            TenantLimits::default(),
        )
        .await;
    assert!(matches!(refused, Err(StoreError::PreconditionFailed)), "{refused:?}");
    assert_eq!(stored(store, "acme", "api").await.etag, first);

    // A replace keeps the last push.
    let outcome = store
        .record_deployment(&push_request("acme", "api"), &push("a..b"))
        .await
        .expect("record");
    recorded_status(outcome);
    let second = new_etag();
    store
        .put_service(
            &StoredService::new(changed.clone(), second.clone()),
            Expected::Etag(first.clone()),
            TenantLimits::default(),
        )
        .await
        .expect("replace");
    let got = stored(store, "acme", "api").await;
    assert_eq!(got.service, changed);
    assert_eq!(got.etag, second);
    assert_eq!(got.last_push.as_deref(), Some("a..b"));

    let refused = store
        .put_service(
            &StoredService::new(api.clone(), new_etag()),
            Expected::Etag(first),
            TenantLimits::default(),
        )
        .await;
    assert!(matches!(refused, Err(StoreError::PreconditionFailed)), "{refused:?}");
    let replace_missing = store
        .put_service(
            &StoredService::new(app("acme", "nope", "acme/shop"), new_etag()),
            Expected::Etag(second),
            TenantLimits::default(),
        )
        .await;
    assert!(
        matches!(replace_missing, Err(StoreError::PreconditionFailed)),
        "{replace_missing:?}"
    );
}

async fn list_services_in_pages(store: TestStore) {
    let store: &dyn Store = &*store;
    let mut want: Vec<String> = (1..=7).map(|i| format!("svc-{i:02}")).collect();
    // Created out of order; another organization's services never show.
    for id in want.iter().rev() {
        create(store, &app("acme", id, "acme/shop")).await;
    }
    create(store, &app("acme-two", "svc-00", "acme/shop")).await;
    create(store, &app("other", "svc-05b", "acme/shop")).await;
    want.sort();

    let page = store.list_services("acme", PageRequest::first(3)).await.expect("list");
    assert_eq!(ids(&page.items), want[..3]);
    assert_eq!(page.last_key.as_deref(), Some("svc-03"));
    let page = store
        .list_services("acme", PageRequest::new(Some("svc-03"), 3))
        .await
        .expect("list");
    assert_eq!(ids(&page.items), want[3..6]);
    assert_eq!(page.last_key.as_deref(), Some("svc-06"));
    let page = store
        .list_services("acme", PageRequest::new(Some("svc-06"), 3))
        .await
        .expect("list");
    assert_eq!(ids(&page.items), want[6..]);
    assert_eq!(page.last_key, None);

    // Items come in id order, exactly `limit` of them means no further page.
    let page = store.list_services("acme", PageRequest::first(7)).await.expect("list");
    let listed: Vec<String> = page.items.iter().map(|s| s.service.id.clone()).collect();
    assert_eq!(listed, want);
    assert_eq!(page.last_key, None);
    let page = store
        .list_services("acme", PageRequest::first(100))
        .await
        .expect("list");
    assert_eq!(page.items.len(), 7);
    assert_eq!(page.last_key, None);
    // `after` need not be an existing id.
    let page = store
        .list_services("acme", PageRequest::new(Some("svc-04a"), 100))
        .await
        .expect("list");
    assert_eq!(ids(&page.items), want[4..]);
    // Etags come along.
    assert!(page.items.iter().all(|s| !s.etag.is_empty()));
    let page = store
        .list_services("empty", PageRequest::first(10))
        .await
        .expect("list");
    assert!(page.items.is_empty() && page.last_key.is_none());
}

async fn delete_service(store: TestStore) {
    let store: &dyn Store = &*store;
    assert!(!store.delete_service("acme", "api", None).await.expect("delete absent"));
    let etag = create(store, &app("acme", "api", "acme/shop")).await;
    let by_repo = store
        .services_by_repository("acme", "github.com/acme/shop")
        .await
        .expect("by repository");
    assert_eq!(ids(&by_repo), ["api"]);

    let refused = store.delete_service("acme", "api", Some(&new_etag())).await;
    assert!(matches!(refused, Err(StoreError::PreconditionFailed)), "{refused:?}");
    assert!(store.get_service("acme", "api").await.expect("get").is_some());

    assert!(store.delete_service("acme", "api", Some(&etag)).await.expect("delete"));
    assert_eq!(store.get_service("acme", "api").await.expect("get"), None);
    assert!(!store.delete_service("acme", "api", None).await.expect("delete again"));
    // `If-Match` on a missing service fails, as HTTP has it (RFC 9110 §13.1.1).
    let gone = store.delete_service("acme", "api", Some(&etag)).await;
    assert!(matches!(gone, Err(StoreError::PreconditionFailed)), "{gone:?}");
    let by_repo = store
        .services_by_repository("acme", "github.com/acme/shop")
        .await
        .expect("by repository");
    assert!(by_repo.is_empty(), "a deleted service is no longer matched");

    // Unconditional delete; re-creating works and starts without a last push.
    create(store, &app("acme", "api", "acme/shop")).await;
    store
        .record_deployment(&push_request("acme", "api"), &push("a..b"))
        .await
        .expect("record");
    assert!(store.delete_service("acme", "api", None).await.expect("delete"));
    let etag = create(store, &app("acme", "api", "acme/shop")).await;
    let again = stored(store, "acme", "api").await;
    assert_eq!(again.etag, etag);
    assert_eq!(again.last_push, None, "a re-created service starts afresh");
}

async fn services_by_repository(store: TestStore) {
    let store: &dyn Store = &*store;
    create(store, &app("acme", "api", "acme/shop")).await;
    let mut worker = app("acme", "worker", "acme/shop");
    worker.spec.auto_deploy = false;
    create(store, &worker).await;
    create(store, &app("acme", "site", "acme/site")).await;
    create(store, &app("evil", "api", "acme/shop")).await;
    create(store, &container("acme", "web", "docker.io", "acme/shop", "1.0.0")).await;

    let found = store
        .services_by_repository("acme", "github.com/acme/shop")
        .await
        .expect("by repository");
    assert_eq!(ids(&found), ["api", "worker"], "disabled services too, only this org");
    assert!(found.iter().all(|s| s.service.organization_id == "acme"));
    assert!(
        store
            .services_by_repository("acme", "github.com/acme/nothing")
            .await
            .expect("by repository")
            .is_empty()
    );

    // Changing the repository moves the service from one key to the other.
    let etag = stored(store, "acme", "api").await.etag;
    store
        .put_service(
            &StoredService::new(app("acme", "api", "acme/site"), new_etag()),
            Expected::Etag(etag),
            TenantLimits::default(),
        )
        .await
        .expect("replace");
    let shop = store
        .services_by_repository("acme", "github.com/acme/shop")
        .await
        .expect("by repository");
    assert_eq!(ids(&shop), ["worker"]);
    let site = store
        .services_by_repository("acme", "github.com/acme/site")
        .await
        .expect("by repository");
    assert_eq!(ids(&site), ["api", "site"]);
    assert!(site.iter().all(|s| !s.etag.is_empty()));

    // Dropping the repository (a job on an image) leaves the repository's key.
    let etag = stored(store, "acme", "site").await.etag;
    let mut job = container("acme", "site", "docker.io", "acme/site", "1");
    job.spec.kind = ServiceKind::Job;
    store
        .put_service(
            &StoredService::new(job.clone(), new_etag()),
            Expected::Etag(etag),
            TenantLimits::default(),
        )
        .await
        .expect("replace");
    let site = store
        .services_by_repository("acme", "github.com/acme/site")
        .await
        .expect("by repository");
    assert_eq!(ids(&site), ["api"]);
}

async fn services_by_image_path(store: TestStore) {
    let store: &dyn Store = &*store;
    create(store, &container("acme", "web", "docker.io", "acme/web", "1.0.0")).await;
    create(store, &container("acme", "mirror", "ghcr.io", "acme/web", "1.0.0")).await;
    let mut off = container("acme", "off", "docker.io", "acme/web", "0.9.0");
    off.spec.auto_deploy = false;
    create(store, &off).await;
    create(store, &container("acme", "other", "docker.io", "acme/other", "1.0.0")).await;
    create(store, &container("evil", "web", "docker.io", "acme/web", "1.0.0")).await;
    create(store, &app("acme", "api", "acme/web")).await;

    let found = store
        .services_by_image_path("acme", "acme/web")
        .await
        .expect("by image");
    assert_eq!(
        ids(&found),
        ["mirror", "off", "web"],
        "any registry, disabled too, only this org"
    );
    // Docker Hub's one-segment names are stored under `library/`.
    create(store, &container("acme", "db", "docker.io", "postgres", "16")).await;
    let found = store
        .services_by_image_path("acme", "library/postgres")
        .await
        .expect("by image");
    assert_eq!(ids(&found), ["db"]);

    // Changing the image moves the service; dropping it removes it.
    let etag = stored(store, "acme", "mirror").await.etag;
    store
        .put_service(
            &StoredService::new(
                container("acme", "mirror", "ghcr.io", "acme/other", "1.0.0"),
                new_etag(),
            ),
            Expected::Etag(etag),
            TenantLimits::default(),
        )
        .await
        .expect("replace");
    let etag = stored(store, "acme", "off").await.etag;
    store
        .put_service(
            &StoredService::new(app("acme", "off", "acme/web"), new_etag()),
            Expected::Etag(etag),
            TenantLimits::default(),
        )
        .await
        .expect("replace");
    let web = store
        .services_by_image_path("acme", "acme/web")
        .await
        .expect("by image");
    assert_eq!(ids(&web), ["web"]);
    let other = store
        .services_by_image_path("acme", "acme/other")
        .await
        .expect("by image");
    assert_eq!(ids(&other), ["mirror", "other"]);
}

async fn secrets(store: TestStore) {
    let store: &dyn Store = &*store;
    assert_eq!(store.get_secret("acme", "github").await.expect("get"), None);
    let first = SecretRecord {
        secret: "a-webhook-secret-of-some-length".to_owned(),
        set_at: NOW.to_owned(),
    };
    store.put_secret("acme", "github", &first).await.expect("put");
    assert_eq!(
        store.get_secret("acme", "github").await.expect("get"),
        Some(first.clone())
    );
    assert_eq!(store.get_secret("acme", "gitlab").await.expect("get"), None);
    assert_eq!(store.get_secret("other", "github").await.expect("get"), None);

    let second = SecretRecord {
        secret: "another-secret-value-entirely".to_owned(),
        set_at: "2026-11-27T08:00:00Z".to_owned(),
    };
    store.put_secret("acme", "github", &second).await.expect("replace");
    assert_eq!(store.get_secret("acme", "github").await.expect("get"), Some(second));

    assert!(store.delete_secret("acme", "github").await.expect("delete"));
    assert_eq!(store.get_secret("acme", "github").await.expect("get"), None);
    assert!(!store.delete_secret("acme", "github").await.expect("delete again"));
}

fn token(org: &str, id: &str, scopes: &[&str]) -> TokenRecord {
    TokenRecord {
        organization_id: org.to_owned(),
        id: id.to_owned(),
        name: format!("token {id}"),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        hash: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(format!("{org}/{id}").as_bytes())),
        created_at: NOW.to_owned(),
    }
}

async fn tokens(store: TestStore) {
    let store: &dyn Store = &*store;
    let tokens = [
        token("acme", "tok-b", &["deploy"]),
        token("acme", "tok-a", &["deploy", "manage"]),
        token("acme", "tok-c", &[]),
        token("other", "tok-0", &["manage"]),
    ];
    for t in &tokens {
        store.create_token(t).await.expect("create_token");
    }
    let duplicate = store.create_token(&tokens[0]).await;
    assert!(duplicate.is_err(), "a token id is created once: {duplicate:?}");

    let page = store.list_tokens("acme", PageRequest::first(2)).await.expect("list");
    assert_eq!(page.items, vec![tokens[1].clone(), tokens[0].clone()]);
    assert_eq!(page.last_key.as_deref(), Some("tok-b"));
    let page = store
        .list_tokens("acme", PageRequest::new(Some("tok-b"), 2))
        .await
        .expect("list");
    assert_eq!(page.items, vec![tokens[2].clone()]);
    assert_eq!(page.last_key, None);

    assert_eq!(
        store.token_by_hash(&tokens[1].hash).await.expect("by hash"),
        Some(tokens[1].clone())
    );
    assert_eq!(
        store.token_by_hash(&tokens[3].hash).await.expect("by hash"),
        Some(tokens[3].clone())
    );
    assert_eq!(store.token_by_hash(&"0".repeat(64)).await.expect("by hash"), None);

    assert!(!store.delete_token("other", "tok-a").await.expect("delete elsewhere"));
    assert!(store.delete_token("acme", "tok-a").await.expect("delete"));
    assert_eq!(store.token_by_hash(&tokens[1].hash).await.expect("by hash"), None);
    assert!(!store.delete_token("acme", "tok-a").await.expect("delete again"));
    let page = store.list_tokens("acme", PageRequest::first(10)).await.expect("list");
    assert_eq!(page.items, vec![tokens[0].clone(), tokens[2].clone()]);
    assert_eq!(
        store.token_by_hash(&tokens[0].hash).await.expect("by hash"),
        Some(tokens[0].clone())
    );
}

async fn record_with_push_guard(store: TestStore) {
    let store: &dyn Store = &*store;
    let missing = store
        .record_deployment(&push_request("acme", "api"), &push("a..b"))
        .await
        .expect("record");
    assert_eq!(missing, RecordOutcome::GuardFailed, "no service, nothing recorded");

    create(store, &app("acme", "api", "acme/shop")).await;
    create(store, &app("acme", "worker", "acme/shop")).await;
    let mut recorded = Vec::new();
    let mut record = async |service: &str, mark: &str| {
        let request = push_request("acme", service);
        let outcome = store.record_deployment(&request, &push(mark)).await.expect("record");
        if let RecordOutcome::Recorded(_) = outcome {
            recorded.push(request.deployment_id);
        }
        outcome
    };
    recorded_status(record("api", "a..b").await);
    assert_eq!(
        record("api", "a..b").await,
        RecordOutcome::GuardFailed,
        "the same push once"
    );
    // Another service follows the same repository: its own guard.
    recorded_status(record("worker", "a..b").await);
    recorded_status(record("api", "b..c").await);
    // A force-push back (a rollback), then a return to a commit deployed before.
    recorded_status(record("api", "c..a").await);
    recorded_status(record("api", "a..b").await);
    assert_eq!(record("api", "a..b").await, RecordOutcome::GuardFailed);

    assert_eq!(stored(store, "acme", "api").await.last_push.as_deref(), Some("a..b"));
    let listed: BTreeSet<String> = all_deployments(store, "acme", None, 50)
        .await
        .into_iter()
        .map(|d| d.request.deployment_id)
        .collect();
    assert_eq!(listed, recorded.into_iter().collect::<BTreeSet<_>>());
}

/// SPEC "A replay cannot roll a service back": a push the service already queued records
/// again only as a re-apply after a rollback (its `before` is the service's current commit),
/// whatever delivery it comes in — and a redelivery of an older push whose answer was lost
/// never queues the old commit again once a newer push moved the service on.
async fn a_replay_cannot_roll_a_service_back(store: TestStore) {
    let store: &dyn Store = &*store;
    create(store, &app("acme", "api", "acme/shop")).await;
    create(store, &app("acme", "worker", "acme/shop")).await;
    let record = async |service: &str, mark: &str| {
        store
            .record_deployment(&push_request("acme", service), &push(mark))
            .await
            .expect("record")
    };
    recorded_status(record("api", "a..b").await);
    recorded_status(record("api", "b..c").await);
    // A→B replayed (under any delivery id, or none) after B→C: skipped, C stays current.
    assert_eq!(record("api", "a..b").await, RecordOutcome::GuardFailed);
    assert_eq!(stored(store, "acme", "api").await.last_push.as_deref(), Some("b..c"));
    assert_eq!(stored(store, "acme", "api").await.current_commit(), Some("c"));
    // Another service follows the same repository: its own history.
    recorded_status(record("worker", "a..b").await);
    assert_eq!(record("worker", "a..b").await, RecordOutcome::GuardFailed);
    // A failed guard writes nothing.
    assert_eq!(record("api", "b..c").await, RecordOutcome::GuardFailed);
    recorded_status(record("api", "c..d").await);
    assert_eq!(all_deployments(store, "acme", None, 50).await.len(), 4);
    // What a dry run reads: the pushes each service queued, and no other.
    for (service, mark, queued) in [
        ("api", "a..b", true),
        ("api", "c..d", true),
        ("api", "a..c", false),
        ("worker", "a..b", true),
        ("worker", "b..c", false),
        ("other", "a..b", false),
    ] {
        let held = store.push_queued_before("acme", service, mark).await.expect("read");
        assert_eq!(held, queued, "{service} {mark}");
    }
    assert!(!store.push_queued_before("globex", "api", "a..b").await.expect("read"));
}

/// A rollback and a re-apply keep working: A→B, B→A (forced), A→B queue all three.
async fn a_reapply_after_a_rollback_queues(store: TestStore) {
    let store: &dyn Store = &*store;
    create(store, &app("acme", "api", "acme/shop")).await;
    let record = async |mark: &str| {
        store
            .record_deployment(&push_request("acme", "api"), &push(mark))
            .await
            .expect("record")
    };
    recorded_status(record("a..b").await);
    recorded_status(record("b..a").await);
    recorded_status(record("a..b").await);
    // And the same re-apply once more is a replay.
    assert_eq!(record("a..b").await, RecordOutcome::GuardFailed);
    recorded_status(record("b..a").await);
    assert_eq!(all_deployments(store, "acme", None, 50).await.len(), 4);
    // A push that moves nothing (`before` = `after`, the current commit) is never a re-apply:
    // the last push queued, pushed again, queues nothing, however often it comes.
    recorded_status(record("a..a").await);
    assert_eq!(record("a..a").await, RecordOutcome::GuardFailed);
    assert_eq!(record("a..a").await, RecordOutcome::GuardFailed);
    assert_eq!(all_deployments(store, "acme", None, 50).await.len(), 5);
}

/// A redeploy's guard: the service as read (entity tag, last push), changed by nothing of its
/// own write; a push or a settings write in between fails it.
async fn record_with_still_as_read_guard(store: TestStore) {
    let store: &dyn Store = &*store;
    let etag = create(store, &app("acme", "api", "github.com/acme/shop")).await;
    let as_read = |etag: &str, last_push: &str, again: &str| Guard::StillAsRead {
        etag: etag.to_owned(),
        last_push: Some(last_push.to_owned()),
        again: again.to_owned(),
    };
    let first = push_request("acme", "api");
    recorded_status(store.record_deployment(&first, &push("0..a")).await.expect("record"));
    let x = first.deployment_id.as_str();

    // Made again once: two requests that read the service before either wrote make one.
    recorded_status(
        store
            .record_deployment(&push_request("acme", "api"), &as_read(&etag, "0..a", x))
            .await
            .expect("record"),
    );
    let twice = push_request("acme", "api");
    assert_eq!(
        store
            .record_deployment(&twice, &as_read(&etag, "0..a", x))
            .await
            .expect("record"),
        RecordOutcome::GuardFailed
    );

    // A push since: the last push is no longer the one read.
    let pushed = push_request("acme", "api");
    recorded_status(store.record_deployment(&pushed, &push("a..b")).await.expect("record"));
    let y = pushed.deployment_id.as_str();
    let stale = push_request("acme", "api");
    assert_eq!(
        store
            .record_deployment(&stale, &as_read(&etag, "0..a", y))
            .await
            .expect("record"),
        RecordOutcome::GuardFailed
    );
    // Another entity tag: a settings write since.
    assert_eq!(
        store
            .record_deployment(&stale, &as_read(&new_etag(), "a..b", y))
            .await
            .expect("record"),
        RecordOutcome::GuardFailed
    );
    let listed = all_deployments(store, "acme", Some("api"), 10).await;
    assert!(
        !listed.iter().any(|d| d.request == stale || d.request == twice),
        "nothing written"
    );
    recorded_status(
        store
            .record_deployment(&stale, &as_read(&etag, "a..b", y))
            .await
            .expect("record"),
    );
    let got = stored(store, "acme", "api").await;
    assert_eq!((got.etag, got.last_push.as_deref()), (etag, Some("a..b")), "unchanged");
    assert_eq!(all_deployments(store, "acme", Some("api"), 10).await.len(), 4);
    // No such service: nothing written.
    assert_eq!(
        store
            .record_deployment(&push_request("acme", "gone"), &as_read("x", "0..a", x))
            .await
            .expect("record"),
        RecordOutcome::GuardFailed
    );
}

async fn record_with_service_unchanged_guard(store: TestStore) {
    let store: &dyn Store = &*store;
    let v1 = container("acme", "api", "docker.io", "acme/api", "1.0.0");
    let etag1 = create(store, &v1).await;
    // Give it a last push, which the guard's write must keep.
    store
        .record_deployment(&push_request("acme", "api"), &push("a..b"))
        .await
        .expect("record");

    let v2 = container("acme", "api", "docker.io", "acme/api", "1.1.0");
    let etag2 = new_etag();
    let updated = StoredService {
        service: v2.clone(),
        etag: etag2.clone(),
        last_push: None,
    };
    let stale = Guard::ServiceUnchanged {
        expected: new_etag(),
        updated: Box::new(updated.clone()),
    };
    let request = tag_request("acme", "api", "1.0.0", "1.1.0");
    assert_eq!(
        store.record_deployment(&request, &stale).await.expect("record"),
        RecordOutcome::GuardFailed
    );
    assert_eq!(stored(store, "acme", "api").await.etag, etag1, "nothing written");

    let guard = Guard::ServiceUnchanged {
        expected: etag1.clone(),
        updated: Box::new(updated),
    };
    recorded_status(store.record_deployment(&request, &guard).await.expect("record"));
    let got = stored(store, "acme", "api").await;
    assert_eq!(got.service, v2);
    assert_eq!(got.etag, etag2);
    assert_eq!(got.last_push.as_deref(), Some("a..b"));
    let listed = all_deployments(store, "acme", Some("api"), 10).await;
    assert!(listed.iter().any(|d| d.request == request));

    // The same notification again finds the etag changed.
    let again = tag_request("acme", "api", "1.0.0", "1.1.0");
    assert_eq!(
        store.record_deployment(&again, &guard).await.expect("record"),
        RecordOutcome::GuardFailed
    );
    assert_eq!(all_deployments(store, "acme", Some("api"), 10).await.len(), 2);

    // The replacement may move the service to another image path.
    let v3 = container("acme", "api", "ghcr.io", "acme/renamed", "2.0.0");
    let guard = Guard::ServiceUnchanged {
        expected: etag2,
        updated: Box::new(StoredService {
            service: v3.clone(),
            etag: new_etag(),
            last_push: None,
        }),
    };
    recorded_status(
        store
            .record_deployment(&tag_request("acme", "api", "1.1.0", "2.0.0"), &guard)
            .await
            .expect("record"),
    );
    assert!(
        store
            .services_by_image_path("acme", "acme/api")
            .await
            .expect("by image")
            .is_empty()
    );
    let renamed = store
        .services_by_image_path("acme", "acme/renamed")
        .await
        .expect("by image");
    assert_eq!(ids(&renamed), ["api"]);
    assert_eq!(renamed[0].service, v3);
}

async fn concurrent_pushes_record_once(store: TestStore) {
    let store: &dyn Store = &*store;
    create(store, &app("acme", "api", "acme/shop")).await;
    let requests: Vec<DeploymentRequest> = (0..20).map(|_| push_request("acme", "api")).collect();
    let guard = push("a..b");
    let outcomes = join_all(requests.iter().map(|r| store.record_deployment(r, &guard))).await;
    let recorded = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(RecordOutcome::Recorded(_))))
        .count();
    let failed = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(RecordOutcome::GuardFailed)))
        .count();
    assert_eq!((recorded, failed), (1, 19), "{outcomes:?}");
    assert_eq!(all_deployments(store, "acme", None, 50).await.len(), 1);
}

async fn concurrent_replaces_one_wins(store: TestStore) {
    let store: &dyn Store = &*store;
    let etag = create(store, &app("acme", "api", "acme/shop")).await;
    let attempts: Vec<StoredService> = (0..20)
        .map(|i| {
            let mut s = app("acme", "api", "acme/shop");
            s.version = i + 2;
            StoredService::new(s, new_etag())
        })
        .collect();
    let results = join_all(
        attempts
            .iter()
            .map(|attempt| store.put_service(attempt, Expected::Etag(etag.clone()), TenantLimits::default())),
    )
    .await;
    let winners: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(()) | Err(StoreError::PreconditionFailed))),
        "{results:?}"
    );
    let got = stored(store, "acme", "api").await;
    assert_eq!(got.etag, attempts[winners[0]].etag);
    assert_eq!(got.service, attempts[winners[0]].service);
}

async fn list_deployments_newest_first(store: TestStore) {
    let store: &dyn Store = &*store;
    create(store, &app("acme", "api", "acme/shop")).await;
    create(store, &app("acme", "worker", "acme/shop")).await;
    create(store, &app("other", "api", "acme/shop")).await;
    let mut all = Vec::new();
    for i in 0..12 {
        let service = if i % 3 == 0 { "worker" } else { "api" };
        let request = push_request("acme", service);
        recorded_status(
            store
                .record_deployment(&request, &push(&format!("m{i}")))
                .await
                .expect("record"),
        );
        all.push(request);
    }
    recorded_status(
        store
            .record_deployment(&push_request("other", "api"), &push("x"))
            .await
            .expect("record"),
    );
    // Newest first is descending id order (UUIDv7 ids sort by time).
    all.sort_by(|a, b| b.deployment_id.cmp(&a.deployment_id));
    let want: Vec<String> = all.iter().map(|r| r.deployment_id.clone()).collect();

    let page = store
        .list_deployments("acme", &of_service(None, PageRequest::first(5)))
        .await
        .expect("list");
    assert_eq!(deployment_ids(&page), want[..5]);
    assert_eq!(page.last_key.as_deref(), Some(want[4].as_str()));
    let page = store
        .list_deployments("acme", &of_service(None, PageRequest::new(Some(&want[4]), 5)))
        .await
        .expect("list");
    assert_eq!(deployment_ids(&page), want[5..10]);
    let listed = all_deployments(store, "acme", None, 5).await;
    assert_eq!(
        listed
            .iter()
            .map(|d| d.request.deployment_id.clone())
            .collect::<Vec<_>>(),
        want
    );
    for (record, request) in listed.iter().zip(&all) {
        assert_eq!(&record.request, request, "the request comes back as recorded");
    }

    let want_api: Vec<String> = all
        .iter()
        .filter(|r| r.service_id == "api")
        .map(|r| r.deployment_id.clone())
        .collect();
    assert_eq!(want_api.len(), 8);
    let page = store
        .list_deployments("acme", &of_service(Some("api"), PageRequest::first(3)))
        .await
        .expect("list");
    assert_eq!(deployment_ids(&page), want_api[..3]);
    assert_eq!(page.last_key.as_deref(), Some(want_api[2].as_str()));
    let page = store
        .list_deployments(
            "acme",
            &of_service(Some("api"), PageRequest::new(Some(&want_api[2]), 3)),
        )
        .await
        .expect("list");
    assert_eq!(deployment_ids(&page), want_api[3..6]);
    let listed = all_deployments(store, "acme", Some("api"), 3).await;
    assert_eq!(
        listed
            .iter()
            .map(|d| d.request.deployment_id.clone())
            .collect::<Vec<_>>(),
        want_api
    );
    assert_eq!(all_deployments(store, "acme", Some("worker"), 50).await.len(), 4);
    assert!(all_deployments(store, "acme", Some("nothing"), 50).await.is_empty());
    assert_eq!(all_deployments(store, "other", None, 50).await.len(), 1);
}

/// A push deployment of service `api` recorded in each of `orgs`, in turn, with the status
/// each was recorded in.
async fn record_pushes(store: &dyn Store, orgs: &[&str]) -> Vec<(DeploymentRequest, DeploymentStatus)> {
    let mut recorded = Vec::new();
    for (i, org) in orgs.iter().enumerate() {
        let request = push_request(org, "api");
        let status = recorded_status(
            store
                .record_deployment(&request, &push(&format!("m{i}")))
                .await
                .expect("record"),
        );
        recorded.push((request, status));
    }
    recorded
}

async fn pending_until_marked_queued(store: TestStore) {
    let store: &dyn Store = &*store;
    create(store, &app("acme", "api", "acme/shop")).await;
    create(store, &app("beta", "api", "beta/shop")).await;
    let recorded = record_pushes(store, &["acme", "beta", "acme"]).await;

    // After recording, a deployment is either queued already or pending (oldest first,
    // across organizations) until marked queued.
    let pending = store.pending_deployments(100).await.expect("pending");
    let want_pending: Vec<&DeploymentRequest> = recorded
        .iter()
        .filter(|(_, s)| *s == DeploymentStatus::Pending)
        .map(|(r, _)| r)
        .collect();
    assert_eq!(pending.iter().map(|d| &d.request).collect::<Vec<_>>(), want_pending);
    assert!(pending.iter().all(|d| d.status == DeploymentStatus::Pending));
    for (request, status) in &recorded {
        let listed = all_deployments(store, &request.organization_id, None, 50).await;
        let record = listed
            .iter()
            .find(|d| d.request.deployment_id == request.deployment_id)
            .expect("listed");
        assert_eq!(record.status, *status, "listed in the status it was recorded in");
    }
    if want_pending.len() > 1 {
        let first = store.pending_deployments(1).await.expect("pending");
        assert_eq!(first.len(), 1);
        assert_eq!(&first[0].request, want_pending[0]);
    }

    for org in ["acme", "beta"] {
        let ids: Vec<String> = recorded
            .iter()
            .filter(|(r, _)| r.organization_id == org)
            .map(|(r, _)| r.deployment_id.clone())
            .collect();
        store.mark_queued(org, &ids).await.expect("mark_queued");
    }
    store
        .mark_queued("acme", &[new_deployment_id()])
        .await
        .expect("marking an unknown id is harmless");
    assert!(store.pending_deployments(100).await.expect("pending").is_empty());
    for org in ["acme", "beta"] {
        for record in all_deployments(store, org, None, 50).await {
            assert_eq!(record.status, DeploymentStatus::Queued);
        }
    }
}

async fn held_behind_older_pending(store: TestStore) {
    let store: &dyn Store = &*store;
    create(store, &app("acme", "api", "acme/shop")).await;
    create(store, &app("acme", "web", "acme/shop")).await;
    create(store, &app("beta", "api", "beta/shop")).await;
    // Made before anything is recorded: older than every record below.
    let early = push_request("acme", "api");
    let before_records = deployment_ids_before(Duration::ZERO);
    let recorded = record_pushes(store, &["acme", "beta"]).await;
    let later_acme_api = push_request("acme", "api");
    let later_acme_web = push_request("acme", "web");
    let later_beta_api = push_request("beta", "api");
    let asked = [
        early.clone(),
        later_acme_api.clone(),
        later_acme_web.clone(),
        later_beta_api.clone(),
    ];

    // A later deployment of a service waits behind the service's older pending one; an
    // earlier one does not, nor does another service, nor the same service id in another
    // organization. (A store that queues as it records has nothing pending, so nothing waits.)
    let mut want = HashSet::new();
    for ((older, status), later) in recorded.iter().zip([&later_acme_api, &later_beta_api]) {
        assert_eq!(older.service_id, later.service_id);
        if *status == DeploymentStatus::Pending {
            want.insert(later.deployment_id.clone());
        }
    }
    let now = deployment_ids_before(Duration::ZERO);
    assert_eq!(store.held_behind_pending(&asked, &now).await.expect("held"), want);
    assert!(store.held_behind_pending(&[], &now).await.expect("held").is_empty());
    // Only deployments recorded before `before` count: none of these was.
    assert!(
        store
            .held_behind_pending(&asked, &before_records)
            .await
            .expect("held")
            .is_empty()
    );
    let beta_pending = recorded[1].1 == DeploymentStatus::Pending;
    assert_eq!(
        store
            .held_behind_pending(std::slice::from_ref(&later_beta_api), &now)
            .await
            .expect("held")
            .contains(&later_beta_api.deployment_id),
        beta_pending,
        "beta's own pending deployment holds beta's later one"
    );

    // Once the older ones are on the queue, nothing waits.
    for (request, _) in &recorded {
        store
            .mark_queued(&request.organization_id, std::slice::from_ref(&request.deployment_id))
            .await
            .expect("mark_queued");
    }
    assert!(store.held_behind_pending(&asked, &now).await.expect("held").is_empty());
}

/// Record a push `mark` for `acme`'s `api`: its deployment id.
async fn record_push(store: &dyn Store, mark: &str) -> String {
    let request = push_request("acme", "api");
    recorded_status(store.record_deployment(&request, &push(mark)).await.expect("record"));
    request.deployment_id
}

async fn deployment(store: &dyn Store, id: &str) -> DeploymentRecord {
    store
        .get_deployment("acme", id)
        .await
        .expect("get_deployment")
        .unwrap_or_else(|| panic!("deployment {id} missing"))
}

/// The dispatcher's transitions (SPEC "Deployment lifecycle"): a waiting deployment starts,
/// counted, unless a newer one of its service waits (latest wins); an attempt ends only an
/// attempt in progress; `DELIVERED`, `FAILED` and `SUPERSEDED` are final.
async fn attempts_only_go_forward(store: TestStore) {
    use DeploymentStatus::{Delivered, Failed, InProgress, Queued, Superseded};
    let store: &dyn Store = &*store;
    create_dispatched(store, &app("acme", "api", "acme/shop")).await;
    assert_eq!(
        store.begin_attempt("acme", &new_deployment_id()).await.expect("begin"),
        AttemptStart::NotFound
    );
    let first = record_push(store, "a..b").await;
    let second = record_push(store, "b..c").await;

    // A newer deployment of the service waits: the older one is superseded, never started.
    assert_eq!(
        store.begin_attempt("acme", &first).await.expect("begin"),
        AttemptStart::Superseded
    );
    let d = deployment(store, &first).await;
    assert_eq!((d.status, d.attempts), (Superseded, 0));

    let AttemptStart::Started(started) = store.begin_attempt("acme", &second).await.expect("begin") else {
        panic!("the newest waiting deployment did not start");
    };
    assert_eq!((started.status, started.attempts), (InProgress, 1));
    assert_eq!(*started, deployment(store, &second).await);
    assert_eq!(
        store.begin_attempt("acme", &second).await.expect("begin"),
        AttemptStart::NotWaiting(InProgress)
    );

    // A retry: waiting again, with the error and when it is due (here, already).
    let retry = AttemptEnd::Retry {
        error: "the target answered 503".to_owned(),
        next_attempt_unix: 1_700_000_000,
    };
    store.end_attempt("acme", &second, &retry).await.expect("end");
    let d = deployment(store, &second).await;
    assert_eq!((d.status, d.attempts), (Queued, 1));
    assert_eq!(d.last_error.as_deref(), Some("the target answered 503"));
    assert_eq!(d.next_attempt_at.as_deref(), Some("2023-11-14T22:13:20Z"));
    // Ending an attempt that is not in progress changes nothing.
    let _ = store.end_attempt("acme", &second, &AttemptEnd::Delivered).await;
    assert_eq!(deployment(store, &second).await, d);

    let AttemptStart::Started(again) = store.begin_attempt("acme", &second).await.expect("begin") else {
        panic!("the retry did not start");
    };
    assert_eq!((again.status, again.attempts), (InProgress, 2));
    assert_eq!(again.next_attempt_at, None);
    store
        .end_attempt("acme", &second, &AttemptEnd::Delivered)
        .await
        .expect("end");
    let delivered = deployment(store, &second).await;
    assert_eq!((delivered.status, delivered.attempts), (Delivered, 2));
    assert_eq!(delivered.last_error, None);

    // Refused for good.
    let third = record_push(store, "c..d").await;
    assert!(matches!(
        store.begin_attempt("acme", &third).await.expect("begin"),
        AttemptStart::Started(_)
    ));
    let failed = AttemptEnd::Failed {
        error: "the target answered 400".to_owned(),
    };
    store.end_attempt("acme", &third, &failed).await.expect("end");
    let refused = deployment(store, &third).await;
    assert_eq!(refused.status, Failed);
    assert_eq!(refused.last_error.as_deref(), Some("the target answered 400"));

    // Final is final: no end and no start takes a finished deployment anywhere.
    let release = AttemptEnd::Release {
        note: "the service has no deploy target".to_owned(),
    };
    for (id, before) in [(&first, Superseded), (&second, Delivered), (&third, Failed)] {
        let was = deployment(store, id).await;
        assert_eq!(was.status, before);
        for end in [&AttemptEnd::Delivered, &failed, &retry, &release] {
            let _ = store.end_attempt("acme", id, end).await;
        }
        assert_eq!(
            store.begin_attempt("acme", id).await.expect("begin"),
            AttemptStart::NotWaiting(before)
        );
        assert_eq!(deployment(store, id).await, was, "a final deployment changed");
    }

    // Released to pull consumers (the service lost its target): waiting, no retry time.
    let fourth = record_push(store, "d..e").await;
    assert!(matches!(
        store.begin_attempt("acme", &fourth).await.expect("begin"),
        AttemptStart::Started(_)
    ));
    store.end_attempt("acme", &fourth, &release).await.expect("end");
    let d = deployment(store, &fourth).await;
    assert_eq!((d.status, d.attempts), (Queued, 1));
    assert_eq!(d.last_error.as_deref(), Some("the service has no deploy target"));
    assert_eq!(d.next_attempt_at, None);

    // A retry not due yet does not start (a queue handing the message back early must not
    // make it sooner than `Retry-After`): nothing changes, and the caller learns when.
    assert!(matches!(
        store.begin_attempt("acme", &fourth).await.expect("begin"),
        AttemptStart::Started(_)
    ));
    let later = AttemptEnd::Retry {
        error: "the target answered 429".to_owned(),
        next_attempt_unix: 4_102_444_800,
    };
    store.end_attempt("acme", &fourth, &later).await.expect("end");
    let waiting = deployment(store, &fourth).await;
    assert_eq!(waiting.next_attempt_at.as_deref(), Some("2100-01-01T00:00:00Z"));
    assert_eq!(
        store.begin_attempt("acme", &fourth).await.expect("begin"),
        AttemptStart::NotDue {
            next_attempt_unix: 4_102_444_800
        }
    );
    assert_eq!(deployment(store, &fourth).await, waiting);
    // A newer deployment still supersedes it at once.
    let fifth = record_push(store, "e..f").await;
    assert_eq!(
        store.begin_attempt("acme", &fourth).await.expect("begin"),
        AttemptStart::Superseded
    );
    assert!(matches!(
        store.begin_attempt("acme", &fifth).await.expect("begin"),
        AttemptStart::Started(_)
    ));
}

/// Latest wins, whatever became of the newer deployment: one whose retry comes back after a
/// newer deployment of its service was reported done (an engine delivered it) never starts,
/// which would roll the service back.
async fn a_deployment_overtaken_by_a_finished_one_never_starts(store: TestStore) {
    use DeploymentStatus::{Delivered, Queued, Superseded};
    let store: &dyn Store = &*store;
    create(store, &app("acme", "api", "acme/shop")).await;
    let first = record_push(store, "a..b").await;
    assert!(matches!(
        store.begin_attempt("acme", &first).await.expect("begin"),
        AttemptStart::Started(_)
    ));
    // While its attempt is in flight, a newer push is recorded and an engine reports it done.
    let second = record_push(store, "b..c").await;
    store
        .mark_queued("acme", std::slice::from_ref(&second))
        .await
        .expect("queued");
    let report = DeploymentResult {
        status: ResultStatus::Succeeded,
        message: String::new(),
        url: None,
        reported_at: autodeploy_api::util::now_rfc3339(),
    };
    store
        .report_result("acme", &second, &report)
        .await
        .expect("report")
        .expect("taken");
    assert_eq!(deployment(store, &second).await.status, Delivered);
    // The attempt fails and is to be retried; when the retry comes, it does not start.
    let retry = AttemptEnd::Retry {
        error: "the target answered 503".to_owned(),
        next_attempt_unix: 1_600_000_000,
    };
    store.end_attempt("acme", &first, &retry).await.expect("end");
    assert_eq!(deployment(store, &first).await.status, Queued);
    assert_eq!(
        store.begin_attempt("acme", &first).await.expect("begin"),
        AttemptStart::Superseded
    );
    assert_eq!(deployment(store, &first).await.status, Superseded);
}

/// Concurrent starts of one deployment: exactly one starts it, counted once.
async fn concurrent_starts_start_once(store: TestStore) {
    let store: &dyn Store = &*store;
    create(store, &app("acme", "api", "acme/shop")).await;
    let id = record_push(store, "a..b").await;
    let starts = join_all((0..8).map(|_| store.begin_attempt("acme", &id))).await;
    let mut started = 0;
    for start in starts {
        match start.expect("begin") {
            AttemptStart::Started(_) => started += 1,
            AttemptStart::NotWaiting(status) => assert_eq!(status, DeploymentStatus::InProgress),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(started, 1);
    let d = deployment(store, &id).await;
    assert_eq!((d.status, d.attempts), (DeploymentStatus::InProgress, 1));
}

async fn deliveries(store: TestStore) {
    let store: &dyn Store = &*store;
    let now = 1_800_000_000;
    assert!(!store.delivery_seen("acme", "github", "d-1", now).await.expect("seen"));
    store
        .remember_delivery("acme", &key("github", "d-1", now + 3 * 86_400))
        .await
        .expect("remember");
    assert!(store.delivery_seen("acme", "github", "d-1", now).await.expect("seen"));
    assert!(
        store
            .delivery_seen("acme", "github", "d-1", now + 3 * 86_400 - 1)
            .await
            .expect("seen")
    );
    assert!(
        !store
            .delivery_seen("acme", "github", "d-1", now + 3 * 86_400)
            .await
            .expect("seen"),
        "expired at its expiry time"
    );
    assert!(!store.delivery_seen("acme", "gitlab", "d-1", now).await.expect("seen"));
    assert!(!store.delivery_seen("other", "github", "d-1", now).await.expect("seen"));
    assert!(!store.delivery_seen("acme", "github", "d-2", now).await.expect("seen"));

    // Remembered again later, it is seen again until the new expiry.
    let later = now + 4 * 86_400;
    store
        .remember_delivery("acme", &key("github", "d-1", later + 3 * 86_400))
        .await
        .expect("remember");
    assert!(store.delivery_seen("acme", "github", "d-1", later).await.expect("seen"));

    // Ids are opaque header values, long ones included.
    let long = "x".repeat(1000);
    store
        .remember_delivery("acme", &key("github", &long, now + 10))
        .await
        .expect("remember");
    assert!(store.delivery_seen("acme", "github", &long, now).await.expect("seen"));
    assert!(
        !store
            .delivery_seen("acme", "github", &long[..999], now)
            .await
            .expect("seen")
    );
}

/// A delivery of `org` that skipped `skipped` services, each with the longest id a service may
/// have: about 110 bytes stored per service.
pub(crate) fn delivery_record(org: &str, skipped: usize) -> DeliveryRecord {
    DeliveryRecord {
        id: new_deployment_id(),
        organization_id: org.to_owned(),
        received_at: NOW.to_owned(),
        source: DeliverySource::Git(GitProvider::Github),
        delivery_id: Some("d-1".to_owned()),
        http_status: 200,
        outcome: DeliveryOutcome::NothingToDeploy,
        reason: "nothing to deploy".to_owned(),
        repository: Some("github.com/acme/shop".to_owned()),
        branch: Some("main".to_owned()),
        commit_sha: None,
        image: None,
        tag: None,
        queued: Vec::new(),
        skipped: (0..skipped)
            .map(|i| SkippedService {
                service_id: format!("{i:063}"),
                reason: "AUTO_DEPLOY_DISABLED".to_owned(),
            })
            .collect(),
        dry_run: false,
    }
}

/// A page of deliveries stops before [`DELIVERIES_PAGE_BYTES`] of stored records (it holds at
/// least one), however large its `limit`, and the next page goes on from there: a delivery that
/// reached a thousand services keeps each of them, and a hundred of those would not fit in a
/// Lambda's answer.
async fn a_deliveries_page_stays_within_its_bytes(store: TestStore) {
    let store: &dyn Store = &*store;
    // Oldest first: 12 deliveries of 1,000 skipped services (about 110 KB each) between small ones.
    let mut recorded = vec![delivery_record("acme", 1)];
    recorded.extend((0..12).map(|_| delivery_record("acme", 1000)));
    recorded.extend((0..3).map(|_| delivery_record("acme", 2)));
    for record in &recorded {
        assert!(store.record_delivery(record).await.expect("record_delivery"));
    }
    let size = |d: &DeliveryRecord| serde_json::to_string(d).expect("json").len();
    assert!(recorded.iter().map(size).sum::<usize>() > DELIVERIES_PAGE_BYTES);

    let mut pages: Vec<Vec<DeliveryRecord>> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let query = DeliveryQuery {
            filter: DeliveryFilter::default(),
            page: PageRequest::new(after.as_deref(), 100),
        };
        let Page { items, last_key } = store.list_deliveries("acme", &query).await.expect("list");
        assert!(!items.is_empty(), "a page holds at least one delivery");
        assert!(pages.len() < recorded.len(), "paging moves on");
        pages.push(items);
        match last_key {
            Some(key) => after = Some(key),
            None => break,
        }
    }
    let listed: Vec<&DeliveryRecord> = pages.iter().flatten().collect();
    let newest_first: Vec<&DeliveryRecord> = recorded.iter().rev().collect();
    assert_eq!(listed, newest_first, "every delivery once, newest first");
    assert!(pages.len() > 1, "the 16 deliveries do not fit one page");
    let mut next = 0;
    for page in &pages {
        let bytes: usize = page.iter().map(&size).sum();
        next += page.len();
        assert!(page.len() == 1 || bytes <= DELIVERIES_PAGE_BYTES, "{bytes} bytes");
        if let Some(following) = newest_first.get(next) {
            assert!(
                bytes + size(following) > DELIVERIES_PAGE_BYTES,
                "a page is cut only when full"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dispatching: an attempt's transitions

/// A push deployment of `service_id` of `acme` recorded (waiting: `PENDING` or `QUEUED`).
async fn waiting_deployment(store: &dyn Store, service_id: &str, mark: &str) -> DeploymentRequest {
    let request = push_request("acme", service_id);
    let status = recorded_status(store.record_deployment(&request, &push(mark)).await.expect("record"));
    assert!(status.is_waiting(), "recorded {status:?}");
    request
}

/// Begin an attempt that must start; the deployment it started.
async fn started(store: &dyn Store, id: &str) -> DeploymentRecord {
    match store.begin_attempt("acme", id).await.expect("begin_attempt") {
        AttemptStart::Started(record) => *record,
        other => panic!("the attempt on {id} did not start: {other:?}"),
    }
}

async fn an_attempt_begins_and_delivers(store: TestStore) {
    let store: &dyn Store = &*store;
    create(store, &app("acme", "api", "acme/shop")).await;
    let request = waiting_deployment(store, "api", "a..b").await;

    let record = started(store, &request.deployment_id).await;
    assert_eq!(record.request, request);
    assert_eq!(record.status, DeploymentStatus::InProgress);
    assert_eq!(record.attempts, 1);
    assert_eq!(
        deployment(store, &request.deployment_id).await.status,
        DeploymentStatus::InProgress
    );

    store
        .end_attempt("acme", &request.deployment_id, &AttemptEnd::Delivered)
        .await
        .expect("end_attempt");
    let delivered = deployment(store, &request.deployment_id).await;
    assert_eq!(delivered.status, DeploymentStatus::Delivered);
    assert_eq!(delivered.attempts, 1);
    assert_eq!(delivered.last_error, None);
    assert_eq!(delivered.next_attempt_at, None);

    assert_eq!(
        store
            .begin_attempt("acme", &new_deployment_id())
            .await
            .expect("begin_attempt"),
        AttemptStart::NotFound
    );
    assert_eq!(
        store
            .begin_attempt("other", &request.deployment_id)
            .await
            .expect("begin_attempt"),
        AttemptStart::NotFound,
        "another organization's deployment is not found"
    );
}

async fn a_retried_attempt_begins_again(store: TestStore) {
    let store: &dyn Store = &*store;
    create_dispatched(store, &app("acme", "api", "acme/shop")).await;
    let request = waiting_deployment(store, "api", "a..b").await;
    let id = &request.deployment_id;

    started(store, id).await;
    let retry = AttemptEnd::Retry {
        error: "the target answered 503 Service Unavailable".to_owned(),
        // Due already: the attempt below is the retry.
        next_attempt_unix: 1_600_000_000,
    };
    store.end_attempt("acme", id, &retry).await.expect("end_attempt");
    let waiting = deployment(store, id).await;
    assert_eq!(waiting.status, DeploymentStatus::Queued);
    assert_eq!(waiting.attempts, 1);
    assert_eq!(
        waiting.last_error.as_deref(),
        Some("the target answered 503 Service Unavailable")
    );
    assert_eq!(waiting.next_attempt_at.as_deref(), Some("2020-09-13T12:26:40Z"));

    let again = started(store, id).await;
    assert_eq!(again.status, DeploymentStatus::InProgress);
    assert_eq!(again.attempts, 2, "every attempt counts");
    assert_eq!(again.next_attempt_at, None, "no retry is due while it is in progress");

    // The service's target went away: back to QUEUED, for pull consumers, saying why.
    let note = "the service has no deploy target any more; pull consumers take it";
    store
        .end_attempt("acme", id, &AttemptEnd::Release { note: note.to_owned() })
        .await
        .expect("end_attempt");
    let released = deployment(store, id).await;
    assert_eq!(released.status, DeploymentStatus::Queued);
    assert_eq!(released.last_error.as_deref(), Some(note));
    assert_eq!(released.next_attempt_at, None);
    assert_eq!(released.attempts, 2);
}

async fn the_newest_waiting_deployment_wins(store: TestStore) {
    let store: &dyn Store = &*store;
    create(store, &app("acme", "api", "acme/shop")).await;
    create(store, &app("acme", "web", "acme/shop")).await;
    let first = waiting_deployment(store, "api", "a..b").await;
    let second = waiting_deployment(store, "api", "b..c").await;
    let third = waiting_deployment(store, "api", "c..d").await;
    let other = waiting_deployment(store, "web", "a..b").await;

    // Taking the newest supersedes the older waiting ones in the same write.
    started(store, &third.deployment_id).await;
    for older in [&first, &second] {
        assert_eq!(
            deployment(store, &older.deployment_id).await.status,
            DeploymentStatus::Superseded
        );
        assert_eq!(
            store
                .begin_attempt("acme", &older.deployment_id)
                .await
                .expect("begin_attempt"),
            AttemptStart::NotWaiting(DeploymentStatus::Superseded)
        );
    }
    // Another service is not held back, nor superseded.
    assert!(deployment(store, &other.deployment_id).await.status.is_waiting());
    started(store, &other.deployment_id).await;

    // An older one begun while a newer one waits is superseded, never delivered; the newer
    // one still waits.
    store
        .end_attempt("acme", &third.deployment_id, &AttemptEnd::Delivered)
        .await
        .expect("end_attempt");
    let older = waiting_deployment(store, "api", "d..e").await;
    let newer = waiting_deployment(store, "api", "e..f").await;
    assert_eq!(
        store
            .begin_attempt("acme", &older.deployment_id)
            .await
            .expect("begin_attempt"),
        AttemptStart::Superseded
    );
    assert_eq!(
        deployment(store, &older.deployment_id).await.status,
        DeploymentStatus::Superseded
    );
    assert!(deployment(store, &newer.deployment_id).await.status.is_waiting());
    started(store, &newer.deployment_id).await;
    assert_eq!(
        deployment(store, &third.deployment_id).await.status,
        DeploymentStatus::Delivered,
        "a final deployment is not superseded"
    );
}

async fn final_statuses_never_move(store: TestStore) {
    let store: &dyn Store = &*store;
    create(store, &app("acme", "api", "acme/shop")).await;
    let ends = [
        (AttemptEnd::Delivered, DeploymentStatus::Delivered),
        (
            AttemptEnd::Failed {
                error: "the target answered 410 Gone".to_owned(),
            },
            DeploymentStatus::Failed,
        ),
    ];
    let mut finished = Vec::new();
    for (i, (end, status)) in ends.iter().enumerate() {
        let request = waiting_deployment(store, "api", &format!("{i}..{}", i + 1)).await;
        started(store, &request.deployment_id).await;
        store
            .end_attempt("acme", &request.deployment_id, end)
            .await
            .expect("end_attempt");
        finished.push((request.deployment_id, *status));
    }
    let older = waiting_deployment(store, "api", "x..y").await;
    let newer = waiting_deployment(store, "api", "y..z").await;
    started(store, &newer.deployment_id).await;
    finished.push((older.deployment_id, DeploymentStatus::Superseded));

    let every_end = [
        AttemptEnd::Delivered,
        AttemptEnd::Failed {
            error: "late".to_owned(),
        },
        AttemptEnd::Retry {
            error: "late".to_owned(),
            next_attempt_unix: 1_900_000_000,
        },
        AttemptEnd::Release {
            note: "late".to_owned(),
        },
    ];
    for (id, status) in &finished {
        let before = deployment(store, id).await;
        assert_eq!(before.status, *status);
        assert_eq!(
            store.begin_attempt("acme", id).await.expect("begin_attempt"),
            AttemptStart::NotWaiting(*status)
        );
        for end in &every_end {
            store.end_attempt("acme", id, end).await.expect("end_attempt");
        }
        let after = deployment(store, id).await;
        assert_eq!(after.status, *status, "{id} moved");
        assert_eq!(after.attempts, before.attempts);
        assert_eq!(after.last_error, before.last_error);
    }
}

async fn an_attempt_ends_only_in_progress(store: TestStore) {
    let store: &dyn Store = &*store;
    create(store, &app("acme", "api", "acme/shop")).await;
    let request = waiting_deployment(store, "api", "a..b").await;
    let id = &request.deployment_id;
    let before = deployment(store, id).await;
    for end in [
        AttemptEnd::Delivered,
        AttemptEnd::Failed {
            error: "refused".to_owned(),
        },
        AttemptEnd::Retry {
            error: "busy".to_owned(),
            next_attempt_unix: 1_900_000_000,
        },
    ] {
        store.end_attempt("acme", id, &end).await.expect("end_attempt");
        let after = deployment(store, id).await;
        assert_eq!(
            after.status, before.status,
            "a waiting deployment is not ended: {end:?}"
        );
        assert_eq!(after.attempts, 0);
        assert_eq!(after.last_error, None);
        assert_eq!(after.next_attempt_at, None);
    }
    store
        .end_attempt("acme", &new_deployment_id(), &AttemptEnd::Delivered)
        .await
        .expect("ending an unknown deployment is harmless");
    // It can still be taken.
    assert_eq!(started(store, id).await.attempts, 1);
}

// ---------------------------------------------------------------------------------------------
// AWS only

/// 25 requests go out in batches of ten; moto hands them back with the service's message
/// group and the deployment id as deduplication id, in order within each group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_send_in_batches() {
    use aws_sdk_sqs::types::MessageSystemAttributeName;

    let fixture = autodeploy_tests::aws_fixture().await;
    let requests: Vec<DeploymentRequest> = (0..25)
        .map(|i| push_request("acme", &format!("svc-{}", i % 3)))
        .collect();
    let results = fixture.queue.send(&requests).await;
    assert_eq!(results.len(), 25);
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    let mut received: Vec<(String, String, DeploymentRequest)> = Vec::new();
    for _ in 0..30 {
        if received.len() >= requests.len() {
            break;
        }
        let out = fixture
            .sqs
            .receive_message()
            .queue_url(&fixture.queues.deployments.url)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive_message");
        for message in out.messages() {
            let attrs = message.attributes().expect("message attributes");
            let group = attrs[&MessageSystemAttributeName::MessageGroupId].clone();
            let dedup = attrs[&MessageSystemAttributeName::MessageDeduplicationId].clone();
            let request: DeploymentRequest =
                serde_json::from_str(message.body().expect("body")).expect("a deployment request");
            received.push((group, dedup, request));
            // A FIFO group stays locked while a message of it is in flight.
            fixture
                .sqs
                .delete_message()
                .queue_url(&fixture.queues.deployments.url)
                .receipt_handle(message.receipt_handle().expect("receipt handle"))
                .send()
                .await
                .expect("delete_message");
        }
    }
    assert_eq!(received.len(), 25);
    for (group, dedup, request) in &received {
        assert_eq!(group, &request.message_group());
        assert_eq!(dedup, &request.deployment_id);
        assert!(requests.contains(request));
    }
    for service in ["svc-0", "svc-1", "svc-2"] {
        let sent: Vec<&str> = requests
            .iter()
            .filter(|r| r.service_id == service)
            .map(|r| r.deployment_id.as_str())
            .collect();
        let got: Vec<&str> = received
            .iter()
            .filter(|(_, _, r)| r.service_id == service)
            .map(|(_, _, r)| r.deployment_id.as_str())
            .collect();
        assert_eq!(got, sent, "one service's deployments stay in order");
    }

    // Sending a deployment again is harmless.
    let again = fixture.queue.send(&requests[..2]).await;
    assert!(again.iter().all(Result::is_ok), "{again:?}");
}

/// A queue that does not exist fails every request, each with its own error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_failures_are_per_request() {
    let fixture = autodeploy_tests::aws_fixture().await;
    let missing = format!(
        "{}-missing.fifo",
        fixture.queues.deployments.url.trim_end_matches(".fifo")
    );
    let queue = autodeploy_api::aws::SqsQueue::new(fixture.sqs.clone(), missing);
    let requests: Vec<DeploymentRequest> = (0..12).map(|_| push_request("acme", "api")).collect();
    let results = queue.send(&requests).await;
    assert_eq!(results.len(), 12);
    assert!(results.iter().all(Result::is_err), "{results:?}");
}

/// The items are laid out as the comment above `Table` in `infra/template.yaml` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamo_item_layout_follows_the_template() {
    use aws_sdk_dynamodb::types::AttributeValue;

    let fixture = autodeploy_tests::aws_fixture().await;
    let store: &dyn Store = &fixture.store;
    let get = async |pk: &str, sk: &str| {
        fixture
            .dynamo
            .get_item()
            .table_name(&fixture.table)
            .key("pk", AttributeValue::S(pk.to_owned()))
            .key("sk", AttributeValue::S(sk.to_owned()))
            .send()
            .await
            .expect("get_item")
            .item
            .unwrap_or_else(|| panic!("no item {pk} / {sk}"))
    };
    let text = |item: &std::collections::HashMap<String, AttributeValue>, name: &str| {
        item.get(name).and_then(|v| v.as_s().ok()).cloned()
    };

    let mut job = app("acme", "api", "acme/shop");
    job.spec.kind = ServiceKind::Job;
    create(store, &job).await;
    create(store, &container("acme", "web", "ghcr.io", "acme/web", "1")).await;
    let service = get("ORG#acme", "SERVICE#api").await;
    assert_eq!(
        text(&service, "gsi1pk").as_deref(),
        Some("REPO#acme#github.com/acme/shop")
    );
    assert_eq!(text(&service, "gsi1sk").as_deref(), Some("api"));
    assert_eq!(text(&service, "gsi2pk"), None);
    let web = get("ORG#acme", "SERVICE#web").await;
    assert_eq!(text(&web, "gsi2pk").as_deref(), Some("IMAGE#acme#acme/web"));
    assert_eq!(text(&web, "gsi2sk").as_deref(), Some("web"));
    assert_eq!(text(&web, "gsi1pk"), None);

    let request = push_request("acme", "api");
    let id = request.deployment_id.clone();
    store.record_deployment(&request, &push("a..b")).await.expect("record");
    let deployment = get("ORG#acme", &format!("DEPLOYMENT#{id}")).await;
    assert_eq!(text(&deployment, "gsi1pk").as_deref(), Some("DEPSVC#acme#api"));
    assert_eq!(text(&deployment, "gsi1sk").as_deref(), Some(id.as_str()));
    assert_eq!(text(&deployment, "gsi2pk").as_deref(), Some("PENDING"));
    assert_eq!(text(&deployment, "gsi2sk").as_deref(), Some(id.as_str()));
    assert_eq!(text(&deployment, "status").as_deref(), Some("PENDING"));
    assert!(
        !deployment.contains_key("expires_at"),
        "a pending deployment never expires"
    );
    store
        .mark_queued("acme", std::slice::from_ref(&id))
        .await
        .expect("mark_queued");
    let deployment = get("ORG#acme", &format!("DEPLOYMENT#{id}")).await;
    assert_eq!(text(&deployment, "status").as_deref(), Some("QUEUED"));
    assert_eq!(text(&deployment, "gsi2pk"), None);
    let expires: i64 = deployment["expires_at"]
        .as_n()
        .expect("expires_at")
        .parse()
        .expect("a number");
    assert!(expires > 1_700_000_000, "a unix time in seconds: {expires}");
    assert_eq!(
        get("ORG#acme", "SERVICE#api").await["last_push"]
            .as_s()
            .ok()
            .map(String::as_str),
        Some("a..b")
    );

    let t = token("acme", "tok", &["deploy"]);
    store.create_token(&t).await.expect("create_token");
    get("TOKEN#acme", "TOKEN#tok").await;
    get(&format!("TOKENHASH#{}", t.hash), "TOKENHASH").await;
    store
        .put_secret(
            "acme",
            "github",
            &SecretRecord {
                secret: "s".repeat(20),
                set_at: NOW.to_owned(),
            },
        )
        .await
        .expect("put_secret");
    get("SECRET#acme", "SECRET#github").await;
    store
        .remember_delivery("acme", &key("github", "d-1", 1_800_000_000))
        .await
        .expect("remember_delivery");
    let delivery = get("DELIVERY#acme#github#d-1", "DELIVERY").await;
    assert_eq!(
        delivery["expires_at"].as_n().ok().map(String::as_str),
        Some("1800000000")
    );

    // The table's TTL attribute is the one the store writes.
    let ttl = fixture
        .dynamo
        .describe_time_to_live()
        .table_name(&fixture.table)
        .send()
        .await
        .expect("describe_time_to_live");
    assert_eq!(
        ttl.time_to_live_description().and_then(|d| d.attribute_name()),
        Some("expires_at")
    );
}

/// A service as the first release wrote it (its last push, none of the marks this version
/// keeps of every push, no current commit): that last push, sent again after the upgrade, is
/// queued already, as the first release held; a new push is queued, and from then on the
/// marks decide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamo_a_first_release_services_last_push_stays_queued() {
    use aws_sdk_dynamodb::types::AttributeValue;

    let fixture = autodeploy_tests::aws_fixture().await;
    let store: &dyn Store = &fixture.store;
    create(store, &app("acme", "api", "acme/shop")).await;
    fixture
        .dynamo
        .update_item()
        .table_name(&fixture.table)
        .key("pk", AttributeValue::S("ORG#acme".to_owned()))
        .key("sk", AttributeValue::S("SERVICE#api".to_owned()))
        .update_expression("SET last_push = :mark REMOVE current_commit")
        .expression_attribute_values(":mark", AttributeValue::S("a..b".to_owned()))
        .send()
        .await
        .expect("update_item");
    let again = store
        .record_deployment(&push_request("acme", "api"), &push("a..b"))
        .await
        .expect("record");
    assert_eq!(again, RecordOutcome::GuardFailed);
    recorded_status(
        store
            .record_deployment(&push_request("acme", "api"), &push("b..c"))
            .await
            .expect("record"),
    );
    let replayed = store
        .record_deployment(&push_request("acme", "api"), &push("b..c"))
        .await
        .expect("record");
    assert_eq!(replayed, RecordOutcome::GuardFailed);
    // A service this version wrote and never pushed to is not held by a missing mark.
    create(store, &app("acme", "web", "acme/shop")).await;
    recorded_status(
        store
            .record_deployment(&push_request("acme", "web"), &push("a..b"))
            .await
            .expect("record"),
    );
}

/// An item no version could have written reads as `Corrupt`, not as a missing record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamo_unreadable_items_are_corrupt() {
    use aws_sdk_dynamodb::types::AttributeValue;

    let fixture = autodeploy_tests::aws_fixture().await;
    fixture
        .dynamo
        .put_item()
        .table_name(&fixture.table)
        .item("pk", AttributeValue::S("ORG#acme".to_owned()))
        .item("sk", AttributeValue::S("SERVICE#api".to_owned()))
        .item("data", AttributeValue::S("{not json".to_owned()))
        .item("etag", AttributeValue::S("e".to_owned()))
        .send()
        .await
        .expect("put_item");
    let got = fixture.store.get_service("acme", "api").await;
    assert!(matches!(got, Err(StoreError::Corrupt(_))), "{got:?}");
    let listed = fixture.store.list_services("acme", PageRequest::first(10)).await;
    assert!(matches!(listed, Err(StoreError::Corrupt(_))), "{listed:?}");
}

/// A store whose table does not exist is unavailable, never a panic or a silent miss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamo_missing_table_is_unavailable() {
    let fixture = autodeploy_tests::aws_fixture().await;
    let store = autodeploy_api::aws::DynamoStore::new(fixture.dynamo.clone(), "no-such-table");
    assert!(matches!(store.ping().await, Err(StoreError::Unavailable(_))));
    let got = store.get_service("acme", "api").await;
    assert!(matches!(got, Err(StoreError::Unavailable(_))), "{got:?}");
}

/// The admin token secret is read on first use, cached as a digest, and a failed read is
/// tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_from_secrets_manager() {
    use autodeploy_api::admin::AdminTokenSource;
    use sha2::{Digest, Sha256};

    let config = autodeploy_tests::aws_sdk_config(&autodeploy_tests::moto_url()).await;
    let name = autodeploy_tests::unique_name("admin-token");
    let source = autodeploy_api::aws::SecretsManagerAdminToken::new(&config, &name);

    let missing = source.admin_token_sha256().await;
    assert!(matches!(missing, Err(StoreError::Unavailable(_))), "{missing:?}");

    let token = "an-admin-token-for-tests";
    autodeploy_tests::set_secret(&config, &name, token).await;
    let want: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    assert_eq!(source.admin_token_sha256().await.expect("digest"), Some(want));

    // Cached: a later change of the secret is not read again by this instance.
    autodeploy_tests::set_secret(&config, &name, "another-token").await;
    assert_eq!(source.admin_token_sha256().await.expect("digest"), Some(want));
}

/// Entries of a partly failed batch are sent again, and only they; an entry SQS blames on
/// the sender is not. SQS is faked here: moto never fails part of a batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_retries_the_failed_entries_of_a_batch() {
    use std::sync::{Arc, Mutex};

    let calls: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let seen = Arc::clone(&calls);
    let app = axum::Router::new().fallback(move |body: bytes::Bytes| {
        let seen = Arc::clone(&seen);
        async move {
            let request: serde_json::Value = serde_json::from_slice(&body).expect("a JSON request");
            let ids: Vec<String> = request["Entries"]
                .as_array()
                .expect("entries")
                .iter()
                .map(|e| e["Id"].as_str().expect("an id").to_owned())
                .collect();
            let first = {
                let mut calls = seen.lock().expect("lock");
                calls.push(ids.clone());
                calls.len() == 1
            };
            let (mut successful, mut failed) = (Vec::new(), Vec::new());
            for id in ids {
                match (first, id.as_str()) {
                    (true, "1") => failed.push(serde_json::json!({
                        "Id": id, "SenderFault": false, "Code": "InternalError", "Message": "try again"
                    })),
                    (_, "2") => failed.push(serde_json::json!({
                        "Id": id, "SenderFault": true, "Code": "InvalidParameterValue", "Message": "never"
                    })),
                    _ => successful.push(serde_json::json!({
                        "Id": id, "MessageId": uuid::Uuid::new_v4().to_string(),
                        "MD5OfMessageBody": "00000000000000000000000000000000"
                    })),
                }
            }
            (
                [(http::header::CONTENT_TYPE, "application/x-amz-json-1.0")],
                serde_json::json!({"Successful": successful, "Failed": failed}).to_string(),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let config = autodeploy_tests::aws_sdk_config(&url).await;
    let queue =
        autodeploy_api::aws::SqsQueue::new(aws_sdk_sqs::Client::new(&config), format!("{url}/123456789012/q.fifo"));
    let requests: Vec<DeploymentRequest> = (0..4).map(|_| push_request("acme", "api")).collect();
    let results = queue.send(&requests).await;
    assert!(
        results[0].is_ok() && results[1].is_ok() && results[3].is_ok(),
        "{results:?}"
    );
    assert!(results[2].is_err(), "{results:?}");
    let calls = calls.lock().expect("lock").clone();
    assert_eq!(calls, vec![vec!["0", "1", "2", "3"], vec!["1"]]);
}
