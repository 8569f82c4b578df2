//! The writer's connection as its jobs see it: the connection, and its prepared statements
//! found by the address of their SQL text instead of by the text itself.
//!
//! rusqlite's `prepare_cached` trims the SQL, hashes it twice (out of its LRU map and back in)
//! and copies it into a new `Arc<str>` at every use: about 4 000 instructions per retrieval on
//! the single writer thread (issue 25). [`Tx::cached`] takes only `&'static str`: such a text is
//! immutable and lives as long as the program, so its address and length name it, and a lookup
//! is a comparison of two integers per statement already prepared. The table is bounded by
//! the number of distinct SQL texts in the program (statements made with `format!` are made
//! once, into a `LazyLock<String>`).
//!
//! A `rusqlite::Statement` borrows its connection, so the table lives beside a borrow of it:
//! the writer thread owns the `Connection` and lends it to one [`Tx`] for as long as it runs
//! (no `unsafe`). Like rusqlite's cache, a statement is taken out of its slot while in use and
//! put back afterwards, its bindings cleared (a bound secret does not stay in SQLite's memory);
//! a second use of the same text while the first is in use gets a statement of its own, not
//! kept (as does every use after a panic inside one). [`Tx`] derefs to the `Connection`, so
//! everything else is unchanged.
//!
//! A kept statement is only worth keeping if SQLite does not prepare it again at every run.
//! It does when a bound parameter's value went into the plan: SQLite reads a parameter in
//! `LIMIT ?N` while planning, so every new binding expires the statement, and its next step
//! parses and plans it anew (about 88 000 instructions for the dispatcher's claim, which ran up
//! to 200 times a second on the writer). So this backend's statements write `LIMIT +?N`: the
//! same value and plan, as an expression SQLite does not read while planning (checked below,
//! for the rule and for every source file of this backend).
//!
//! Not responsible for transactions (`writer.rs`) or for any statement's SQL.

use std::cell::RefCell;
use std::ops::Deref;

use rusqlite::{Connection, PrepFlags, Statement};

/// The writer's connection with its statements (see the module's header).
pub struct Tx<'c> {
    conn: &'c Connection,
    slots: RefCell<Vec<Slot<'c>>>,
}

/// One SQL text's statement: `None` while a guard holds it.
struct Slot<'c> {
    sql: (usize, usize),
    stmt: Option<Statement<'c>>,
}

impl<'c> Tx<'c> {
    pub fn new(conn: &'c Connection) -> Tx<'c> {
        Tx {
            conn,
            slots: RefCell::new(Vec::new()),
        }
    }

    /// Runs `f` with the prepared statement of `sql` (prepared at its first use), then puts
    /// the statement back with its bindings cleared.
    pub fn cached<T>(
        &self,
        sql: &'static str,
        f: impl FnOnce(&mut Statement<'c>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let key = (sql.as_ptr() as usize, sql.len());
        let found = {
            let mut slots = self.slots.borrow_mut();
            slots
                .iter()
                .position(|s| s.sql == key)
                .map(|i| (i, slots[i].stmt.take()))
        };
        let (slot, mut stmt) = match found {
            Some((i, Some(stmt))) => (Some(i), stmt),
            // In use further up the stack: a statement of its own, finalized after use.
            Some((_, None)) => (None, self.conn.prepare(sql)?),
            None => {
                let stmt = self
                    .conn
                    .prepare_with_flags(sql, PrepFlags::SQLITE_PREPARE_PERSISTENT)?;
                let mut slots = self.slots.borrow_mut();
                slots.push(Slot {
                    sql: key,
                    stmt: None,
                });
                (Some(slots.len() - 1), stmt)
            }
        };
        let out = f(&mut stmt);
        if let Some(i) = slot {
            stmt.clear_bindings();
            self.slots.borrow_mut()[i].stmt = Some(stmt);
        }
        out
    }

    /// Runs one statement without parameters (`BEGIN`, `COMMIT`, savepoints).
    pub fn run(&self, sql: &'static str) -> rusqlite::Result<()> {
        self.cached(sql, |s| s.raw_execute()).map(|_| ())
    }

    /// How many statements are kept (for the tests).
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.slots.borrow().len()
    }
}

impl Deref for Tx<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::{params, Connection, StatementStatus};

    use super::Tx;

    const INSERT: &str = "INSERT INTO t (v) VALUES (?1)";
    const COUNT: &str = "SELECT count(*) FROM t WHERE v >= ?1";

