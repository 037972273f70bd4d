//! The SQL of fleet mode: one table, `tokenkeeper_logins`, one row per login (by name), and a
//! notification channel of the same name that a write announces on commit.
//!
//! A row holds the login only as ciphertext (`nonce`, `sealed`), with the id of the key that
//! sealed it, and in the clear only what a person looking at the table needs: the generation
//! (bumped by every write), the access token's expiry, and who did what when. No token and no
//! token-derived bytes are in the clear.
//!
//! Every error becomes one line naming the store (without its password) and the fix, and says
//! whether the database was unreachable, which callers treat as "keep the local access token,
//! try again later" and never as a reason to refresh without the row lock.

use crate::error::{Error, FleetError};
use crate::fleet::crypto::Sealed;
use postgres::config::{Host, SslMode};
use postgres::error::SqlState;
use postgres::{Client, Config, NoTls, Transaction};
use std::str::FromStr;
use std::time::Duration;

pub const TABLE: &str = "tokenkeeper_logins";
/// `NOTIFY` channel: the payload is `<name> <generation>`.
pub const CHANNEL: &str = "tokenkeeper_logins";

const CREATE: &str = "CREATE TABLE IF NOT EXISTS tokenkeeper_logins (
    name            text PRIMARY KEY,
    generation      bigint NOT NULL,
    provider        text NOT NULL,
    key_id          text NOT NULL,
    nonce           bytea NOT NULL,
    sealed          bytea NOT NULL,
    expires_at      bigint NOT NULL,
    updated_at      bigint NOT NULL,
    updated_by      text NOT NULL,
    last_refresh_at bigint,
    last_refresh_by text,
    last_outcome    text,
    last_error      text,
    failures        integer NOT NULL DEFAULT 0,
    retry_at        bigint
)";

/// Token requests under way: a machine notes here (on a second connection, committed at once)
/// that it is about to post generation N's refresh token, and removes the note in the
/// transaction that writes generation N+1. A note left behind means that machine lost its
/// connection or died with the request out: it may hold the new tokens in its recovery file,
/// so no other machine posts that refresh token again until the note is old.
///
/// `machine_id` is the noting installation's identity (its state folder's `machine-id`): host
/// names repeat (cloned VMs, containers), so a note is never taken for one's own by its name.
/// Tables made by earlier versions gain the column ([`Database::ensure_in_flight_id`]); their
/// notes read with an empty id, which is nobody's.
const CREATE_IN_FLIGHT: &str = "CREATE TABLE IF NOT EXISTS tokenkeeper_in_flight (
    name       text PRIMARY KEY,
    generation bigint NOT NULL,
    machine    text NOT NULL,
    since      bigint NOT NULL,
    machine_id text NOT NULL DEFAULT ''
)";

/// The column earlier versions' `tokenkeeper_in_flight` lacks.
const ADD_IN_FLIGHT_ID: &str = "ALTER TABLE tokenkeeper_in_flight ADD COLUMN IF NOT EXISTS machine_id text NOT NULL DEFAULT ''";

/// A note that a machine posted a generation's refresh token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InFlight {
    pub generation: i64,
    /// The noting machine's name (`[store] machine`, else its host name): for people only.
    pub machine: String,
    /// The noting installation's id; empty in a note written by an earlier version.
    pub machine_id: String,
    /// Epoch ms of the latest attempt.
    pub since: i64,
}

const COLUMNS: &str = "name, generation, provider, key_id, nonce, sealed, expires_at, updated_at, \
    updated_by, last_refresh_at, last_refresh_by, last_outcome, last_error, failures, retry_at";

/// One login's row. Times are epoch milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub name: String,
    pub generation: i64,
    pub provider: String,
    pub key_id: String,
    pub sealed: Sealed,
    /// When the access token expires (in the clear, for people reading the table).
    pub expires_at: i64,
    pub updated_at: i64,
    pub updated_by: String,
    pub last_refresh_at: Option<i64>,
    pub last_refresh_by: Option<String>,
    /// `pushed`, `refreshed`, `restored`, `unavailable`, `dead`.
    pub last_outcome: Option<String>,
    /// One line, no token.
    pub last_error: Option<String>,
    /// Consecutive transient failures of the token endpoint, fleet-wide, and no daemon tries
    /// again before `retry_at`.
    pub failures: i32,
    pub retry_at: Option<i64>,
}

