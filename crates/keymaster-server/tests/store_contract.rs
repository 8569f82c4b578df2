//! The store contract: the same cases, run directly against every backend through the `Store`
//! trait (no HTTP), so that a backend that passes them keeps the lifecycle the others keep
//! (what each transition changes, which events it emits in which order, what it audits).
//!
//! SQLite always; PostgreSQL too when `KEYMASTER_TEST_DATABASE_URL` is set (a maintenance URL
//! such as `postgres://postgres@127.0.0.1:5432/postgres`): each case gets a database of its own,
//! dropped afterwards. A third backend adds itself to [`backends`].

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use jiff::{SignedDuration, Timestamp};
use keymaster_core::policy::{PasswordCheck, Policy};
use keymaster_core::wire::CodeFormat;
use keymaster_server::crypto::new_id;
use keymaster_server::store::outbox::{AttemptResult, ClaimRequest};
use keymaster_server::store::postgres::PostgresStore;
use keymaster_server::store::retention::Retention;
use keymaster_server::store::sqlite::SqliteStore;
use keymaster_server::store::{
    AuditRecord, BudgetSlot, KeyRecord, KeyState, NewKey, NewService, NewTenant, RecodeOutcome,
    RetrieveCommand, RetrieveOutcome, ServiceAuth, Store,
};
use sqlx::{Connection, PgConnection};

/// A backend under test, with what must outlive it (its directory or database).
struct Backend {
    name: &'static str,
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    pg: Option<PgDb>,
}

/// A PostgreSQL database made for one case, dropped with it.
struct PgDb {
    maintenance: String,
    name: String,
    /// The case's database.
    url: String,
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let (url, name) = (self.maintenance.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut c) = PgConnection::connect(&url).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::raw_sql(&sql).execute(&mut c).await;
                    let _ = c.close().await;
                }
            });
        })
        .join();
    }
}

/// Every backend this run tests, each fresh.
async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&dir.path().join("k.db"), false).unwrap();
    let mut all = vec![Backend {
        name: "sqlite",
        store: Arc::new(sqlite),
        _dir: Some(dir),
        pg: None,
    }];
    if let Some(url) = std::env::var("KEYMASTER_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        let name = new_id("km_contract_").to_lowercase();
        let mut c = PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
        let mut db_url = url::Url::parse(&url).unwrap();
        db_url.set_path(&format!("/{name}"));
        let pg = PgDb {
            maintenance: url.clone(),
            name,
            url: db_url.to_string(),
        };
        let store = PostgresStore::open(db_url.as_str()).await.unwrap();
        all.push(Backend {
            name: "postgres",
            store: Arc::new(store),
            _dir: None,
            pg: Some(pg),
        });
    }
    all
}

/// A tenant, two services and helpers to deposit and retrieve, on one backend.
struct World {
    store: Arc<dyn Store>,
    /// `store` and, on PostgreSQL, a second store on the same database with a pool of its own
    /// (a second replica), for the races.
    replicas: Vec<Arc<dyn Store>>,
    name: &'static str,
    tenant: String,
    svc: ServiceAuth,
    other: ServiceAuth,
    now: Timestamp,
}

fn audit(actor: &str, action: &'static str, at: Timestamp, key: Option<&str>) -> AuditRecord {
    AuditRecord {
        at,
        actor: actor.into(),
        action,
        outcome: "success".into(),
        key_id: key.map(str::to_owned),
        ip: None,
        detail: None,
    }
}

async fn world(b: &Backend) -> World {
    // Whole milliseconds: the precision every backend stores.
    let now = Timestamp::from_millisecond(Timestamp::now().as_millisecond()).unwrap();
    let tenant = new_id("ten_");
    let store = b.store.clone();
    store
        .create_tenant(
            NewTenant {
                id: tenant.clone(),
                name: "acme".into(),
                webhook_url: None,
                webhook_secret_sealed: vec![1; 32],
            },
            audit("admin", "tenant.create", now, None),
        )
        .await
        .unwrap();
    let mut services = Vec::new();
    for name in ["web", "other"] {
        let s = NewService {
            id: new_id("svc_"),
            name: name.into(),
            domains: vec![],
            allowed_cidrs: vec![],
            token_hash: new_id("tok_").into_bytes(),
            confined_tenant_id: None,
        };
        services.push(ServiceAuth {
            id: s.id.clone(),
            name: s.name.clone(),
            domains: vec![],
            allowed_cidrs: vec![],
            confined_tenant_id: None,
        });
        store
            .create_service(s, audit("admin", "service.create", now, None))
            .await
            .unwrap();
    }
    let other = services.pop().unwrap();
    let svc = services.pop().unwrap();
    let mut replicas = vec![store.clone()];
    if let Some(pg) = &b.pg {
        replicas.push(Arc::new(PostgresStore::open(&pg.url).await.unwrap()));
    }
    World {
        store,
        replicas,
        name: b.name,
        tenant,
        svc,
        other,
        now,
    }
}

impl World {
    /// Deposits a key with this policy (JSON) and code; returns its id.
    async fn deposit(&self, policy: &str, code: &[u8]) -> String {
        self.deposit_key(self.new_key(policy, code)).await
    }

    /// Deposits `key`; returns its id.
    async fn deposit_key(&self, key: NewKey) -> String {
        let id = key.id.clone();
        let a = audit("app", "key.deposit", self.now, Some(&id));
        assert!(self.store.deposit(key, a).await.unwrap(), "{}", self.name);
        id
    }

