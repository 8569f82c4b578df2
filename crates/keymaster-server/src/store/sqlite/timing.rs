//! Where a write's time goes between its caller's send and its caller's wake-up, in `/metrics`:
//! counters of nanoseconds summed over jobs, so that the difference of two scrapes divided by
//! the jobs in between is the mean per job of each stage in that interval (a benchmark phase).
//!
//! `keymaster_sqlite_job_stage_nanoseconds_total{stage}`, summed over the jobs of committed
//! batches (`keymaster_sqlite_jobs_total` of them):
//! - `queue`: from the caller's send to the job's first run (the writer was busy, or waiting);
//! - `batch`: from its run to the end of its batch's `COMMIT` (the jobs after it, the commit);
//! - `sync_wait`: from that commit to the start of the `fdatasync` that covers it;
//! - `sync`: that `fdatasync`;
//! - `answer`: from the end of the sync to its caller's answer being sent.
//!
//! `keymaster_sqlite_write_nanoseconds_total` over `keymaster_sqlite_writes_total` is the whole
//! of it as the caller sees it (send to wake-up); what is left after the stages is the caller's
//! wake-up. `keymaster_sqlite_thread_wait_nanoseconds_total{thread, why}` is the time the writer
//! spent blocked with nothing to run (`idle`) or with a batch that waits for the sync thread
//! (`sync_busy`), and the sync thread with nothing to sync (`idle`).
//!
//! A few clock reads per job and one counter update per batch and per stage: nothing measurable
//! beside a job's SQL (`bench/instructions`).

use std::time::{Duration, Instant};

use super::job::Job;

const STAGE: &str = "keymaster_sqlite_job_stage_nanoseconds_total";

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn stage(name: &'static str, ns: u64) {
    metrics::counter!(STAGE, "stage" => name).increment(ns);
}

/// A batch's `COMMIT` ended at `committed`: the queue and batch stages of its jobs.
pub fn committed(batch: &[Box<dyn Job>], committed: Instant) {
    let (mut queue, mut in_batch) = (0, 0);
    for job in batch {
        let (queued, ran) = job.stamps();
        let ran = ran.unwrap_or(committed);
        queue += nanos(ran.saturating_duration_since(queued));
        in_batch += nanos(committed.saturating_duration_since(ran));
    }
    stage("queue", queue);
    stage("batch", in_batch);
    metrics::counter!("keymaster_sqlite_jobs_total").increment(batch.len() as u64);
}

/// One `fdatasync` from `started` to `ended` covered these batches, each committed at its
/// instant.
pub fn synced(batches: &[(Instant, usize)], started: Instant, ended: Instant) {
    let (mut wait, mut jobs) = (0, 0);
    for (committed, n) in batches {
        wait += nanos(started.saturating_duration_since(*committed)) * *n as u64;
        jobs += *n as u64;
    }
    stage("sync_wait", wait);
    stage("sync", nanos(ended - started) * jobs);
}

/// The answers of one sync's jobs were sent, `ns` after its end in all.
pub fn answered(ns: u64) {
    stage("answer", ns);
}

/// Nanoseconds since `since`, for [`answered`].
pub fn since(since: Instant) -> u64 {
    nanos(since.elapsed())
}

/// `thread` was blocked for `took` (`why`: see the module's text).
pub fn waited(thread: &'static str, why: &'static str, took: Duration) {
    metrics::counter!("keymaster_sqlite_thread_wait_nanoseconds_total", "thread" => thread, "why" => why)
        .increment(nanos(took));
}

/// A caller's write took `took` from its send to its wake-up with the answer.
pub fn written(took: Duration) {
    metrics::counter!("keymaster_sqlite_write_nanoseconds_total").increment(nanos(took));
    metrics::counter!("keymaster_sqlite_writes_total").increment(1);
}
