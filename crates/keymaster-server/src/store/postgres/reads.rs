//! PostgreSQL: a retrieval's read, and the reads of retrievals that wait at the same moment as
//! ONE statement over arrays (`batch`), so that N of them cost one round trip, one executor
//! start-up and one pass of the protocol loop instead of N (`docs/scaling.md`, "Retrievals in
//! batches").
//!
//! Each job's row holds the key with the job's code hash (of the service's tenant if it is
//! confined; live, or ended: an ended row keeps its code and is its tombstone), the service's
//! failure-budget row, and, when no key row has the code, the key whose tombstone in
//! `tombstones` holds it (a replaced code, or that of a key that ended before migration 9);
//! `retrieve` plans from it. The jobs are read side by side from one
//! snapshot (the statement's); a retrieval's write is guarded by the values it read either way.
//! The locked round of `retrieve` reads with the same statement, a batch of one inside its
//! transaction ([`Reads::one`]), so there is one definition of the read.
//!
//! A read changes nothing, so a batch is sent again after any failure that may pass, a lost
//! answer included (`connect::run::read`, [`Batch::only_reads`]); no two reads clash.
//!
//! Every table is reached by an index in the generic plan that PostgreSQL keeps after five
//! runs on a connection (`docs/scaling.md`, "Plans made once per connection"): each part is a
//! `LATERAL` sub-select by the job's values (a parameterised index scan per job), and the jobs
//! are read through `LIMIT $4`, which cuts nothing but makes the generic plan expect one job,
//! so that a nested loop over the indexes is the cheapest plan even while the tables are
//! empty. Tested below on empty tables.

use std::sync::LazyLock;

use futures::future::BoxFuture;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::batch::Batch;
use super::retrieve::ReadRow;
use crate::store::lifecycle::KEY_COLUMNS;

/// The reads of many retrievals, one element per job: code hashes `$1`, confined tenants `$2`
/// (null where the service is not confined), budget subjects `$3`; `$4` is the number of jobs.
/// One row per job, its ordinal `n` last (the statement does not sort; [`Reads::run`] puts
/// the rows in job order). The tombstone's key is reached by `dk.id = (SELECT …)`, an index
/// scan of the primary key: as a join of `tombstones` with `keys`, the generic plan made on
/// empty tables scanned all of `keys`.
///
/// `OFFSET 0` keeps the tombstone's key a sub-query of its own, run per job: pulled up into
/// the join, its `dk.id = (SELECT … j.code_hash)` depends on the job, and the generic plan
/// made on empty tables joined it by hashing a sequential scan of all of `keys`. Kept apart,
/// the sub-select depends only on values from outside and is a parameter of a primary-key
/// index scan, as in the single read.
static READS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT k.*, b.window_start, b.failures, d.id, d.tenant_id, d.label, j.n
         FROM (
           SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[])
             WITH ORDINALITY AS j(code_hash, tenant, subject, n)
           LIMIT $4
         ) AS j
         LEFT JOIN LATERAL (
           SELECT {KEY_COLUMNS}, code_hash FROM keys
           WHERE code_hash = j.code_hash AND (j.tenant IS NULL OR tenant_id = j.tenant)
         ) k ON true
         LEFT JOIN LATERAL (
           SELECT window_start, failures FROM failure_budget WHERE subject = j.subject
         ) b ON true
         LEFT JOIN LATERAL (
           SELECT dk.id, dk.tenant_id, dk.label FROM keys dk
           WHERE k.id IS NULL
             AND dk.id = (SELECT t.key_id FROM tombstones t WHERE t.code_hash = j.code_hash)
             AND (j.tenant IS NULL OR dk.tenant_id = j.tenant)
           OFFSET 0
         ) d ON true"
    )
});

/// Where [`READS_SQL`]'s ordinal is: after the single read's columns.
const ORDINAL: usize = 31;

/// The statement of [`READS_SQL`] over many retrievals' reads, each answered its row.
pub struct Reads;

