//! PostgreSQL: group commit in the application — the jobs of concurrent requests that wait at
//! the same moment run as ONE autocommit statement over arrays, so that N of them cost one
//! round trip, one executor start-up and one commit (one WAL flush) instead of N.
//!
//! Jobs go into a queue. A few runners (at most [`DEPOSIT_RUNNERS`] for deposits) each take
//! the first waiting job and whatever else is already queued (at most [`MAX_JOBS`]), with no
//! timer: at low load a batch is one job and waits for nothing, and under load the jobs that
//! queued while the previous batches ran go together. What pgbench measured on this machine for one to 32 rows
//! a statement is in `docs/scaling.md` ("Group commit").
//!
//! A batch runs through `connect::run::autocommit`, the rule of every one-statement write: sent
//! again only when it certainly did not apply (no connection, or an `ERROR` that may pass); a
//! lost answer is `Unavailable` for every job of the batch, never sent again. Each job owns
//! its ids and times ([`Batch::Job`]), so a statement sent again sends the same thing. A batch
//! refused with any other `ERROR` (a bug, or one job's bad value: nothing was applied) runs
//! again one job a statement, so that one job cannot fail the others. A statement that only
//! reads ([`Batch::only_reads`]: retrievals' reads, `reads`) runs through `connect::run::read`
//! instead: sent again after any failure that may pass, a lost answer included.

use std::ops::Range;
use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::postgres::PgPool;
use sqlx::PgConnection;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::connect::{run, Failure, Primary};
use crate::store::StoreError;

/// Most runners of deposits, each running one batch at a time on one pooled connection. With
/// the CPU saturated, fewer runners make larger batches, and a batch's fixed cost (the
/// executor's start-up of the statement, its round trip and its commit) is shared by more jobs:
/// 4 against 8 took about a seventh less of the machine's CPU per deposit and made about a
/// tenth more deposits a second (`docs/scaling.md`, "Fewer runners, larger batches").
pub const DEPOSIT_RUNNERS: usize = 4;

/// Most runners of retrievals' guarded writes (`guarded`): 2, measured against 4 as above
/// (about a seventh less of the machine's CPU per retrieval, a tenth more retrievals a second).
pub const RETRIEVAL_RUNNERS: usize = 2;

/// Most runners of retrievals' reads (`reads`): two, measured against 1, 3, 4 and 6
/// (`docs/scaling.md`, "Retrievals in batches" and "Fewer runners, larger batches"). With the
/// deposits' 4 and the writes' 2 that is at most 8 of the pool's 16 connections, so the
/// transactions, the outbox, the sweeper and the commit listener always find theirs.
pub const READ_RUNNERS: usize = 2;

/// Most jobs in one statement.
pub const MAX_JOBS: usize = 64;

/// One statement over many jobs.
pub trait Batch: Send + Sync + 'static {
    /// One job: everything its statement binds, ids and times fixed.
    type Job: Send + Sync + 'static;
    /// A job's answer.
    type Out: Send + 'static;

    /// Runs ONE statement for `jobs` (at least one) and answers them in their order.
    fn run<'c>(
        &'c self,
        jobs: &'c [Self::Job],
        c: &'c mut PgConnection,
    ) -> BoxFuture<'c, Result<Vec<Self::Out>, sqlx::Error>>;

    /// Whether two jobs may not share a statement (the later waits for the next one), for
    /// statements that tell jobs apart by a value that is unique only by chance.
    fn clash(&self, _a: &Self::Job, _b: &Self::Job) -> bool {
        false
    }

    /// Whether the statement only reads: then a batch is sent again after any failure that
    /// may pass, a lost answer included (`connect::run::read`), as nothing of it applied.
    fn only_reads(&self) -> bool {
        false
    }
}

/// A queued job and where its answer goes.
struct Queued<B: Batch> {
    job: B::Job,
    answer: oneshot::Sender<Result<B::Out, StoreError>>,
}

/// The queue of one kind of batch and its runners. The runners end when the batcher is
/// dropped (and the queue is empty).
pub struct Batcher<B: Batch> {
    queue: mpsc::UnboundedSender<Queued<B>>,
}

/// What the runners share.
struct Runner<B: Batch> {
    batch: B,
    pool: PgPool,
    primary: Arc<Primary>,
    queue: Mutex<mpsc::UnboundedReceiver<Queued<B>>>,
}

impl<B: Batch> Batcher<B> {
    /// Starts `runners` runners (at least one) of `batch` on the pool.
    pub fn start(batch: B, pool: PgPool, primary: Arc<Primary>, runners: usize) -> Batcher<B> {
        let (tx, rx) = mpsc::unbounded_channel();
        let runner = Arc::new(Runner {
            batch,
            pool,
            primary,
            queue: Mutex::new(rx),
        });
        for _ in 0..runners.max(1) {
            tokio::spawn(runner.clone().serve());
        }
        Batcher { queue: tx }
    }