impl Row {
    fn from_sql(r: &postgres::Row) -> Row {
        Row {
            name: r.get(0),
            generation: r.get(1),
            provider: r.get(2),
            key_id: r.get(3),
            sealed: Sealed {
                nonce: r.get(4),
                ciphertext: r.get(5),
            },
            expires_at: r.get(6),
            updated_at: r.get(7),
            updated_by: r.get(8),
            last_refresh_at: r.get(9),
            last_refresh_by: r.get(10),
            last_outcome: r.get(11),
            last_error: r.get(12),
            failures: r.get(13),
            retry_at: r.get(14),
        }
    }
}

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to the fleet's PostgreSQL database (what `--store` and `[store] url` name).
pub struct Database {
    client: Client,
    shown: String,
}

impl Database {
    /// Connects; `shown` is the URL without its password, for messages; `machine` names this
    /// machine in `pg_stat_activity`. Keepalives and a TCP
    /// user timeout make a vanished database an error within about 30 s instead of a hang.
    pub fn connect(
        url: &str,
        shown: &str,
        machine: &str,
        timeout: Duration,
    ) -> Result<Database, Error> {
        let mut config = Config::from_str(url).map_err(|e| Error::Fleet(FleetError::Config(format!(
                "the store {shown} is not a PostgreSQL connection string ({e}); write it like postgres://user:password@host:5432/database"
            ))))?;
        config
            .connect_timeout(timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(15))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(30))
            .application_name(&format!("tokenkeeper {machine}"));
        let client = match tls_policy(url, &config) {
            Tls::Off => config.connect(NoTls),
            tls => {
                if tls == Tls::Required {
                    config.ssl_mode(SslMode::Require);
                }
                config.connect(tls_connector().map_err(|e| Error::Fleet(FleetError::Config(format!(
                        "cannot set up TLS for the store {shown}: {e}; add sslmode=disable to the URL only if the network to it is trusted"
                    ))))?)
            }
        }
        .map_err(|e| classify(e, shown, "connect to"))?;
        Ok(Database {
            client,
            shown: shown.to_string(),
        })
    }

    /// False once the connection has broken; connect again.
    pub fn is_usable(&self) -> bool {
        !self.client.is_closed()
    }

    /// Creates the table unless it exists (`fleet push` does, on first use).
    pub fn create_table(&mut self) -> Result<(), Error> {
        let shown = self.shown.clone();
        self.client
            .batch_execute(&format!("{CREATE}; {CREATE_IN_FLIGHT}"))
            .map_err(|e| classify(e, &shown, "create the table in"))?;
        self.ensure_in_flight_id()
    }

    /// Gives a `tokenkeeper_in_flight` made by an earlier version its `machine_id` column. Looks
    /// first, so that a store whose table has it already needs no right to alter it.
    pub fn ensure_in_flight_id(&mut self) -> Result<(), Error> {
        let shown = self.shown.clone();
        let has = self
            .client
            .query(
                "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('tokenkeeper_in_flight') \
                 AND attname = 'machine_id' AND NOT attisdropped",
                &[],
            )
            .map_err(|e| classify(e, &shown, "read"))?;
        if has.is_empty() {
            self.client.batch_execute(ADD_IN_FLIGHT_ID).map_err(|e| {
                classify(
                    e,
                    &shown,
                    "add the column machine_id to the table tokenkeeper_in_flight in",
                )
            })?;
        }
        Ok(())
    }

    /// Notes (committed at once) that `machine` (installation `machine_id`) is posting
    /// `generation`'s refresh token.
    pub fn note_in_flight(
        &mut self,
        name: &str,
        generation: i64,
        machine: &str,
        machine_id: &str,
        now: i64,
    ) -> Result<(), Error> {
        let shown = self.shown.clone();
        self.client
            .execute(
                "INSERT INTO tokenkeeper_in_flight (name, generation, machine, since, machine_id) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO UPDATE \
                 SET generation = EXCLUDED.generation, machine = EXCLUDED.machine, \
                 since = EXCLUDED.since, machine_id = EXCLUDED.machine_id",
                &[&name, &generation, &machine, &now, &machine_id],
            )
            .map_err(|e| classify(e, &shown, "note the token request in"))?;
        Ok(())
    }

    /// The row as it is now, without locking it. A missing table is an error that says to push
    /// a login first; a missing row is `None`.
    pub fn fetch(&mut self, name: &str) -> Result<Option<Row>, Error> {
        let shown = self.shown.clone();
        let rows = self
            .client
            .query(
                &format!("SELECT {COLUMNS} FROM {TABLE} WHERE name = $1"),
                &[&name],
            )
            .map_err(|e| classify(e, &shown, "read"))?;
        Ok(rows.first().map(Row::from_sql))
    }

    /// Starts a transaction that will hold the row lock. `lock_timeout` bounds the wait for
    /// another machine's lock; `idle_timeout` is how long the database lets the transaction sit
    /// idle (during a token request) before it ends it and frees the row for another machine,
    /// should this process freeze.
    pub fn begin(
        &mut self,
        lock_timeout: Duration,
        idle_timeout: Duration,
    ) -> Result<Locked<'_>, Error> {
        let Database { client, shown } = self;
        let ms = |d: Duration| d.as_millis().clamp(1, i32::MAX as u128);
        let mut tx = client
            .transaction()
            .map_err(|e| classify(e, shown, "start a transaction in"))?;
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = {}; SET LOCAL idle_in_transaction_session_timeout = {}",
            ms(lock_timeout),
            ms(idle_timeout)
        ))
        .map_err(|e| classify(e, shown, "start a transaction in"))?;
        Ok(Locked { tx, shown })
    }

    /// Subscribes this connection to the channel (for the daemon's listener).
    pub fn listen(&mut self) -> Result<(), Error> {
        let shown = self.shown.clone();
        self.client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .map_err(|e| classify(e, &shown, "listen on"))
    }

    /// Blocks until a notification arrives (true) or the connection breaks (false).
    pub fn wait_for_notification(&mut self) -> bool {
        use postgres::fallible_iterator::FallibleIterator;
        let mut notes = self.client.notifications();
        let mut it = notes.blocking_iter();
        matches!(it.next(), Ok(Some(_)))
    }
}