impl Reads {
    /// Runs the one statement for `jobs` and answers their rows in job order.
    pub async fn run(jobs: &[ReadRow], c: &mut PgConnection) -> Result<Vec<PgRow>, sqlx::Error> {
        let rows = sqlx::query(&READS_SQL)
            .bind(jobs.iter().map(|r| &r.cmd.code_hash).collect::<Vec<_>>())
            .bind(
                jobs.iter()
                    .map(|r| r.cmd.service.confined_tenant_id.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(jobs.iter().map(|r| &*r.subject).collect::<Vec<_>>())
            .bind(i64::try_from(jobs.len()).unwrap_or(i64::MAX))
            .fetch_all(c)
            .await?;
        let mut slots: Vec<Option<PgRow>> = (0..jobs.len()).map(|_| None).collect();
        for row in rows {
            let n: i64 = row.try_get(ORDINAL)?;
            let slot = usize::try_from(n - 1)
                .ok()
                .and_then(|i| slots.get_mut(i))
                .filter(|s| s.is_none())
                .ok_or_else(|| decode(format!("a batch read answered job {n}")))?;
            *slot = Some(row);
        }
        slots
            .into_iter()
            .map(|s| s.ok_or_else(|| decode("a batch read left a job out".into())))
            .collect()
    }

    /// One read alone (the locked round of `retrieve`, inside its transaction).
    pub async fn one(job: &ReadRow, c: &mut PgConnection) -> Result<PgRow, sqlx::Error> {
        let rows = Reads::run(std::slice::from_ref(job), c).await?;
        rows.into_iter()
            .next()
            .ok_or_else(|| decode("a read answered no row".into()))
    }
}

/// An answer that does not fit the jobs: a bug, not retried (`connect::Failure::Other`).
fn decode(m: String) -> sqlx::Error {
    sqlx::Error::Decode(m.into())
}

impl Batch for Reads {
    type Job = ReadRow;
    type Out = PgRow;

    fn run<'c>(
        &'c self,
        jobs: &'c [ReadRow],
        c: &'c mut PgConnection,
    ) -> BoxFuture<'c, Result<Vec<PgRow>, sqlx::Error>> {
        Box::pin(Reads::run(jobs, c))
    }