    /// Runs `job` in the next batch and answers for it.
    pub async fn run(&self, job: B::Job) -> Result<B::Out, StoreError> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Queued { job, answer })
            .map_err(|_| StoreError::Unavailable("the store is closing".into()))?;
        answered.await.unwrap_or_else(|_| {
            // The runner ended while the job was in its hands (it cannot, short of a panic):
            // whether its statement applied is unknown.
            Err(StoreError::Unavailable(
                "the batch's outcome is unknown".into(),
            ))
        })
    }
}

impl<B: Batch> Runner<B> {
    async fn serve(self: Arc<Self>) {
        // Jobs that clashed with a batch, first in the next one.
        let mut held: Vec<Queued<B>> = Vec::new();
        while let Some(jobs) = self.next_batch(&mut held).await {
            self.run(jobs).await;
        }
    }

    /// The held jobs and the first queued one (waiting for it when there is none), then
    /// whatever else is queued, up to [`MAX_JOBS`]; jobs whose caller went away are dropped.
    /// `None` when the queue is closed and empty.
    ///
    /// With held jobs the runner does not wait for the queue: another runner may be waiting
    /// in it for a job that will only come once the held jobs are answered (their callers
    /// all retrieving one key).
    async fn next_batch(&self, held: &mut Vec<Queued<B>>) -> Option<Vec<Queued<B>>> {
        let mut jobs: Vec<Queued<B>> = Vec::new();
        for q in std::mem::take(held) {
            self.add(&mut jobs, held, q);
        }
        let mut queue = if jobs.is_empty() {
            self.queue.lock().await
        } else {
            match self.queue.try_lock() {
                Ok(queue) => queue,
                Err(_) => return Some(jobs),
            }
        };
        while jobs.is_empty() {
            let q = queue.recv().await?;
            self.add(&mut jobs, held, q);
        }
        while jobs.len() < MAX_JOBS {
            match queue.try_recv() {
                Ok(q) => self.add(&mut jobs, held, q),
                Err(_) => break,
            }
        }
        Some(jobs)
    }

    /// Adds `q` to the batch `jobs`, or to `held` when it clashes with one of them; drops it
    /// when its caller went away.
    fn add(&self, jobs: &mut Vec<Queued<B>>, held: &mut Vec<Queued<B>>, q: Queued<B>) {
        if q.answer.is_closed() {
            return;
        }
        if jobs.iter().any(|j| self.batch.clash(&j.job, &q.job)) {
            held.push(q);
        } else {
            jobs.push(q);
        }
    }

    /// Runs one batch and answers its jobs.
    async fn run(self: &Arc<Self>, queued: Vec<Queued<B>>) {
        let (jobs, answers): (Vec<B::Job>, Vec<_>) =
            queued.into_iter().map(|q| (q.job, q.answer)).unzip();
        let (jobs, n) = (Arc::new(jobs), answers.len());
        match self.statement(&jobs, 0..n, n > 1).await {
            Ok(Ok(outs)) if outs.len() == n => {
                for (answer, out) in answers.into_iter().zip(outs) {
                    let _ = answer.send(Ok(out));
                }
            }
            Ok(Ok(outs)) => {
                let e = format!("a batch of {n} jobs answered {}", outs.len());
                for answer in answers {
                    let _ = answer.send(Err(StoreError::Db(e.clone())));
                }
            }
            Ok(Err(refused)) => {
                tracing::warn!(jobs = n, error = %refused,
                    "database: a batch was refused; its jobs run one by one");
                for (i, answer) in answers.into_iter().enumerate() {
                    let _ = answer.send(self.alone(&jobs, i).await);
                }
            }
            Err(e) => {
                for answer in answers {
                    let _ = answer.send(Err(same(&e)));
                }
            }
        }
    }

    /// Job `i` of `jobs` in a statement of its own.
    async fn alone(
        self: &Arc<Self>,
        jobs: &Arc<Vec<B::Job>>,
        i: usize,
    ) -> Result<B::Out, StoreError> {
        let outs = self.statement(jobs, i..i + 1, false).await?;
        let outs = outs.map_err(super::db)?;
        outs.into_iter()
            .next()
            .ok_or_else(|| StoreError::Db("a batch of one job answered none".into()))
    }