/// A transaction that holds (or is about to hold) a login's row lock. Dropped without
/// [`Locked::commit`], it rolls back; a process that dies holding it loses its connection, and
/// the database rolls back and frees the row.
pub struct Locked<'a> {
    tx: Transaction<'a>,
    shown: &'a str,
}

impl Locked<'_> {
    /// `SELECT … FOR UPDATE`: waits for the row lock (up to the lock timeout), then reads.
    pub fn lock(&mut self, name: &str) -> Result<Option<Row>, Error> {
        let rows = self
            .tx
            .query(
                &format!("SELECT {COLUMNS} FROM {TABLE} WHERE name = $1 FOR UPDATE"),
                &[&name],
            )
            .map_err(|e| classify(e, self.shown, "lock the login in"))?;
        Ok(rows.first().map(Row::from_sql))
    }

    /// The note of a token request under way for this login, if one is left.
    pub fn in_flight(&mut self, name: &str) -> Result<Option<InFlight>, Error> {
        let rows = self
            .tx
            .query(
                "SELECT generation, machine, since, machine_id FROM tokenkeeper_in_flight WHERE name = $1",
                &[&name],
            )
            .map_err(|e| classify(e, self.shown, "read"))?;
        Ok(rows.first().map(|r| InFlight {
            generation: r.get(0),
            machine: r.get(1),
            since: r.get(2),
            machine_id: r.get(3),
        }))
    }

    /// Removes the note of a token request: its outcome is written in this transaction.
    pub fn clear_in_flight(&mut self, name: &str) -> Result<(), Error> {
        self.tx
            .execute(
                "DELETE FROM tokenkeeper_in_flight WHERE name = $1",
                &[&name],
            )
            .map_err(|e| classify(e, self.shown, "write"))?;
        Ok(())
    }

    /// Proves the lock is still held (the database has not ended the transaction) right before
    /// a refresh token is posted: never post without it.
    pub fn still_held(&mut self) -> Result<(), Error> {
        self.tx
            .batch_execute("SELECT 1")
            .map_err(|e| classify(e, self.shown, "keep the row lock in"))
    }

    /// Writes `row` over generation `replacing` (None: a new row), and announces it.
    pub fn write(&mut self, row: &Row, replacing: Option<i64>) -> Result<(), Error> {
        let shown = self.shown;
        let params: [&(dyn postgres::types::ToSql + Sync); 15] = [
            &row.name,
            &row.generation,
            &row.provider,
            &row.key_id,
            &row.sealed.nonce,
            &row.sealed.ciphertext,
            &row.expires_at,
            &row.updated_at,
            &row.updated_by,
            &row.last_refresh_at,
            &row.last_refresh_by,
            &row.last_outcome,
            &row.last_error,
            &row.failures,
            &row.retry_at,
        ];
        let changed = match replacing {
            Some(old) => {
                let sql = format!(
                    "UPDATE {TABLE} SET generation = $2, provider = $3, key_id = $4, nonce = $5, \
                     sealed = $6, expires_at = $7, updated_at = $8, updated_by = $9, \
                     last_refresh_at = $10, last_refresh_by = $11, last_outcome = $12, \
                     last_error = $13, failures = $14, retry_at = $15 \
                     WHERE name = $1 AND generation = $16"
                );
                let mut all: Vec<&(dyn postgres::types::ToSql + Sync)> = params.to_vec();
                all.push(&old);
                self.tx.execute(&sql, &all)
            }
            None => {
                let sql = format!(
                    "INSERT INTO {TABLE} ({COLUMNS}) VALUES \
                     ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
                );
                self.tx.execute(&sql, &params)
            }
        }
        .map_err(|e| classify(e, shown, "write the login to"))?;
        if changed != 1 {
            return Err(Error::Fleet(FleetError::Database(format!(
                "the login '{}' in the store {shown} changed under the row lock; nothing was written. Run the command again",
                row.name
            ))));
        }
        self.tx
            .execute(
                "SELECT pg_notify($1, $2)",
                &[&CHANNEL, &format!("{} {}", row.name, row.generation)],
            )
            .map_err(|e| classify(e, shown, "announce the new login in"))?;
        Ok(())
    }

    /// Records a failed refresh without touching the login.
    pub fn note_failure(
        &mut self,
        name: &str,
        outcome: &str,
        error: &str,
        failures: i32,
        retry_at: Option<i64>,
    ) -> Result<(), Error> {
        self.tx
            .execute(
                &format!(
                    "UPDATE {TABLE} SET last_outcome = $2, last_error = $3, failures = $4, retry_at = $5 WHERE name = $1"
                ),
                &[&name, &outcome, &error, &failures, &retry_at],
            )
            .map_err(|e| classify(e, self.shown, "record the failure in"))?;
        Ok(())
    }

    pub fn commit(self) -> Result<(), Error> {
        let shown = self.shown;
        self.tx
            .commit()
            .map_err(|e| classify(e, shown, "commit to"))
    }
}