    fn table() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (v INTEGER NOT NULL)")
            .unwrap();
        c
    }

    fn count(tx: &Tx<'_>, from: i64) -> i64 {
        tx.cached(COUNT, |s| s.query_row(params![from], |r| r.get(0)))
            .unwrap()
    }

    /// One statement per SQL text, reused; results as with a fresh statement each time.
    #[test]
    fn a_text_is_prepared_once_and_reused() {
        let c = table();
        let tx = Tx::new(&c);
        for v in 0..5 {
            tx.cached(INSERT, |s| s.execute(params![v])).unwrap();
        }
        assert_eq!(count(&tx, 2), 3);
        assert_eq!(tx.kept(), 2);
    }

    /// The same text used while its statement is held gets a statement of its own, and the
    /// held one is still kept afterwards.
    #[test]
    fn a_text_in_use_gets_a_second_statement() {
        let c = table();
        let tx = Tx::new(&c);
        tx.cached(INSERT, |s| s.execute(params![1])).unwrap();
        let (a, b) = tx
            .cached(COUNT, |outer| {
                let b = count(&tx, 0);
                Ok((outer.query_row(params![0], |r| r.get::<_, i64>(0))?, b))
            })
            .unwrap();
        assert_eq!((a, b), (1, 1));
        assert_eq!(tx.kept(), 2);
        assert_eq!(count(&tx, 0), 1);
    }

    /// A statement goes back with its bindings cleared: nothing bound stays in SQLite.
    #[test]
    fn bindings_are_cleared_when_a_statement_goes_back() {
        let c = table();
        let tx = Tx::new(&c);
        tx.cached(INSERT, |s| s.execute(params![7])).unwrap();
        let bound = tx.cached(INSERT, |s| Ok(s.expanded_sql())).unwrap();
        assert_eq!(bound.as_deref(), Some("INSERT INTO t (v) VALUES (NULL)"));
    }

    /// How often SQLite prepared `sql` again over three runs with a new `LIMIT` value each.
    fn reprepared(sql: &'static str) -> i32 {
        let c = table();
        let tx = Tx::new(&c);
        for limit in 1..=3 {
            tx.cached(sql, |s| {
                s.query_map(params![0, limit], |_| Ok(()))?
                    .collect::<rusqlite::Result<Vec<()>>>()
            })
            .unwrap();
        }
        tx.cached(sql, |s| Ok(s.get_status(StatementStatus::RePrepare)))
            .unwrap()
    }

    /// The rule of the module's header: a bound `LIMIT ?N` makes SQLite prepare the statement
    /// again at every new binding; `LIMIT +?N` does not (if a later SQLite stops doing the
    /// first, this test says the rule is no longer needed).
    #[test]
    fn a_bound_limit_is_written_so_that_it_does_not_reprepare() {
        // (Split, so that the source scan below does not find it.)
        assert!(
            reprepared(concat!(
                "SELECT v FROM t WHERE v >= ?1 ORDER BY v LIMIT ",
                "?2"
            )) >= 2
        );
        assert_eq!(
            reprepared("SELECT v FROM t WHERE v >= ?1 ORDER BY v LIMIT +?2"),
            0
        );
    }

    /// Every statement of this backend follows that rule.
    #[test]
    fn no_statement_of_this_backend_binds_a_bare_limit() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/store/sqlite");
        let mut bare = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let needle = ["LIMIT ", "?"].concat();
            for (n, line) in text.lines().enumerate() {
                if line.contains(&needle) && !line.trim_start().starts_with("//") {
                    bare.push(format!("{}:{}", path.display(), n + 1));
                }
            }
        }
        assert!(bare.is_empty(), "write LIMIT +?N (see tx.rs): {bare:?}");
    }

    /// A statement whose text fails to prepare is not kept; the error is the caller's, as is
    /// an error of the statement's run.
    #[test]
    fn errors_are_the_callers_and_a_bad_text_is_not_kept() {
        let c = table();
        let tx = Tx::new(&c);
        assert!(tx.cached("SELECT nope FROM t", |s| s.execute([])).is_err());
        assert_eq!(tx.kept(), 0);
        assert!(tx
            .cached(INSERT, |s| s.execute(params![None::<i64>]))
            .is_err());
        assert_eq!(count(&tx, 0), 0);
    }
}
