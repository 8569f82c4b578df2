//! What a failed statement says about the database, and about whether it did anything: the one
//! classification of sqlx errors that the store's answers (`503` or `500`), its retries and its
//! search for the primary all follow.
//!
//! The rule it encodes: PostgreSQL answers a statement it rolled back with an `ERROR`, and
//! after an `ERROR` nothing of the statement (or of its transaction) is committed. A broken
//! connection, or a `FATAL` (the server ending the session), says nothing about what happened
//! to the last thing sent: a backend terminated while its `COMMIT` waits for a synchronous
//! standby has already committed locally, and the client sees only `FATAL 57P01` or a reset.

use sqlx::postgres::{PgDatabaseError, PgSeverity};

/// The kind of a failure, see the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// `ERROR` 40001 (serialization failure) or 40P01 (deadlock): rolled back because of
    /// another transaction; the same work may succeed when tried again.
    Conflict,
    /// `ERROR` 25006 (read-only SQL transaction): rolled back; this host is a standby, or a
    /// primary that was demoted. The work belongs on the primary.
    ReadOnly,
    /// No connection was had: the pool timed out or is closed, or the server refused a new
    /// session (57P03 starting up, 53300 too many connections). Nothing was sent.
    NotConnected,
    /// The connection broke (I/O, TLS, protocol, a `FATAL` or `PANIC` such as 57P01 admin
    /// shutdown, class 08). What was sent on it may or may not have happened.
    Lost,
    /// Any other `ERROR` (a constraint, a bug): rolled back, and trying again would fail the
    /// same way.
    Refused,
    /// Not from the server at all (decoding a row, a type): a bug.
    Other,
}

impl Failure {
    /// Classifies a sqlx error (of a statement, a `BEGIN`/`COMMIT`, or getting a connection).
    pub(crate) fn classify(e: &sqlx::Error) -> Failure {
        match e {
            sqlx::Error::Database(d) => {
                let fatal = d.try_downcast_ref::<PgDatabaseError>().is_some_and(|pg| {
                    matches!(pg.severity(), PgSeverity::Fatal | PgSeverity::Panic)
                });
                match d.code().as_deref() {
                    // Only at the start of a session: nothing of ours was sent yet.
                    Some("57P03" | "53300") => Failure::NotConnected,
                    _ if fatal => Failure::Lost,
                    Some("40001" | "40P01") => Failure::Conflict,
                    Some("25006") => Failure::ReadOnly,
                    Some(c) if c.starts_with("08") || c.starts_with("57P") => Failure::Lost,
                    _ => Failure::Refused,
                }
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => Failure::NotConnected,
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => Failure::Lost,
            _ => Failure::Other,
        }
    }

    /// The database cannot serve this now and may later: answered `503 unavailable`, never
    /// `500`.
    pub(crate) fn unavailable(self) -> bool {
        !matches!(self, Failure::Refused | Failure::Other)
    }

    /// The database certainly did not apply the failed statement — for an autocommit
    /// statement or a `COMMIT`, that its transaction did not commit. False for [`Lost`]:
    /// there the outcome is unknown, and repeating a retrieval could hand a code out twice.
    ///
    /// [`Lost`]: Failure::Lost
    pub(crate) fn not_applied(self) -> bool {
        !matches!(self, Failure::Lost | Failure::Other)
    }

    /// Trying the same work again may succeed, *provided* it certainly did not apply the
    /// first time ([`Failure::not_applied`], or a failure before `COMMIT` was sent).
    pub(crate) fn worth_retrying(self) -> bool {
        self.unavailable()
    }

    /// The primary may have moved (or gone): the host to use should be looked for again.
    pub(crate) fn primary_in_doubt(self) -> bool {
        matches!(
            self,
            Failure::ReadOnly | Failure::NotConnected | Failure::Lost
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::borrow::Cow;

    /// A database error with a SQLSTATE, as sqlx would make from the server's answer.
    /// `PgDatabaseError` cannot be built outside sqlx, so this stands in for it and its
    /// severity reads as `ERROR`; the `FATAL` path is exercised against a real server
    /// (`tests/pg_hosts.rs`, terminated sessions).
    #[derive(Debug)]
    struct Sqlstate(&'static str);

    impl std::fmt::Display for Sqlstate {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for Sqlstate {}

    impl sqlx::error::DatabaseError for Sqlstate {
        fn message(&self) -> &str {
            "test"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn db(code: &'static str) -> sqlx::Error {
        sqlx::Error::Database(Box::new(Sqlstate(code)))
    }

    fn io(kind: std::io::ErrorKind) -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::from(kind))
    }

    #[test]
    fn classes() {
        use Failure::*;
        let cases = [
            (db("40001"), Conflict),
            (db("40P01"), Conflict),
            (db("25006"), ReadOnly),
            (db("57P01"), Lost),
            (db("57P02"), Lost),
            (db("57P03"), NotConnected),
            (db("53300"), NotConnected),
            (db("08006"), Lost),
            (db("08P01"), Lost),
            (db("23505"), Refused),
            (db("42P01"), Refused),
            (db("57014"), Refused),
            (io(std::io::ErrorKind::ConnectionReset), Lost),
            (io(std::io::ErrorKind::ConnectionRefused), Lost),
            (io(std::io::ErrorKind::UnexpectedEof), Lost),
            (sqlx::Error::Protocol("unexpected message".into()), Lost),
            (sqlx::Error::WorkerCrashed, Lost),
            (sqlx::Error::PoolTimedOut, NotConnected),
            (sqlx::Error::PoolClosed, NotConnected),
            (sqlx::Error::RowNotFound, Other),
            (sqlx::Error::ColumnNotFound("x".into()), Other),
        ];
        for (e, want) in cases {
            assert_eq!(Failure::classify(&e), want, "{e}");
        }
    }
}