/// How a connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    /// Plain: `sslmode=disable`, or a loopback or Unix-socket store without an `sslmode`.
    Off,
    /// As the URL's `sslmode` says (`prefer` or `require`), with certificates verified.
    AsAsked,
    /// Another host, no `sslmode`: TLS required and its certificate verified against the
    /// system's roots (on Linux `SSL_CERT_FILE` replaces them), never a silent fall-back to plain
    /// text.
    Required,
}

/// The TLS policy for a connection string: a store on another machine is reached over verified
/// TLS unless the URL says otherwise.
pub fn tls_policy(url: &str, config: &Config) -> Tls {
    let lower = url.to_ascii_lowercase();
    if lower.contains("sslmode=disable") {
        return Tls::Off;
    }
    if lower.contains("sslmode=") {
        return Tls::AsAsked;
    }
    let loopback = |h: &Host| match h {
        Host::Tcp(name) => {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        #[cfg(unix)]
        Host::Unix(_) => true,
    };
    if config.get_hosts().iter().all(loopback) {
        Tls::Off
    } else {
        Tls::Required
    }
}

/// rustls (with ring, already used for the token endpoint) and the platform's verifier, or the
/// platform's roots and the CA file a person added ([`crate::tls::roots`]).
fn tls_connector() -> Result<tokio_postgres_rustls::MakeRustlsConnect, rustls::Error> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?;
    let config = match crate::tls::roots() {
        None => builder.with_platform_verifier()?,
        Some(roots) => {
            let mut store = rustls::RootCertStore::empty();
            store.add_parsable_certificates(roots.iter().cloned());
            builder.with_root_certificates(store)
        }
    }
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// One line for a database error: what we were doing, the store, and the fix.
pub fn classify(e: postgres::Error, shown: &str, doing: &str) -> Error {
    let store = |problem: fn(String) -> FleetError, message: String| Error::Fleet(problem(message));
    let Some(db) = e.as_db_error() else {
        // The causes say what happened ("connection refused", "invalid peer certificate").
        let mut reason = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            let text = c.to_string();
            if !reason.contains(&text) {
                reason = format!("{reason}: {text}");
            }
            cause = c.source();
        }
        return unreachable(shown, doing, &reason);
    };
    let code = db.code();
    let said = db.message();
    if *code == SqlState::UNDEFINED_TABLE {
        return no_login(shown, None);
    }
    if *code == SqlState::LOCK_NOT_AVAILABLE {
        return Error::LockTimeout {
            what: "the login's row lock in the store (another machine is refreshing it)",
            lock: shown.into(),
            waited: "the lock timeout".into(),
            holder: String::new(),
        };
    }
    let class = &code.code()[..2];
    match class {
        // Connection exceptions, shutdowns, too many connections, an idle transaction ended.
        "08" | "53" => unreachable(shown, doing, said),
        "57" | "25" if matches!(code.code(), "57P01" | "57P02" | "57P03" | "25P03") => {
            unreachable(shown, doing, said)
        }
        "28" => store(
            FleetError::Config,
            format!(
                "the store {shown} refused the login: {said}; fix the user or password in [store] url"
            ),
        ),
        "3D" => store(
            FleetError::Config,
            format!("the store {shown} has no such database: {said}; fix [store] url"),
        ),
        "42" if *code == SqlState::INSUFFICIENT_PRIVILEGE => store(
            FleetError::Config,
            format!(
                "the store {shown} refused: {said}; grant the user SELECT, INSERT and UPDATE on {TABLE} (and CREATE for the first push)"
            ),
        ),
        _ => store(
            FleetError::Database,
            format!("could not {doing} the store {shown}: {said}"),
        ),
    }
}

