//! The fleet engine: a PostgreSQL server shared by several `outpost-cloud`
//! ingest nodes (`serve --database-url-file`).
//!
//! Connections come from a bounded pool (`deadpool-postgres`, statements
//! prepared once per connection). Their I/O runs on one small runtime of
//! this module's own (`outpost-pg` threads, never dropped), so the store's
//! synchronous callers — the server's blocking tasks and the command line —
//! wait on it the same way, with or without a runtime of their own.
//!
//! Transport: a server that is not on loopback must be reached with
//! `sslmode=require`; TLS is rustls with full verification against the web
//! roots plus `--database-ca` (a managed PostgreSQL's CA). A URL that would
//! send rows over plain TCP to another machine is refused at start.

use std::error::Error as StdError;
use std::future::Future;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::BytesMut;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use sha2::{Digest, Sha256};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use zeroize::Zeroizing;

use super::{Database, Dialect, Row, Sql, Value};

/// Connections per node unless `--database-pool` says otherwise.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// How long a caller waits for a free connection before its request fails.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Server settings of every connection: the longest a statement (or a
/// lock wait) may take, and the longest a transaction may stay idle.
const STATEMENT_OPTIONS: &str =
    "-c statement_timeout=30000 -c idle_in_transaction_session_timeout=60000";

/// How to reach the PostgreSQL server.
#[derive(Clone)]
pub struct PostgresConfig {
    /// A libpq connection string or `postgres://` URL (may hold a password:
    /// read from a file or the environment, never printed).
    pub url: Zeroizing<String>,
    /// Most connections this node opens.
    pub pool_size: usize,
    /// PEM of extra CA certificates for the server's TLS certificate.
    pub ca_pem: Option<String>,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

fn runtime() -> anyhow::Result<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("outpost-pg")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| anyhow!("starting the PostgreSQL I/O threads: {e}"))
}

/// Wait for `f` on the calling thread; its I/O and timers are driven by
/// the module's runtime.
fn wait<F: Future>(rt: &tokio::runtime::Runtime, f: F) -> F::Output {
    let _enter = rt.enter();
    futures_executor::block_on(f)
}

fn pg_err(e: tokio_postgres::Error) -> anyhow::Error {
    match e.as_db_error() {
        Some(db) => anyhow!(
            "PostgreSQL refused a statement: {} ({})",
            db.message(),
            db.code().code()
        ),
        None => anyhow!("PostgreSQL: {e}"),
    }
}

fn is_loopback(host: &Host) -> bool {
    match host {
        Host::Tcp(h) => {
            h.eq_ignore_ascii_case("localhost")
                || h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .is_ok_and(|a| a.is_loopback())
        }
        #[cfg(unix)]
        Host::Unix(_) => true,
    }
}

/// A PostgreSQL database.
pub struct Postgres {
    pool: Pool,
    rt: &'static tokio::runtime::Runtime,
    target: String,
}