    fn only_reads(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::future::join_all;
    use jiff::Timestamp;
    use sqlx::{Column, Row, ValueRef};

    use super::*;
    use crate::store::postgres::batch::Batcher;
    use crate::store::postgres::keys::Deposits;
    use crate::store::postgres::test_db::{self, drop_db};
    use crate::store::{PasswordCheck, RetrieveCommand, ServiceAuth};

    /// The read of a retrieval of the code `code` by service `svc` (confined to `tenant`).
    fn job(code: &str, svc: &str, tenant: Option<&str>) -> ReadRow {
        let service = ServiceAuth {
            id: svc.into(),
            name: svc.into(),
            domains: vec![],
            allowed_cidrs: vec![],
            confined_tenant_id: tenant.map(Into::into),
        };
        let cmd = RetrieveCommand {
            code_hash: code.as_bytes().to_vec(),
            previous_code_hashes: Vec::new(),
            service,
            source_ip: "192.0.2.1".parse().unwrap(),
            context: None,
            password: PasswordCheck::NotGiven,
            now: Timestamp::now(),
            budget_per_minute: 10,
            new_retrieval_id: "ret_new".into(),
            budget_slot: None,
            preview: false,
        };
        ReadRow {
            subject: format!("service:{svc}").into(),
            cmd: Arc::new(cmd),
        }
    }

    /// Every column of `row` up to the ordinal: its name and its bytes as sent (`None`: null).
    fn columns(row: &PgRow) -> Vec<(String, Option<Vec<u8>>)> {
        (0..ORDINAL)
            .map(|i| {
                let v = row.try_get_raw(i).unwrap();
                let bytes = (!v.is_null()).then(|| v.as_bytes().unwrap().to_vec());
                (row.columns()[i].name().to_owned(), bytes)
            })
            .collect()
    }

    /// Each job of a batch answers exactly the row it gets read alone (the locked round's
    /// read), in job order: a live key, a key of another tenant than the confined service's, an
    /// ended key (its row keeps the dead code), a replaced code's key (in `tombstones`), a code
    /// nobody has, a budget row or none, and one code read twice.
    #[tokio::test]
    async fn a_batch_answers_each_job_the_row_of_the_single_read() {
        let Some((store, url, name)) = test_db::store("km_reads_").await else {
            return;
        };
        let now = Timestamp::from_millisecond(Timestamp::now().as_millisecond()).unwrap();
        let mut c = store.pool.acquire().await.unwrap();
        let d = [
            test_db::deposit("live", now, 3),
            test_db::deposit("gone", now, 3),
            test_db::deposit("new", now, 3),
        ];
        assert_eq!(Deposits::run(&d, &mut c).await.unwrap(), [true, true, true]);
        // `gone` ended: its row keeps the code. `new` replaced the code `old`: a tombstone.
        sqlx::query("UPDATE keys SET state = 'retrieved', ended_at = 1 WHERE id = $1")
            .bind(d[1].key_id())
            .execute(&mut *c)
            .await
            .unwrap();
        sqlx::query("INSERT INTO tombstones (code_hash, key_id, died_at) VALUES ('old', $1, 1)")
            .bind(d[2].key_id())
            .execute(&mut *c)
            .await
            .unwrap();
        sqlx::query("INSERT INTO failure_budget VALUES ('service:svc_spent', 5, 7)")
            .execute(&mut *c)
            .await
            .unwrap();
        let jobs = [
            job("live", "svc_a", None),
            job("none", "svc_spent", None),
            job("gone", "svc_a", None),
            job("live", "svc_spent", Some("ten_other")),
            job("gone", "svc_a", Some("ten_test")),
            job("live", "svc_b", Some("ten_test")),
            job("gone", "svc_a", Some("ten_other")),
            job("live", "svc_a", None),
            job("old", "svc_a", None),
            job("old", "svc_a", Some("ten_other")),
        ];
        let batch = Reads::run(&jobs, &mut c).await.unwrap();
        assert_eq!(batch.len(), jobs.len());
        for (i, (j, got)) in jobs.iter().zip(&batch).enumerate() {
            let alone = Reads::one(j, &mut c).await.unwrap();
            assert_eq!(columns(got), columns(&alone), "job {i}");
            assert_eq!(got.try_get::<i64, _>(ORDINAL).unwrap(), i as i64 + 1);
        }
        // What the rows hold, so that equal rows are not equally empty.
        let key = |r: &PgRow| r.try_get::<Option<String>, _>(0).unwrap();
        let dead = |r: &PgRow| r.try_get::<Option<String>, _>(28).unwrap();
        let failures = |r: &PgRow| r.try_get::<Option<i64>, _>(27).unwrap();
        let (live, gone) = (d[0].key_id().to_owned(), d[1].key_id().to_owned());
        let new = d[2].key_id().to_owned();
        let found: Vec<_> = batch
            .iter()
            .map(|r| (key(r), dead(r), failures(r)))
            .collect();
        assert_eq!(
            found,
            [
                (Some(live.clone()), None, None),
                (None, None, Some(7)),
                (Some(gone.clone()), None, None),
                (None, None, Some(7)),
                (Some(gone), None, None),
                (Some(live.clone()), None, None),
                (None, None, None),
                (Some(live), None, None),
                (None, Some(new), None),
                (None, None, None),
            ]
        );
        drop(c);
        drop_db(store, &url, &name).await;
    }

    /// Through the batcher, reads queued at once come back each with its own row.
    #[tokio::test]
    async fn reads_queued_at_once_each_get_their_row() {
        let Some((store, url, name)) = test_db::store("km_reads_").await else {
            return;
        };
        let now = Timestamp::from_millisecond(Timestamp::now().as_millisecond()).unwrap();
        let codes: Vec<String> = (0..40).map(|i| format!("code{i}")).collect();
        let d: Vec<_> = codes.iter().map(|c| test_db::deposit(c, now, 3)).collect();
        let mut c = store.pool.acquire().await.unwrap();
        assert!(Deposits::run(&d, &mut c).await.unwrap().iter().all(|w| *w));
        drop(c);
        let batcher = Batcher::start(Reads, store.pool.clone(), store.primary.clone(), 2);
        let rows = join_all(
            codes
                .iter()
                .map(|code| batcher.run(job(code, "svc_a", None))),
        )
        .await;
        for (row, deposit) in rows.into_iter().zip(&d) {
            let id: Option<String> = row.unwrap().try_get(0).unwrap();
            assert_eq!(id.as_deref(), Some(deposit.key_id()));
        }
        drop(batcher);
        drop_db(store, &url, &name).await;
    }

    /// The plan PostgreSQL keeps after five runs, made while every table is empty: each table
    /// is reached by an index (`docs/scaling.md`, "Plans made once per connection").
    #[tokio::test]
    async fn the_generic_plan_on_empty_tables_scans_no_table() {
        let Some((store, url, name)) = test_db::store("km_reads_").await else {
            return;
        };
        let plan = test_db::generic_plan(&store, &READS_SQL, 4).await;
        assert!(!plan.contains("Seq Scan"), "{plan}");
        assert!(!plan.contains("Hash Join"), "{plan}");
        assert!(!plan.contains("Bitmap Heap Scan"), "{plan}");
        assert!(plan.contains("Index Scan using keys_pkey"), "{plan}");
        assert!(
            plan.contains("Index Scan using failure_budget_pkey"),
            "{plan}"
        );
        assert!(plan.contains("Index Scan using tombstones_pkey"), "{plan}");
        assert!(plan.contains("Index Scan using keys_code"), "{plan}");
        drop_db(store, &url, &name).await;
    }
}