fn unreachable(shown: &str, doing: &str, reason: &str) -> Error {
    Error::Fleet(FleetError::Unreachable(format!(
        "cannot {doing} the fleet's store {shown}: {reason}; this machine keeps its access token and tries again later"
    )))
}

/// The store has no table yet, or no row for this login: someone has to push one.
pub fn no_login(shown: &str, name: Option<&str>) -> Error {
    let what = match name {
        Some(name) => format!("holds no login named '{name}'"),
        None => format!("has no {TABLE} table yet"),
    };
    Error::Fleet(FleetError::Config(format!(
        "the store {shown} {what}: on the machine that is logged in, run `tokenkeeper fleet push` (it creates the table)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_on_another_host_is_reached_over_tls_unless_the_url_says_otherwise() {
        let policy = |url: &str| tls_policy(url, &Config::from_str(url).unwrap());
        assert_eq!(policy("postgres://u@127.0.0.1:5432/db"), Tls::Off);
        assert_eq!(policy("postgres://u@localhost/db"), Tls::Off);
        assert_eq!(policy("postgres://u@[::1]:5432/db"), Tls::Off);
        assert_eq!(policy("host=/run/postgresql dbname=db"), Tls::Off);
        assert_eq!(policy("postgres://u@db.example.com/db"), Tls::Required);
        assert_eq!(policy("postgres://u@10.0.0.5/db"), Tls::Required);
        assert_eq!(
            policy("postgres://u@db.example.com/db?sslmode=disable"),
            Tls::Off
        );
        assert_eq!(
            policy("postgres://u@db.example.com/db?sslmode=prefer"),
            Tls::AsAsked
        );
        assert_eq!(
            policy("postgres://u@localhost/db?sslmode=require"),
            Tls::AsAsked
        );
        assert!(tls_connector().is_ok());
    }
}