impl Postgres {
    /// Check the connection string, build the pool and open one connection
    /// (so a wrong address, password or database is reported at start).
    pub fn connect(cfg: &PostgresConfig) -> anyhow::Result<Postgres> {
        let mut pg = tokio_postgres::Config::from_str(cfg.url.trim())
            .map_err(|e| anyhow!("the PostgreSQL connection string is not valid: {e}"))?;
        if pg.get_hosts().is_empty() {
            bail!("the PostgreSQL connection string names no host");
        }
        let Some(dbname) = pg.get_dbname().map(str::to_owned) else {
            bail!("the PostgreSQL connection string names no database (dbname)");
        };
        let remote: Vec<String> = pg
            .get_hosts()
            .iter()
            .filter(|h| !is_loopback(h))
            .map(|h| match h {
                Host::Tcp(h) => h.clone(),
                #[cfg(unix)]
                Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        if !remote.is_empty() && pg.get_ssl_mode() != SslMode::Require {
            bail!(
                "PostgreSQL at {} is not on this machine: add sslmode=require to the connection string \
                 (rows would otherwise cross the network in plain text)",
                remote.join(", ")
            );
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        // A statement or lock wait that hangs (a stuck node holding a
        // sequence's lock, an overloaded server) fails its request, which
        // the device resends, instead of holding a connection for ever;
        // unless the connection string sets its own options.
        if pg.get_options().is_none() {
            pg.options(STATEMENT_OPTIONS);
        }
        if cfg.pool_size == 0 {
            bail!("the PostgreSQL pool size must be at least 1");
        }
        let target = format!(
            "PostgreSQL {}/{dbname}",
            pg.get_hosts()
                .iter()
                .zip(pg.get_ports().iter().chain(std::iter::repeat(&5432)))
                .map(|(h, p)| match h {
                    Host::Tcp(h) => format!("{h}:{p}"),
                    #[cfg(unix)]
                    Host::Unix(d) => format!("{}:{p}", d.display()),
                })
                .collect::<Vec<_>>()
                .join(",")
        );
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(crate::pki::client_tls(
            cfg.ca_pem.as_deref(),
            "PostgreSQL",
        )?);
        let mgr = Manager::from_config(
            pg,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let rt = runtime()?;
        let pool = {
            let _enter = rt.enter();
            Pool::builder(mgr)
                .max_size(cfg.pool_size)
                .wait_timeout(Some(POOL_WAIT))
                .create_timeout(Some(CONNECT_TIMEOUT))
                .recycle_timeout(Some(CONNECT_TIMEOUT))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .build()
                .context("building the PostgreSQL pool")?
        };
        let db = Postgres { pool, rt, target };
        db.read(&mut |sql| sql.batch("SELECT 1"))
            .with_context(|| format!("connecting to {}", db.target))?;
        Ok(db)
    }

    fn conn(&self) -> anyhow::Result<deadpool_postgres::Object> {
        wait(self.rt, self.pool.get()).map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => {
                pg_err(e).context(format!("connecting to {}", self.target))
            }
            deadpool_postgres::PoolError::Timeout(_) => anyhow!(
                "no PostgreSQL connection free or opened within {} s ({})",
                POOL_WAIT.as_secs(),
                self.target
            ),
            e => anyhow!("PostgreSQL pool ({}): {e}", self.target),
        })
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) if *ty == Type::INT8 => v.to_sql(ty, out),
            Value::Int(v) if *ty == Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
            Value::Int(v) if *ty == Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
            Value::Text(s) if <&str as ToSql>::accepts(ty) => s.as_str().to_sql(ty, out),
            Value::Blob(b) if *ty == Type::BYTEA => b.as_slice().to_sql(ty, out),
            other => Err(format!("a {} value for a {ty} parameter", other.kind()).into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn row(r: &tokio_postgres::Row) -> anyhow::Result<Row> {
    let mut out = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let ty = col.type_();
        let v = if *ty == Type::INT8 {
            r.try_get::<_, Option<i64>>(i)?.map(Value::Int)
        } else if *ty == Type::INT4 {
            r.try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *ty == Type::INT2 {
            r.try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *ty == Type::BOOL {
            r.try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *ty == Type::BYTEA {
            r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob)
        } else if <&str as tokio_postgres::types::FromSql>::accepts(ty) {
            r.try_get::<_, Option<String>>(i)?.map(Value::Text)
        } else if *ty == Type::VOID {
            None
        } else {
            bail!("result column {i} has the PostgreSQL type {ty}, which the store does not read");
        };
        out.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(out))
}

/// `?N` placeholders (the store's SQL) as `$N` (PostgreSQL's). The store's
/// statements hold no `?` anywhere else.
fn placeholders(sql: &str) -> String {
    sql.replace('?', "$")
}

/// A connection or a transaction seen as [`Sql`].
struct On<'a, C> {
    c: &'a C,
    rt: &'static tokio::runtime::Runtime,
}

impl<C: GenericClient + Sync> On<'_, C> {
    fn prepare(&self, sql: &str) -> anyhow::Result<tokio_postgres::Statement> {
        wait(self.rt, self.c.prepare_cached(&placeholders(sql))).map_err(pg_err)
    }
}

impl<C: GenericClient + Sync> Sql for On<'_, C> {
    fn execute(&mut self, sql: &str, params: &[Value]) -> anyhow::Result<u64> {
        let st = self.prepare(sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as _).collect();
        wait(self.rt, self.c.execute(&st, &refs)).map_err(pg_err)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> anyhow::Result<Vec<Row>> {
        let st = self.prepare(sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as _).collect();
        wait(self.rt, self.c.query(&st, &refs))
            .map_err(pg_err)?
            .iter()
            .map(row)
            .collect()
    }

    fn batch(&mut self, sql: &str) -> anyhow::Result<()> {
        wait(self.rt, self.c.batch_execute(sql)).map_err(pg_err)
    }

    fn lock(&mut self, key: &[u8]) -> anyhow::Result<()> {
        let d = Sha256::digest(key);
        let mut k = [0u8; 8];
        k.copy_from_slice(&d[..8]);
        self.execute(
            "SELECT pg_advisory_xact_lock(?1)",
            &[Value::Int(i64::from_be_bytes(k))],
        )?;
        Ok(())
    }

    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }
}

impl Database for Postgres {
    fn transaction(
        &self,
        work: &mut dyn FnMut(&mut dyn Sql) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut conn = self.conn()?;
        let tx = wait(self.rt, conn.transaction()).map_err(pg_err)?;
        work(&mut On {
            c: &tx,
            rt: self.rt,
        })?;
        wait(self.rt, tx.commit()).map_err(pg_err)
    }

    fn read(&self, work: &mut dyn FnMut(&mut dyn Sql) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let conn = self.conn()?;
        work(&mut On {
            c: &conn,
            rt: self.rt,
        })
    }

    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn describe(&self) -> String {
        self.target.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> PostgresConfig {
        PostgresConfig {
            url: Zeroizing::new(url.to_owned()),
            pool_size: 2,
            ca_pem: None,
        }
    }

    fn refusal(url: &str) -> String {
        match Postgres::connect(&cfg(url)) {
            Ok(_) => panic!("{url} was accepted"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn a_remote_server_without_tls_is_refused_before_any_connection() {
        let e = refusal("postgres://outpost:secret-pw@db.example.net/outpost");
        assert!(
            e.contains("db.example.net") && e.contains("sslmode=require"),
            "{e}"
        );
        assert!(!e.contains("secret-pw"), "the password was printed: {e}");
        let e = refusal("host=10.1.2.3 dbname=outpost sslmode=prefer");
        assert!(e.contains("10.1.2.3"), "{e}");
    }

    #[test]
    fn connection_strings_without_a_database_or_host_are_refused() {
        assert!(refusal("host=127.0.0.1 user=x").contains("names no database"));
        assert!(refusal("not a url at all ===").contains("not valid"));
        assert!(refusal("dbname=x").contains("names no host"));
    }

    #[test]
    fn an_unreachable_server_is_named_without_the_password() {
        // A port nothing listens on (bound then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = refusal(&format!(
            "postgres://outpost:secret-pw@127.0.0.1:{port}/outpost"
        ));
        assert!(e.contains(&format!("127.0.0.1:{port}/outpost")), "{e}");
        assert!(!e.contains("secret-pw"), "the password was printed: {e}");
    }

    #[test]
    fn a_server_that_accepts_and_never_answers_is_given_up_on_in_bounded_time() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let held: Vec<_> = listener.incoming().take(4).collect();
            std::thread::sleep(Duration::from_secs(30));
            drop(held);
        });
        let start = std::time::Instant::now();
        let e = refusal(&format!(
            "postgres://outpost:secret-pw@127.0.0.1:{port}/outpost"
        ));
        assert!(
            start.elapsed() < Duration::from_secs(25),
            "{:?}",
            start.elapsed()
        );
        assert!(e.contains(&format!("127.0.0.1:{port}/outpost")), "{e}");
        assert!(e.contains("within 10 s"), "{e}");
        assert!(!e.contains("secret-pw"), "{e}");
    }

    #[test]
    fn a_server_that_is_not_postgresql_is_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            use std::io::Write;
            for conn in listener.incoming().take(4) {
                let Ok(mut c) = conn else { continue };
                let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let e = refusal(&format!(
            "postgres://outpost:secret-pw@127.0.0.1:{port}/outpost"
        ));
        assert!(e.contains(&format!("127.0.0.1:{port}/outpost")), "{e}");
        assert!(!e.contains("secret-pw"), "{e}");
    }

    #[test]
    fn placeholders_are_rewritten() {
        assert_eq!(
            placeholders("SELECT a FROM t WHERE b = ?1 AND (?2 IS NULL OR c = ?2)"),
            "SELECT a FROM t WHERE b = $1 AND ($2 IS NULL OR c = $2)"
        );
    }
}
