//! The storage trait under [`crate::store::Store`]: where the cloud's rows
//! live. Two engines implement it:
//!
//! - [`sqlite`]: one embedded file (`cloud.db` in the data directory), the
//!   default, for one server;
//! - [`postgres`]: a PostgreSQL server shared by several stateless ingest
//!   nodes (issue #18).
//!
//! Everything above this layer is engine-neutral: the store seals and opens
//! every sensitive column with the server key before a row reaches the
//! engine (keys never go into the database), and writes its statements in
//! the SQL both engines accept: `?N` placeholders (rewritten to `$N` for
//! PostgreSQL; an optional parameter is written `CAST(?N AS TEXT) IS NULL`
//! so that PostgreSQL knows its type), `ON CONFLICT ... DO NOTHING | DO
//! UPDATE`, `INTEGER` and `BLOB` columns (rewritten to `BIGINT` and `BYTEA`
//! for PostgreSQL by [`Dialect::ddl`]).
//!
//! Invariants:
//! - a [`Database::transaction`] body runs at most once; it commits only
//!   when the body returns `Ok`, and an error rolls every statement back;
//! - writes that must be decided once across nodes (a batch sequence, a
//!   heartbeat sequence) are single conditional statements or are taken
//!   under [`Sql::lock`], so two nodes can never both store one sequence.

pub mod postgres;
pub mod sqlite;

use std::fmt;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};

/// A value passed to or read from the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit integer (`INTEGER` / `BIGINT`).
    Int(i64),
    /// UTF-8 text.
    Text(String),
    /// Bytes (`BLOB` / `BYTEA`).
    Blob(Vec<u8>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Int(_) => "integer",
            Value::Text(_) => "text",
            Value::Blob(_) => "bytes",
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Blob(v)
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Value {
        Value::Blob(v.to_vec())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// Parameters of a statement: `args![a, b, c]`.
#[macro_export]
#[doc(hidden)]
macro_rules! args {
    ($($e:expr),* $(,)?) => {
        &[$($crate::db::Value::from($e)),*]
    };
}
pub(crate) use args;

/// One result row.
#[derive(Debug, Clone)]
pub struct Row(pub(crate) Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> anyhow::Result<&Value> {
        self.0
            .get(i)
            .ok_or_else(|| anyhow!("result column {i} is missing"))
    }

    /// Column `i` as an integer.
    pub fn int(&self, i: usize) -> anyhow::Result<i64> {
        self.opt_int(i)?
            .ok_or_else(|| anyhow!("result column {i} is NULL, expected an integer"))
    }

    /// Column `i` as an integer or NULL.
    pub fn opt_int(&self, i: usize) -> anyhow::Result<Option<i64>> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            other => bail!("result column {i} is {}, expected an integer", other.kind()),
        }
    }

    /// Column `i` as text.
    pub fn text(&self, i: usize) -> anyhow::Result<String> {
        self.opt_text(i)?
            .ok_or_else(|| anyhow!("result column {i} is NULL, expected text"))
    }

    /// Column `i` as text or NULL.
    pub fn opt_text(&self, i: usize) -> anyhow::Result<Option<String>> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Text(v) => Ok(Some(v.clone())),
            other => bail!("result column {i} is {}, expected text", other.kind()),
        }
    }

    /// Column `i` as bytes.
    pub fn blob(&self, i: usize) -> anyhow::Result<Vec<u8>> {
        match self.at(i)? {
            Value::Blob(v) => Ok(v.clone()),
            other => bail!("result column {i} is {}, expected bytes", other.kind()),
        }
    }
}

/// Which SQL the engine speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite 3.
    Sqlite,
    /// PostgreSQL (13 or later).
    Postgres,
}

impl Dialect {
    /// A schema written for SQLite, in this dialect: for PostgreSQL,
    /// `INTEGER PRIMARY KEY AUTOINCREMENT` becomes `BIGSERIAL PRIMARY KEY`,
    /// `INTEGER` becomes `BIGINT` (64 bits as in SQLite) and `BLOB` `BYTEA`.
    pub fn ddl(self, sqlite: &str) -> String {
        match self {
            Dialect::Sqlite => sqlite.to_owned(),
            Dialect::Postgres => sqlite
                .replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
                .replace("INTEGER", "BIGINT")
                .replace("BLOB", "BYTEA"),
        }
    }
}