    /// A key of this tenant with this policy (JSON) and code, made now.
    fn new_key(&self, policy: &str, code: &[u8]) -> NewKey {
        let id = new_id("key_");
        let policy: Policy = serde_json::from_str(policy).unwrap();
        NewKey {
            id: id.clone(),
            tenant_id: self.tenant.clone(),
            holder_hash: format!("holder-{id}").into_bytes(),
            code_hash: code.to_vec(),
            code_format: CodeFormat::Digits,
            label: Some("laptop".into()),
            kind: "secret",
            algorithm: "secret".into(),
            spki: None,
            secret_sealed: Some(vec![7; 40]),
            fingerprint: None,
            ssh_fingerprint: None,
            jwk_thumbprint: None,
            proven: false,
            password_hash: policy.has_password.then(|| "$argon2id$stored".into()),
            policy,
            notify: None,
            created_at: self.now,
            expires_at: self.now + SignedDuration::from_mins(60),
            origin_network: None,
            sas_commitment: None,
        }
    }

    fn cmd(&self, code: &[u8], service: &ServiceAuth) -> RetrieveCommand {
        RetrieveCommand {
            code_hash: code.to_vec(),
            previous_code_hashes: Vec::new(),
            service: service.clone(),
            source_ip: "192.0.2.7".parse().unwrap(),
            context: None,
            password: PasswordCheck::NotGiven,
            now: self.now,
            budget_per_minute: 100,
            new_retrieval_id: new_id("ret_"),
            budget_slot: None,
            preview: false,
        }
    }

    async fn retrieve(&self, code: &[u8]) -> RetrieveOutcome {
        self.store
            .retrieve(self.cmd(code, &self.svc))
            .await
            .unwrap()
    }

    async fn state(&self, key_id: &str) -> KeyState {
        self.record(key_id).await.state
    }

    /// The key's event types, oldest first.
    async fn events(&self, key_id: &str) -> Vec<String> {
        let events = self.store.key_events(key_id, 0).await.unwrap();
        events.into_iter().map(|e| e.event.event_type).collect()
    }

    /// The outcomes of `cmds`, all started at once and spread over the replicas.
    async fn race(&self, cmds: Vec<RetrieveCommand>) -> Tally {
        let calls = cmds.into_iter().enumerate().map(|(i, cmd)| {
            let store = self.replicas[i % self.replicas.len()].clone();
            tokio::spawn(async move { store.retrieve(cmd).await.unwrap() })
        });
        let mut tally = Tally::default();
        for out in join_all(calls).await {
            tally.add(&out.unwrap());
        }
        tally
    }

    /// The record of a key.
    async fn record(&self, key_id: &str) -> KeyRecord {
        let holder = format!("holder-{key_id}").into_bytes();
        let rec = self.store.key_by_holder(Some(key_id), &holder).await;
        rec.unwrap().expect("the record exists")
    }

    /// The outcomes of the audit rows of this action for this key, oldest first.
    async fn audited(&self, key_id: &str, action: &str) -> Vec<String> {
        let mut rows = self.store.list_audit(1000, None).await.unwrap();
        rows.reverse();
        rows.into_iter()
            .filter(|r| r.key_id.as_deref() == Some(key_id) && r.action == action)
            .map(|r| r.outcome)
            .collect()
    }
}

/// How many retrievals ended how.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    allowed: usize,
    not_found: usize,
    rate_limited: usize,
    verify_password: Vec<BudgetSlot>,
    other: usize,
}

impl Tally {
    fn add(&mut self, o: &RetrieveOutcome) {
        match o {
            RetrieveOutcome::Allowed(_) => self.allowed += 1,
            RetrieveOutcome::NotFound => self.not_found += 1,
            RetrieveOutcome::RateLimited(s) if (1..=60).contains(s) => self.rate_limited += 1,
            RetrieveOutcome::VerifyPassword { slot, .. } => self.verify_password.push(*slot),
            _ => self.other += 1,
        }
    }

    /// (allowed, not found, rate limited, password checks, anything else)
    fn counts(&self) -> (usize, usize, usize, usize, usize) {
        (
            self.allowed,
            self.not_found,
            self.rate_limited,
            self.verify_password.len(),
            self.other,
        )
    }
}

fn allowed(o: &RetrieveOutcome) -> &keymaster_server::store::RetrievedKey {
    match o {
        RetrieveOutcome::Allowed(k) => k,
        o => panic!("expected the key, got {o:?}"),
    }
}

/// Runs `case` on every backend.
macro_rules! contract {
    ($name:ident, |$w:ident| $body:block) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            for b in backends().await {
                let $w = world(&b).await;
                $body
                drop(b.pg);
            }
        }
    };
}