    /// Runs the statement of `jobs[range]` (`connect::run::autocommit`, or `::read` for a
    /// statement that only reads); with `split`, an `ERROR` that will not pass (nothing
    /// applied) comes back as `Ok(Err)`, for the jobs to run one by one.
    async fn statement(
        self: &Arc<Self>,
        jobs: &Arc<Vec<B::Job>>,
        range: Range<usize>,
        split: bool,
    ) -> Result<Result<Vec<B::Out>, sqlx::Error>, StoreError> {
        let (runner, jobs) = (self.clone(), jobs.clone());
        if self.batch.only_reads() {
            return run::read(&self.pool, &self.primary, move |c| {
                Box::pin(async move {
                    match runner.batch.run(&jobs[range], c).await {
                        Ok(outs) => Ok(Ok(outs)),
                        Err(e) if split && Failure::classify(&e) == Failure::Refused => Ok(Err(e)),
                        Err(e) => Err(super::db(e)),
                    }
                })
            })
            .await;
        }
        run::autocommit(&self.pool, &self.primary, move |c| {
            Box::pin(async move {
                match runner.batch.run(&jobs[range], c).await {
                    Ok(outs) => Ok(Ok(outs)),
                    Err(e) if split && Failure::classify(&e) == Failure::Refused => Ok(Err(e)),
                    Err(e) => Err(e),
                }
            })
        })
        .await
    }
}

/// The same error again, for each job of a batch.
fn same(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Db(m) => StoreError::Db(m.clone()),
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
    }
}

/// Against a real server, when `KEYMASTER_TEST_DATABASE_URL` names one (a maintenance URL, as
/// for the store contract); without it there is nothing to run them on and they pass.
#[cfg(test)]
mod tests {
    use std::sync::Mutex as Plain;

    use futures::future::join_all;
    use tokio::sync::Notify;

    use super::*;
    use crate::store::postgres::connect;

    /// A job of [`Probe`]: what its statement does.
    enum Job {
        /// Holds its batch until told (the runner is busy meanwhile).
        Gate(Arc<Notify>, Arc<Notify>),
        Value(u32),
        /// Its batch fails with a serialization failure (40001) the first time.
        ConflictOnce,
        /// Its batch's connection is terminated (FATAL 57P01): the answer is lost.
        Lose,
        /// Its batch fails with an error that does not pass (22012).
        Bad,
    }

    impl Job {
        fn label(&self) -> String {
            match self {
                Job::Gate(..) => "gate".into(),
                Job::Value(v) => v.to_string(),
                Job::ConflictOnce => "conflict".into(),
                Job::Lose => "lose".into(),
                Job::Bad => "bad".into(),
            }
        }
    }

    /// A batch that records every statement it sends (the labels of its jobs).
    #[derive(Default)]
    struct Probe {
        sent: Arc<Plain<Vec<Vec<String>>>>,
    }

    impl Batch for Probe {
        type Job = Job;
        type Out = u32;