/// Statements inside one transaction (or, for [`Db::read`], one
/// connection).
pub trait Sql {
    /// Run a statement; the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> anyhow::Result<u64>;
    /// Run a query; every row.
    fn query(&mut self, sql: &str, params: &[Value]) -> anyhow::Result<Vec<Row>>;
    /// Run several statements without parameters (schema).
    fn batch(&mut self, sql: &str) -> anyhow::Result<()>;
    /// Hold a lock named by `key` until the transaction ends, across every
    /// node that shares the database (PostgreSQL: an advisory lock; SQLite:
    /// nothing, its one connection already serialises writers).
    fn lock(&mut self, key: &[u8]) -> anyhow::Result<()>;
    /// The engine's dialect.
    fn dialect(&self) -> Dialect;

    /// Run a query expected to return at most one row.
    fn query_opt(&mut self, sql: &str, params: &[Value]) -> anyhow::Result<Option<Row>> {
        let mut rows = self.query(sql, params)?;
        if rows.len() > 1 {
            bail!("a query expected to return one row returned {}", rows.len());
        }
        Ok(rows.pop())
    }

    /// Run a query expected to return exactly one row.
    fn query_one(&mut self, sql: &str, params: &[Value]) -> anyhow::Result<Row> {
        self.query_opt(sql, params)?
            .context("a query expected to return one row returned none")
    }
}

/// A database engine.
pub trait Database: Send + Sync {
    /// Run `work` in one transaction: committed when it returns `Ok`,
    /// rolled back otherwise.
    fn transaction(
        &self,
        work: &mut dyn FnMut(&mut dyn Sql) -> anyhow::Result<()>,
    ) -> anyhow::Result<()>;
    /// Run `work` on one connection outside a transaction (reads).
    fn read(&self, work: &mut dyn FnMut(&mut dyn Sql) -> anyhow::Result<()>) -> anyhow::Result<()>;
    /// The engine's dialect.
    fn dialect(&self) -> Dialect;
    /// Where the data lives, for logs and `--help` answers: a file path or
    /// `host:port/database` (never a password).
    fn describe(&self) -> String;
}

/// A shared handle to a [`Database`], with typed results.
#[derive(Clone)]
pub struct Db(Arc<dyn Database>);

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Db").field(&self.0.describe()).finish()
    }
}

fn once<R>(
    run: impl FnOnce(&mut dyn FnMut(&mut dyn Sql) -> anyhow::Result<()>) -> anyhow::Result<()>,
    f: impl FnOnce(&mut dyn Sql) -> anyhow::Result<R>,
) -> anyhow::Result<R> {
    let mut f = Some(f);
    let mut out = None;
    run(&mut |sql| {
        let f = f
            .take()
            .ok_or_else(|| anyhow!("a transaction body was asked to run twice"))?;
        out = Some(f(sql)?);
        Ok(())
    })?;
    out.ok_or_else(|| anyhow!("a transaction body did not run"))
}

impl Db {
    /// Wrap an engine.
    pub fn new(db: Arc<dyn Database>) -> Db {
        Db(db)
    }

    /// Run `f` in one transaction (see [`Database::transaction`]).
    pub fn write<R>(&self, f: impl FnOnce(&mut dyn Sql) -> anyhow::Result<R>) -> anyhow::Result<R> {
        once(|w| self.0.transaction(w), f)
    }

    /// Run `f` outside a transaction (see [`Database::read`]).
    pub fn read<R>(&self, f: impl FnOnce(&mut dyn Sql) -> anyhow::Result<R>) -> anyhow::Result<R> {
        once(|w| self.0.read(w), f)
    }

    /// The engine's dialect.
    pub fn dialect(&self) -> Dialect {
        self.0.dialect()
    }

    /// Where the data lives (no password).
    pub fn describe(&self) -> String {
        self.0.describe()
    }
}