contract!(
    a_single_use_code_is_handed_out_once_then_reported_stale,
    |w| {
        let key = w.deposit(r#"{"max_retrievals":1}"#, b"code-1").await;
        let got = w.retrieve(b"code-1").await;
        assert_eq!(allowed(&got).key_id, key, "{}", w.name);
        assert_eq!(allowed(&got).secret_sealed.as_deref(), Some(&[7u8; 40][..]));
        assert!(
            matches!(w.retrieve(b"code-1").await, RetrieveOutcome::NotFound),
            "{}",
            w.name
        );
        assert_eq!(w.state(&key).await, KeyState::Retrieved, "{}", w.name);
        assert_eq!(
            w.events(&key).await,
            ["key.deposited", "key.retrieved", "code.stale_used"],
            "{}",
            w.name
        );
        assert_eq!(
            w.audited(&key, "key.retrieve").await,
            ["success"],
            "{}",
            w.name
        );
        // Events read back whole, whatever each backend keeps in its columns and payload.
        let events = w.store.key_events(&key, 0).await.unwrap();
        let retrieved = &events[1].event;
        assert_eq!(retrieved.data.key_id, key, "{}", w.name);
        assert_eq!(retrieved.data.tenant_id, w.tenant, "{}", w.name);
        assert_eq!(
            retrieved.data.label.as_deref(),
            Some("laptop"),
            "{}",
            w.name
        );
        let service = retrieved.data.service.as_ref().expect("the service");
        assert_eq!((&service.id, &service.name), (&w.svc.id, &w.svc.name));
        assert_eq!(retrieved.timestamp, w.now, "{}", w.name);
        assert!(events.windows(2).all(|p| p[0].seq < p[1].seq), "{}", w.name);
        let seq = w.store.event_seq(&key, &retrieved.id).await.unwrap();
        assert_eq!(seq, Some(events[1].seq), "{}", w.name);
    }
);

contract!(retrievals_count_until_the_last_one_ends_the_key, |w| {
    let key = w.deposit(r#"{"max_retrievals":2}"#, b"code-2").await;
    allowed(&w.retrieve(b"code-2").await);
    assert_eq!(w.state(&key).await, KeyState::Active, "{}", w.name);
    allowed(&w.retrieve(b"code-2").await);
    assert_eq!(w.state(&key).await, KeyState::Retrieved, "{}", w.name);
    assert!(matches!(
        w.retrieve(b"code-2").await,
        RetrieveOutcome::NotFound
    ));
});

contract!(
    a_held_key_is_handed_again_to_its_service_and_confirmed,
    |w| {
        let policy =
            r#"{"max_retrievals":1,"require_confirmation":true,"confirm_grace_seconds":60}"#;
        let key = w.deposit(policy, b"code-3").await;
        let first = w.retrieve(b"code-3").await;
        let first = allowed(&first);
        assert_eq!(
            first.confirm_by,
            Some(w.now + SignedDuration::from_secs(60)),
            "{}",
            w.name
        );
        assert_eq!(
            w.state(&key).await,
            KeyState::AwaitingConfirmation,
            "{}",
            w.name
        );
        let again = w.retrieve(b"code-3").await;
        assert_eq!(
            allowed(&again).retrieval_id,
            first.retrieval_id,
            "{}",
            w.name
        );
        let other = w.store.retrieve(w.cmd(b"code-3", &w.other)).await.unwrap();
        assert!(matches!(other, RetrieveOutcome::NotFound), "{}", w.name);
        assert!(!w
            .store
            .confirm(&first.retrieval_id, &w.other, w.now)
            .await
            .unwrap());
        assert!(w
            .store
            .confirm(&first.retrieval_id, &w.svc, w.now)
            .await
            .unwrap());
        assert!(!w
            .store
            .confirm(&first.retrieval_id, &w.svc, w.now)
            .await
            .unwrap());
        assert_eq!(w.state(&key).await, KeyState::Retrieved, "{}", w.name);
        assert_eq!(
            w.events(&key).await,
            ["key.deposited", "key.retrieved", "key.confirmed"],
            "{}",
            w.name
        );
    }
);

contract!(
    a_confirmed_hold_with_retrievals_left_makes_the_key_active_again,
    |w| {
        let policy =
            r#"{"max_retrievals":2,"require_confirmation":true,"confirm_grace_seconds":60}"#;
        let key = w.deposit(policy, b"code-4").await;
        let first = w.retrieve(b"code-4").await;
        assert!(w
            .store
            .confirm(&allowed(&first).retrieval_id, &w.svc, w.now)
            .await
            .unwrap());
        assert_eq!(w.state(&key).await, KeyState::Active, "{}", w.name);
        let second = w.store.retrieve(w.cmd(b"code-4", &w.other)).await.unwrap();
        assert_ne!(allowed(&second).retrieval_id, allowed(&first).retrieval_id);
    }
);

contract!(
    wrong_passwords_lock_the_key_and_a_right_one_resets_the_count,
    |w| {
        let policy = r#"{"max_retrievals":2,"has_password":true}"#;
        let key = w.deposit(policy, b"code-5").await;
        let with_password = |check: PasswordCheck, slot| {
            let mut c = w.cmd(b"code-5", &w.svc);
            c.password = check;
            c.budget_slot = slot;
            c
        };
        // A password not checked yet: the store hands back the hash and a budget slot.
        let RetrieveOutcome::VerifyPassword { hash, slot } = w
            .store
            .retrieve(with_password(PasswordCheck::Unverified, None))
            .await
            .unwrap()
        else {
            panic!("{}: no password check asked for", w.name)
        };
        assert_eq!(hash, "$argon2id$stored", "{}", w.name);
        let wrong = w
            .store
            .retrieve(with_password(PasswordCheck::Incorrect, Some(slot)))
            .await
            .unwrap();
        assert!(
            matches!(wrong, RetrieveOutcome::Denied(d) if d.code() == "password_incorrect"),
            "{wrong:?}"
        );
        // The right one hands the key out and starts the count of wrong ones again.
        allowed(
            &w.store
                .retrieve(with_password(PasswordCheck::Correct, Some(slot)))
                .await
                .unwrap(),
        );
        for i in 1..=5 {
            let out = w
                .store
                .retrieve(with_password(PasswordCheck::Incorrect, None))
                .await
                .unwrap();
            let expected = if i < 5 {
                "password_incorrect"
            } else {
                "key_locked"
            };
            assert!(
                matches!(out, RetrieveOutcome::Denied(d) if d.code() == expected),
                "{}: {i} {out:?}",
                w.name
            );
        }
        assert_eq!(w.state(&key).await, KeyState::Locked, "{}", w.name);
        let locked = w
            .store
            .retrieve(with_password(PasswordCheck::Correct, None))
            .await
            .unwrap();
        assert!(
            matches!(locked, RetrieveOutcome::Denied(d) if d.code() == "key_locked"),
            "{locked:?}"
        );
        let events = w.events(&key).await;
        let locks = events.iter().filter(|e| *e == "key.locked").count();
        let denials = events.iter().filter(|e| *e == "key.denied").count();
        assert_eq!((locks, denials), (1, 7), "{}: {events:?}", w.name);
        let lock_at = events.iter().position(|e| e == "key.locked").unwrap();
        assert_eq!(
            events[lock_at + 1],
            "key.denied",
            "{}: locked comes before its denial",
            w.name
        );
    }
);

contract!(the_failure_budget_limits_a_service_and_only_it, |w| {
    let mut cmd = w.cmd(b"no-such-code", &w.svc);
    cmd.budget_per_minute = 2;
    for _ in 0..2 {
        assert!(matches!(
            w.store.retrieve(cmd.clone()).await.unwrap(),
            RetrieveOutcome::NotFound
        ));
    }
    let limited = w.store.retrieve(cmd.clone()).await.unwrap();
    assert!(
        matches!(limited, RetrieveOutcome::RateLimited(s) if (1..=60).contains(&s)),
        "{}: {limited:?}",
        w.name
    );
    let mut other = w.cmd(b"no-such-code", &w.other);
    other.budget_per_minute = 2;
    assert!(matches!(
        w.store.retrieve(other).await.unwrap(),
        RetrieveOutcome::NotFound
    ));
    let refused = w
        .store
        .refuse_retrieval(&w.svc, 2, audit("svc", "key.retrieve", w.now, None));
    assert!(refused.await.unwrap().is_some(), "{}", w.name);
});

contract!(a_preview_changes_nothing_but_its_event, |w| {
    let key = w.deposit(r#"{"max_retrievals":1}"#, b"code-6").await;
    let mut cmd = w.cmd(b"code-6", &w.svc);
    cmd.preview = true;
    let RetrieveOutcome::Previewed(p) = w.store.retrieve(cmd).await.unwrap() else {
        panic!("{}: no preview", w.name)
    };
    assert_eq!(
        (p.key_id.as_str(), p.tenant_name.as_str()),
        (key.as_str(), "acme")
    );
    assert_eq!(p.deposited_at, w.now, "{}", w.name);
    assert_eq!(w.state(&key).await, KeyState::Active, "{}", w.name);
    allowed(&w.retrieve(b"code-6").await);
    assert_eq!(
        w.events(&key).await,
        ["key.deposited", "key.previewed", "key.retrieved"],
        "{}",
        w.name
    );
});

contract!(a_revoked_key_is_gone_and_its_code_reported, |w| {
    let key = w.deposit(r#"{"max_retrievals":1}"#, b"code-7").await;
    let a = audit("holder", "key.revoke", w.now, Some(&key));
    assert!(w.store.revoke(&key, a.clone()).await.unwrap(), "{}", w.name);
    assert!(
        !w.store.revoke(&key, a).await.unwrap(),
        "{}: revoked twice",
        w.name
    );
    assert_eq!(w.state(&key).await, KeyState::Revoked, "{}", w.name);
    assert!(matches!(
        w.retrieve(b"code-7").await,
        RetrieveOutcome::NotFound
    ));
    assert_eq!(
        w.events(&key).await,
        ["key.deposited", "key.revoked", "code.stale_used"],
        "{}",
        w.name
    );
    let later = w.now + SignedDuration::from_mins(1);
    let moved = w
        .store
        .set_expiry(&key, later, audit("holder", "key.expiry", w.now, None));
    assert!(
        !moved.await.unwrap(),
        "{}: the expiry of a gone key moved",
        w.name
    );
});

contract!(
    a_new_code_replaces_the_old_one_which_is_then_reported,
    |w| {
        let key = w.deposit(r#"{"max_retrievals":1}"#, b"code-8").await;
        let taken = w.deposit(r#"{"max_retrievals":1}"#, b"code-9").await;
        let a = audit("holder", "key.recode", w.now, Some(&key));
        let clash = w
            .store
            .recode(&key, b"code-9".to_vec(), 5, a.clone())
            .await
            .unwrap();
        assert!(
            matches!(clash, RecodeOutcome::CodeTaken),
            "{}: {clash:?}",
            w.name
        );
        let done = w
            .store
            .recode(&key, b"code-8b".to_vec(), 5, a.clone())
            .await
            .unwrap();
        assert!(
            matches!(done, RecodeOutcome::Done(_)),
            "{}: {done:?}",
            w.name
        );
        assert!(matches!(
            w.retrieve(b"code-8").await,
            RetrieveOutcome::NotFound
        ));
        assert_eq!(
            allowed(&w.retrieve(b"code-8b").await).key_id,
            key,
            "{}",
            w.name
        );
        assert_eq!(
            w.events(&key).await,
            [
                "key.deposited",
                "code.reissued",
                "code.stale_used",
                "key.retrieved"
            ],
            "{}",
            w.name
        );
        assert_eq!(w.events(&taken).await, ["key.deposited"], "{}", w.name);
        let once = w
            .store
            .recode(&taken, b"code-9b".to_vec(), 1, a.clone())
            .await
            .unwrap();
        assert!(
            matches!(once, RecodeOutcome::Done(_)),
            "{}: {once:?}",
            w.name
        );
        let limited = w
            .store
            .recode(&taken, b"code-9c".to_vec(), 1, a)
            .await
            .unwrap();
        assert!(
            matches!(limited, RecodeOutcome::RateLimited(_)),
            "{}: {limited:?}",
            w.name
        );
        assert!(matches!(
            w.retrieve(b"code-9c").await,
            RetrieveOutcome::NotFound
        ));
    }
);

contract!(the_sweeper_ends_expired_keys_and_ended_graces_once, |w| {
    let expiring = w.deposit(r#"{"max_retrievals":1}"#, b"code-10").await;
    let policy = r#"{"max_retrievals":1,"require_confirmation":true,"confirm_grace_seconds":60}"#;
    let held = w.deposit(policy, b"code-11").await;
    allowed(&w.retrieve(b"code-11").await);
    let soon = w.now + SignedDuration::from_secs(30);
    let a = audit("holder", "key.expiry", w.now, Some(&expiring));
    assert!(
        w.store.set_expiry(&expiring, soon, a).await.unwrap(),
        "{}",
        w.name
    );
    let retention = Retention::records_only(Duration::from_secs(3600));
    let first = w.store.sweep(soon, retention).await.unwrap();
    assert_eq!((first.expired, first.grace_ended), (1, 0), "{}", w.name);
    let grace_over = w.now + SignedDuration::from_secs(61);
    let second = w.store.sweep(grace_over, retention).await.unwrap();
    assert_eq!((second.expired, second.grace_ended), (0, 1), "{}", w.name);
    let third = w.store.sweep(grace_over, retention).await.unwrap();
    assert_eq!((third.expired, third.grace_ended), (0, 0), "{}", w.name);
    assert_eq!(w.state(&expiring).await, KeyState::Expired, "{}", w.name);
    assert_eq!(w.state(&held).await, KeyState::Retrieved, "{}", w.name);
    assert_eq!(
        w.events(&expiring).await,
        ["key.deposited", "key.expired"],
        "{}",
        w.name
    );
    let events = w.store.key_events(&held, 0).await.unwrap();
    let last = &events.last().unwrap().event;
    assert_eq!(last.event_type, "key.unconfirmed", "{}", w.name);
    assert_eq!(
        last.data.service.as_ref().map(|s| s.id.as_str()),
        Some(w.svc.id.as_str())
    );
    // Past retention, the records and their events go.
    let purge = w
        .store
        .sweep(grace_over + SignedDuration::from_hours(2), retention)
        .await;
    assert!(purge.unwrap().purged >= 2, "{}", w.name);
    let holder = format!("holder-{expiring}").into_bytes();
    assert!(w
        .store
        .key_by_holder(Some(&expiring), &holder)
        .await
        .unwrap()
        .is_none());
});

contract!(
    the_sweeper_purges_audit_rows_and_finished_deliveries_past_their_retention,
    |w| {
        let days = |n: i64| SignedDuration::from_hours(24 * n);
        let old = audit("admin", "service.create", w.now - days(400), None);
        let recent = audit("admin", "tenant.create", w.now - days(10), None);
        w.store.append_audit(old).await.unwrap();
        w.store.append_audit(recent).await.unwrap();
        let audited = |rows: Vec<keymaster_core::wire::AuditEntry>| {
            let horizon = (w.now - days(30)).as_millisecond();
            let old = rows.iter().filter(|r| r.at.as_millisecond() < horizon);
            (old.count(), rows.len())
        };
        let all = w.store.list_audit(1000, None).await.unwrap();
        let (old_rows, total) = audited(all);
        assert_eq!(old_rows, 1, "{}", w.name);

        // A key that notifies a webhook: its `key.deposited` delivery is delivered, another's
        // stays pending.
        let notified = |code: &[u8]| {
            let mut k = w.new_key(r#"{"max_retrievals":1}"#, code);
            k.expires_at = w.now + days(1);
            k.notify = Some(keymaster_core::wire::Notify {
                webhook_url: Some("https://hooks.example/keymaster".into()),
                email: None,
            });
            k
        };
        w.deposit_key(notified(b"code-r1")).await;
        let claim = ClaimRequest {
            now: w.now,
            lease: Duration::from_secs(60),
            limit: 10,
            per_endpoint: 10,
            room: Default::default(),
        };
        let claimed = w.store.claim_deliveries(claim).await.unwrap();
        assert_eq!(claimed.len(), 1, "{}", w.name);
        let done = vec![(claimed[0].id, AttemptResult::Delivered)];
        w.store.finish_deliveries(done, w.now).await.unwrap();
        w.deposit_key(notified(b"code-r2")).await;

        // Kept: the audit log for ever, records for an hour; nothing is old enough yet.
        let keep_audit = Retention::records_only(Duration::from_secs(3600));
        w.store.sweep(w.now, keep_audit).await.unwrap();
        let (old_rows, _) = audited(w.store.list_audit(1000, None).await.unwrap());
        assert_eq!(old_rows, 1, "{}: kept without an audit retention", w.name);
        let delivered = w.store.list_deliveries("delivered", 10).await.unwrap();
        assert_eq!(delivered.len(), 1, "{}", w.name);

        // Audit rows older than 30 days go, and only they.
        let month = Retention {
            records: Duration::from_secs(3600),
            audit: Some(Duration::from_secs(30 * 86_400)),
        };
        let report = w.store.sweep(w.now, month).await.unwrap();
        assert_eq!(report.purged, 1, "{}", w.name);
        let (old_rows, left) = audited(w.store.list_audit(1000, None).await.unwrap());
        assert_eq!((old_rows, left), (0, total + 1), "{}", w.name);

        // Two hours on, the delivered delivery is past the records' retention; the pending one
        // stays whatever its age.
        let later = w.now + SignedDuration::from_hours(2);
        w.store.sweep(later, month).await.unwrap();
        let delivered = w.store.list_deliveries("delivered", 10).await.unwrap();
        assert!(delivered.is_empty(), "{}: {delivered:?}", w.name);
        let pending = w.store.list_deliveries("pending", 10).await.unwrap();
        assert_eq!(pending.len(), 1, "{}: {pending:?}", w.name);
    }
);

contract!(a_live_code_is_not_deposited_twice, |w| {
    w.deposit(r#"{"max_retrievals":1}"#, b"code-12").await;
    let mut key = NewKey {
        id: new_id("key_"),
        tenant_id: w.tenant.clone(),
        holder_hash: b"another-holder".to_vec(),
        code_hash: b"code-12".to_vec(),
        code_format: CodeFormat::Digits,
        label: None,
        kind: "secret",
        algorithm: "secret".into(),
        spki: None,
        secret_sealed: Some(vec![1; 40]),
        fingerprint: None,
        ssh_fingerprint: None,
        jwk_thumbprint: None,
        proven: false,
        policy: serde_json::from_str(r#"{"max_retrievals":1}"#).unwrap(),
        password_hash: None,
        notify: None,
        created_at: w.now,
        expires_at: w.now + SignedDuration::from_mins(5),
        origin_network: None,
        sas_commitment: None,
    };
    let a = audit("app", "key.deposit", w.now, None);
    assert!(
        !w.store.deposit(key.clone(), a.clone()).await.unwrap(),
        "{}",
        w.name
    );
    key.code_hash = b"code-12b".to_vec();
    assert!(w.store.deposit(key, a).await.unwrap(), "{}", w.name);
});

contract!(
    a_dead_code_is_not_deposited_again_until_its_record_is_purged,
    |w| {
        // The ended row keeps its code for the retention period (the dead code's tombstone):
        // a deposit of that code is refused (the caller draws another), and a use of it is
        // reported, until the record is purged with its code.
        let dead = w.deposit(r#"{"max_retrievals":1}"#, b"code-d").await;
        allowed(&w.retrieve(b"code-d").await);
        let again = w.new_key(r#"{"max_retrievals":1}"#, b"code-d");
        let a = audit("app", "key.deposit", w.now, Some(&again.id));
        assert!(
            !w.store.deposit(again, a).await.unwrap(),
            "{}: a dead code deposited again",
            w.name
        );
        assert!(matches!(
            w.retrieve(b"code-d").await,
            RetrieveOutcome::NotFound
        ));
        assert_eq!(
            w.events(&dead).await,
            ["key.deposited", "key.retrieved", "code.stale_used"],
            "{}",
            w.name
        );
        // An ended key is not expired again by the sweeper.
        let retention = Retention::records_only(Duration::from_secs(3 * 3600));
        let after_expiry = w.now + SignedDuration::from_mins(61);
        let swept = w.store.sweep(after_expiry, retention).await.unwrap();
        assert_eq!((swept.expired, swept.purged), (0, 0), "{}", w.name);
        // Past retention: the record goes, and its code with it.
        let purged = w
            .store
            .sweep(w.now + SignedDuration::from_hours(4), retention)
            .await
            .unwrap();
        assert_eq!(purged.purged, 1, "{}: the key's row alone", w.name);
        assert!(matches!(
            w.retrieve(b"code-d").await,
            RetrieveOutcome::NotFound
        ));
        let holder = format!("holder-{dead}").into_bytes();
        let rec = w.store.key_by_holder(Some(&dead), &holder).await.unwrap();
        assert!(rec.is_none(), "{}", w.name);
        assert!(w.events(&dead).await.is_empty(), "{}", w.name);
        let new = w.deposit(r#"{"max_retrievals":1}"#, b"code-d").await;
        assert_eq!(
            allowed(&w.retrieve(b"code-d").await).key_id,
            new,
            "{}",
            w.name
        );
    }
);

contract!(
    a_replaced_code_and_the_last_one_are_both_reported_once_the_key_ended,
    |w| {
        let key = w.deposit(r#"{"max_retrievals":1}"#, b"code-r").await;
        let a = audit("holder", "key.recode", w.now, Some(&key));
        let done = w.store.recode(&key, b"code-r2".to_vec(), 5, a).await;
        assert!(
            matches!(done.unwrap(), RecodeOutcome::Done(_)),
            "{}",
            w.name
        );
        assert_eq!(
            allowed(&w.retrieve(b"code-r2").await).key_id,
            key,
            "{}",
            w.name
        );
        for code in [&b"code-r2"[..], &b"code-r"[..]] {
            assert!(matches!(w.retrieve(code).await, RetrieveOutcome::NotFound));
        }
        assert_eq!(
            w.events(&key).await,
            [
                "key.deposited",
                "code.reissued",
                "key.retrieved",
                "code.stale_used",
                "code.stale_used"
            ],
            "{}",
            w.name
        );
        // A new code that collides with the dead one is refused; the replaced code was
        // superseded only by a deposit of the same code, and both go at the purge.
        let other = w.deposit(r#"{"max_retrievals":1}"#, b"code-r3").await;
        let a = audit("holder", "key.recode", w.now, Some(&other));
        let clash = w.store.recode(&other, b"code-r2".to_vec(), 5, a).await;
        assert!(
            matches!(clash.unwrap(), RecodeOutcome::CodeTaken),
            "{}",
            w.name
        );
        let retention = Retention::records_only(Duration::from_secs(3600));
        let purged = w
            .store
            .sweep(w.now + SignedDuration::from_hours(2), retention)
            .await
            .unwrap();
        assert_eq!(purged.purged, 2, "{}: the row and the tombstone", w.name);
        let r = w.deposit(r#"{"max_retrievals":1}"#, b"code-r").await;
        let r2 = w.deposit(r#"{"max_retrievals":1}"#, b"code-r2").await;
        assert_eq!(allowed(&w.retrieve(b"code-r").await).key_id, r);
        assert_eq!(allowed(&w.retrieve(b"code-r2").await).key_id, r2);
    }
);

contract!(
    deposits_at_once_answer_false_for_exactly_the_taken_codes,
    |w| {
        // 90 deposits at once over the replicas (on PostgreSQL they share batched statements,
        // `store::postgres::batch`): three for each of 30 codes, and three more for a code that is
        // already live. Exactly one of each code is written, with its event and audit row; the
        // others answer `false` and leave nothing behind.
        let live = w.deposit(r#"{"max_retrievals":1}"#, b"dup-live").await;
        let codes: Vec<Vec<u8>> = (0..30)
            .map(|i| format!("dup-{i}").into_bytes())
            .chain(std::iter::once(b"dup-live".to_vec()))
            .collect();
        let calls = (0..codes.len() * 3).map(|i| {
            let store = w.replicas[i % w.replicas.len()].clone();
            let mut key = w.new_key(r#"{"max_retrievals":1}"#, &codes[i % codes.len()]);
            let id = key.id.clone();
            key.secret_sealed = Some(vec![u8::try_from(i).unwrap(); 40]);
            let a = audit("app", "key.deposit", w.now, Some(&id));
            tokio::spawn(async move { (key.code_hash.clone(), id, store.deposit(key, a).await) })
        });
        let mut written = std::collections::HashMap::new();
        let mut refused = Vec::new();
        for done in join_all(calls).await {
            let (code, id, ok) = done.unwrap();
            if ok.unwrap() {
                assert!(
                    written.insert(code, id).is_none(),
                    "{}: a code written twice",
                    w.name
                );
            } else {
                refused.push(id);
            }
        }
        assert_eq!((written.len(), refused.len()), (30, 63), "{}", w.name);
        assert!(!written.contains_key(&b"dup-live"[..]), "{}", w.name);
        for (code, id) in &written {
            assert_eq!(w.events(id).await, ["key.deposited"], "{}", w.name);
            assert_eq!(
                w.audited(id, "key.deposit").await,
                ["success"],
                "{}",
                w.name
            );
            let got = w.retrieve(code).await;
            assert_eq!(allowed(&got).key_id, *id, "{}", w.name);
        }
        for id in &refused {
            let holder = format!("holder-{id}").into_bytes();
            let rec = w.store.key_by_holder(Some(id), &holder).await.unwrap();
            assert!(rec.is_none(), "{}: a refused deposit left its key", w.name);
            assert!(w.events(id).await.is_empty(), "{}", w.name);
            assert!(w.audited(id, "key.deposit").await.is_empty(), "{}", w.name);
        }
        assert_eq!(
            allowed(&w.retrieve(b"dup-live").await).key_id,
            live,
            "{}",
            w.name
        );
    }
);

contract!(a_confined_service_does_not_see_another_tenants_keys, |w| {
    let key = w.deposit(r#"{"max_retrievals":1}"#, b"code-13").await;
    let mut confined = w.svc.clone();
    confined.confined_tenant_id = Some("ten_other".into());
    let out = w
        .store
        .retrieve(w.cmd(b"code-13", &confined))
        .await
        .unwrap();
    assert!(
        matches!(out, RetrieveOutcome::NotFound),
        "{}: {out:?}",
        w.name
    );
    assert_eq!(w.events(&key).await, ["key.deposited"], "{}", w.name);
    assert_eq!(w.state(&key).await, KeyState::Active, "{}", w.name);
});

// Races: what must hold however many retrievals of one code, or failures of one service, run
// at once (on PostgreSQL spread over two stores with pools of their own, as two replicas).

contract!(a_single_use_code_raced_by_many_is_handed_out_once, |w| {
    let key = w.deposit(r#"{"max_retrievals":1}"#, b"race-1").await;
    let raced = w.race((0..32).map(|_| w.cmd(b"race-1", &w.svc)).collect());
    assert_eq!(raced.await.counts(), (1, 31, 0, 0, 0), "{}", w.name);
    assert_eq!(w.state(&key).await, KeyState::Retrieved, "{}", w.name);
    let events = w.events(&key).await;
    let of = |ty: &str| events.iter().filter(|e| *e == ty).count();
    assert_eq!(
        (of("key.retrieved"), of("code.stale_used")),
        (1, 31),
        "{}: {events:?}",
        w.name
    );
    let audited = w.audited(&key, "key.retrieve").await;
    let successes = audited.iter().filter(|o| *o == "success").count();
    assert_eq!(successes, 1, "{}: {audited:?}", w.name);
});

contract!(max_retrievals_is_exact_when_raced, |w| {
    let key = w.deposit(r#"{"max_retrievals":5}"#, b"race-2").await;
    let raced = w.race((0..40).map(|_| w.cmd(b"race-2", &w.svc)).collect());
    assert_eq!(raced.await.counts(), (5, 35, 0, 0, 0), "{}", w.name);
    let rec = w.record(&key).await;
    assert_eq!(
        (rec.state, rec.retrievals),
        (KeyState::Retrieved, 5),
        "{}",
        w.name
    );
});

contract!(a_key_that_many_retrieve_at_once_counts_each_of_them, |w| {
    // Every retrieval but the first of a round finds the row changed and plans again: none is
    // lost, none counted twice, none refused.
    let key = w.deposit(r#"{"max_retrievals":1000}"#, b"race-3").await;
    let raced = w.race((0..48).map(|_| w.cmd(b"race-3", &w.svc)).collect());
    assert_eq!(raced.await.counts(), (48, 0, 0, 0, 0), "{}", w.name);
    let rec = w.record(&key).await;
    assert_eq!(
        (rec.state, rec.retrievals),
        (KeyState::Active, 48),
        "{}",
        w.name
    );
    let events = w.events(&key).await;
    assert_eq!(events.len(), 49, "{}: {events:?}", w.name);
});

contract!(concurrent_failures_never_exceed_the_failure_budget, |w| {
    // C failing attempts at once against a budget of 7: exactly 7 are counted (each a 404),
    // the others are refused (429), for C just over the budget and far over it. The budget is
    // exact, not merely bounded: docs/scaling.md, "The failure budget without a lock".
    for (svc, c) in [(&w.svc, 8), (&w.other, 40)] {
        let mut cmd = w.cmd(b"no-such-code", svc);
        cmd.budget_per_minute = 7;
        let raced = w.race(vec![cmd; c]).await;
        assert_eq!(raced.counts(), (0, 7, c - 7, 0, 0), "{}: C = {c}", w.name);
    }
});

contract!(
    refusals_and_failed_retrievals_share_the_budget_exactly,
    |w| {
        let mut cmd = w.cmd(b"no-such-code", &w.svc);
        cmd.budget_per_minute = 7;
        let calls = (0..40).map(|i| {
            let store = w.replicas[i % w.replicas.len()].clone();
            let (cmd, svc) = (cmd.clone(), w.svc.clone());
            let a = audit("svc", "key.retrieve", w.now, None);
            tokio::spawn(async move {
                if i % 2 == 0 {
                    let refused = store.refuse_retrieval(&svc, 7, a).await.unwrap();
                    usize::from(refused.is_none())
                } else {
                    let out = store.retrieve(cmd).await.unwrap();
                    usize::from(matches!(out, RetrieveOutcome::NotFound))
                }
            })
        });
        let counted: usize = join_all(calls).await.into_iter().map(Result::unwrap).sum();
        assert_eq!(counted, 7, "{}", w.name);
    }
);

contract!(password_checks_at_once_never_exceed_the_budget, |w| {
    let code = b"race-4";
    w.deposit(r#"{"max_retrievals":1000,"has_password":true}"#, code)
        .await;
    let mut cmd = w.cmd(code, &w.svc);
    cmd.password = PasswordCheck::Unverified;
    cmd.budget_per_minute = 5;
    let raced = w.race(vec![cmd.clone(); 30]).await;
    assert_eq!(raced.counts(), (0, 0, 25, 5, 0), "{}", w.name);
    // A right password gives its slot back, in the write that hands the key out: one check
    // more fits, and then the budget is spent again.
    let mut right = cmd.clone();
    (right.password, right.budget_slot) = (PasswordCheck::Correct, Some(raced.verify_password[0]));
    allowed(&w.store.retrieve(right).await.unwrap());
    let again = w.store.retrieve(cmd.clone()).await.unwrap();
    assert!(
        matches!(again, RetrieveOutcome::VerifyPassword { .. }),
        "{}: {again:?}",
        w.name
    );
    let spent = w.store.retrieve(cmd).await.unwrap();
    assert!(
        matches!(spent, RetrieveOutcome::RateLimited(_)),
        "{}: {spent:?}",
        w.name
    );
});

contract!(
    the_budget_is_exact_in_each_window_and_across_a_roll_over,
    |w| {
        let mut cmd = w.cmd(b"no-such-code", &w.svc);
        cmd.budget_per_minute = 3;
        let mut one = Tally::default();
        for _ in 0..4 {
            one.add(&w.store.retrieve(cmd.clone()).await.unwrap());
        }
        assert_eq!(one.counts(), (0, 3, 1, 0, 0), "{}: sequential", w.name);
        // The window started at the first failure and lasts a minute.
        cmd.now = w.now + SignedDuration::from_millis(59_999);
        let late = w.store.retrieve(cmd.clone()).await.unwrap();
        assert!(
            matches!(late, RetrieveOutcome::RateLimited(1)),
            "{}: {late:?}",
            w.name
        );
        // A minute on, a new window: attempts at once that arrive as it rolls over are counted
        // exactly into it.
        cmd.now = w.now + SignedDuration::from_secs(60);
        let raced = w.race(vec![cmd.clone(); 12]).await;
        assert_eq!(raced.counts(), (0, 3, 9, 0, 0), "{}: roll-over", w.name);
    }
);