        fn run<'c>(
            &'c self,
            jobs: &'c [Job],
            c: &'c mut PgConnection,
        ) -> BoxFuture<'c, Result<Vec<u32>, sqlx::Error>> {
            Box::pin(async move {
                let first = {
                    let mut sent = self.sent.lock().unwrap();
                    sent.push(jobs.iter().map(Job::label).collect());
                    !sent
                        .iter()
                        .rev()
                        .skip(1)
                        .any(|s| s.iter().any(|l| l == "conflict"))
                };
                let sql = if jobs.iter().any(|j| matches!(j, Job::Bad)) {
                    "SELECT 1 / 0"
                } else if jobs.iter().any(|j| matches!(j, Job::Lose)) {
                    "SELECT pg_terminate_backend(pg_backend_pid())"
                } else if first && jobs.iter().any(|j| matches!(j, Job::ConflictOnce)) {
                    "DO $$ BEGIN RAISE EXCEPTION 'test' USING ERRCODE = '40001'; END $$"
                } else {
                    "SELECT 1"
                };
                sqlx::query(sql).execute(c).await?;
                let mut outs = Vec::new();
                for j in jobs {
                    outs.push(match j {
                        Job::Gate(entered, go) => {
                            entered.notify_one();
                            go.notified().await;
                            0
                        }
                        Job::Value(v) => *v,
                        _ => 1,
                    });
                }
                Ok(outs)
            })
        }

        /// Equal values never share a statement.
        fn clash(&self, a: &Job, b: &Job) -> bool {
            matches!((a, b), (Job::Value(x), Job::Value(y)) if x == y)
        }
    }

    /// A batcher of [`Probe`] with one runner, on the test server; `None` without one.
    async fn probe() -> Option<(Arc<Batcher<Probe>>, Arc<Plain<Vec<Vec<String>>>>)> {
        probe_with(1).await
    }

    async fn probe_with(
        runners: usize,
    ) -> Option<(Arc<Batcher<Probe>>, Arc<Plain<Vec<Vec<String>>>>)> {
        let url = std::env::var("KEYMASTER_TEST_DATABASE_URL").ok()?;
        let targets = connect::parse(&url).unwrap();
        let options = sqlx::postgres::PgPoolOptions::new().max_connections(2);
        let (pool, primary) = connect::open(targets, options, 2).await.unwrap();
        let probe = Probe::default();
        let sent = probe.sent.clone();
        let batcher = Batcher::start(probe, pool, Arc::new(primary), runners);
        Some((Arc::new(batcher), sent))
    }

    /// Runs `jobs` as one batch: the runner is held by a gate while they queue.
    async fn one_batch(b: &Arc<Batcher<Probe>>, jobs: Vec<Job>) -> Vec<Result<u32, StoreError>> {
        let (entered, go) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let gate = {
            let (b, job) = (b.clone(), Job::Gate(entered.clone(), go.clone()));
            tokio::spawn(async move { b.run(job).await })
        };
        entered.notified().await;
        let mut calls: Vec<_> = jobs.into_iter().map(|j| Box::pin(b.run(j))).collect();
        for call in &mut calls {
            // Polled once: queued.
            assert!(futures::poll!(call.as_mut()).is_pending());
        }
        go.notify_one();
        assert_eq!(gate.await.unwrap().unwrap(), 0);
        join_all(calls).await
    }

    fn sent(log: &Plain<Vec<Vec<String>>>) -> Vec<Vec<String>> {
        std::mem::take(&mut *log.lock().unwrap())
    }

    fn labels(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn the_jobs_that_queued_meanwhile_go_in_one_statement() {
        let Some((b, log)) = probe().await else {
            return;
        };
        let got = one_batch(&b, (1..=5).map(Job::Value).collect()).await;
        let got: Vec<u32> = got.into_iter().map(Result::unwrap).collect();
        assert_eq!(got, [1, 2, 3, 4, 5]);
        assert_eq!(
            sent(&log),
            [labels(&["gate"]), labels(&["1", "2", "3", "4", "5"])]
        );
        // Alone, a job waits for nothing: a batch of one.
        assert_eq!(b.run(Job::Value(6)).await.unwrap(), 6);
        assert_eq!(sent(&log), [labels(&["6"])]);
    }

    #[tokio::test]
    async fn a_conflict_is_sent_again_for_the_whole_batch() {
        let Some((b, log)) = probe().await else {
            return;
        };
        let got = one_batch(&b, vec![Job::Value(1), Job::ConflictOnce, Job::Value(2)]).await;
        let got: Vec<u32> = got.into_iter().map(Result::unwrap).collect();
        assert_eq!(got, [1, 1, 2]);
        let batch = labels(&["1", "conflict", "2"]);
        assert_eq!(sent(&log), [labels(&["gate"]), batch.clone(), batch]);
    }

    #[tokio::test]
    async fn a_lost_answer_is_unavailable_for_every_job_and_never_sent_again() {
        let Some((b, log)) = probe().await else {
            return;
        };
        let got = one_batch(&b, vec![Job::Value(1), Job::Lose, Job::Value(2)]).await;
        for answer in got {
            assert!(
                matches!(answer, Err(StoreError::Unavailable(_))),
                "{answer:?}"
            );
        }
        assert_eq!(sent(&log), [labels(&["gate"]), labels(&["1", "lose", "2"])]);
        // The next batch runs on another connection.
        let got = one_batch(&b, vec![Job::Value(3), Job::Value(4)]).await;
        let got: Vec<u32> = got.into_iter().map(Result::unwrap).collect();
        assert_eq!(got, [3, 4]);
        assert_eq!(sent(&log), [labels(&["gate"]), labels(&["3", "4"])]);
    }

    #[tokio::test]
    async fn a_refused_batch_runs_its_jobs_one_by_one() {
        let Some((b, log)) = probe().await else {
            return;
        };
        let got = one_batch(&b, vec![Job::Value(1), Job::Bad, Job::Value(2)]).await;
        assert_eq!(got[0].as_ref().unwrap(), &1);
        assert!(matches!(got[1], Err(StoreError::Db(_))), "{:?}", got[1]);
        assert_eq!(got[2].as_ref().unwrap(), &2);
        let alone = |l: &str| labels(&[l]);
        assert_eq!(
            sent(&log),
            [
                alone("gate"),
                labels(&["1", "bad", "2"]),
                alone("1"),
                alone("bad"),
                alone("2")
            ]
        );
    }

    #[tokio::test]
    async fn clashing_jobs_go_in_statements_of_their_own_without_waiting_for_more() {
        let Some((b, log)) = probe_with(2).await else {
            return;
        };
        // The runner that holds the second job must not wait for the queue, where the other
        // runner waits for a job that nobody sends.
        let calls = join_all([b.run(Job::Value(7)), b.run(Job::Value(7))]);
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), calls).await;
        let got: Vec<u32> = got.unwrap().into_iter().map(Result::unwrap).collect();
        assert_eq!(got, [7, 7]);
        assert_eq!(sent(&log), [labels(&["7"]), labels(&["7"])]);
    }
}
