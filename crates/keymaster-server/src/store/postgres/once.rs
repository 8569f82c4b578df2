//! PostgreSQL: the statements of the one-round-trip hot paths (a deposit, a retrieval's read
//! and its conditional write, a refusal) and how they run: in autocommit, through
//! `connect::run`, whose rule decides when a statement is sent again — a read always (it
//! changed nothing); a write only when it certainly did not apply (no connection was had, or
//! the server answered with an `ERROR` that may pass: a conflict `40001`/`40P01`, a read-only
//! standby `25006`); a write whose answer was lost (the connection broke, a `FATAL`) may have
//! committed and is answered `StoreError::Unavailable` (503), never sent again.
//!
//! A statement owns its arguments, ids and times included, so that sending it again sends the
//! same thing.

use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::postgres::PgPool;
use sqlx::PgConnection;

use super::connect::{run, Primary};
use crate::store::StoreError;

/// One statement with its arguments.
pub trait Statement: Send + Sync + 'static {
    type Out: Send;
    fn run<'c>(&'c self, c: &'c mut PgConnection) -> BoxFuture<'c, Result<Self::Out, sqlx::Error>>;
}

/// Where the hot paths run: the store's pool and its primary.
pub struct Hot<'s> {
    pub pool: &'s PgPool,
    pub primary: &'s Primary,
}

impl Hot<'_> {
    /// Runs a statement that writes (`connect::run::autocommit`).
    pub async fn write<S: Statement>(&self, s: Arc<S>) -> Result<S::Out, StoreError> {
        run::autocommit(self.pool, self.primary, move |c| {
            Box::pin(async move { s.run(c).await })
        })
        .await
    }

    /// Runs a statement that only reads (`connect::run::read`).
    pub async fn read<S: Statement>(&self, s: Arc<S>) -> Result<S::Out, StoreError> {
        run::read(self.pool, self.primary, move |c| {
            Box::pin(async move { s.run(c).await.map_err(super::db) })
        })
        .await
    }
}
