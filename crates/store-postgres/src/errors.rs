//! PostgreSQL's errors as the store reports them, and the one error of
//! opening ([`ConnectError`]) that names the server and what to do.

use muster_store::health::FaultKind;
use muster_store::StoreError;
use tokio_postgres::error::SqlState;

/// The fault a driver error is, or `None` for a request's own failure (a
/// unique violation, say) that the other requests of its batch need not
/// share: the server out of room or resources, its I/O failing, the
/// connection lost or the server shutting down, a lock not had in time.
pub fn fault_kind(e: &tokio_postgres::Error) -> Option<FaultKind> {
    if e.is_closed() {
        return Some(FaultKind::Connection);
    }
    let Some(code) = e.code() else {
        // No SQLSTATE: the driver's own failure, most often the socket's.
        let io = std::error::Error::source(e).is_some_and(|c| c.is::<std::io::Error>());
        return io.then_some(FaultKind::Connection);
    };
    let code = code.code();
    Some(match code {
        "53100" => FaultKind::Full,
        "40001" | "40P01" | "55P03" => FaultKind::Busy,
        _ if code.starts_with("58") => FaultKind::Io,
        _ if code.starts_with("08") || code.starts_with("57P") => FaultKind::Connection,
        _ if code.starts_with("53") || code.starts_with("XX") => FaultKind::Other,
        _ => return None,
    })
}

/// A driver error in words: the server's own message (with its SQLSTATE,
/// detail and hint) or the driver's, with every cause.
pub fn text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut out = format!("{} ({})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            out.push_str(&format!("; {detail}"));
        }
        if let Some(hint) = db.hint() {
            out.push_str(&format!("; hint: {hint}"));
        }
        return out;
    }
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        out.push_str(&format!(": {c}"));
        cause = c.source();
    }
    out
}

/// What a request the server refused on its own merits is: another
/// daemon deciding first (a guard's `MU409`, a nickname or a live token's
/// name given out already) is a [`StoreError::Conflict`]; anything else a
/// write failure.
pub fn refusal(e: &tokio_postgres::Error) -> StoreError {
    let decided_first = e.as_db_error().is_some_and(|db| {
        db.code().code() == "MU409"
            || (*db.code() == SqlState::UNIQUE_VIOLATION
                && matches!(
                    db.constraint(),
                    Some("sessions_nickname" | "tokens_live_name")
                ))
    });
    if decided_first {
        StoreError::Conflict(text(e))
    } else {
        StoreError::Write(text(e))
    }
}

/// A driver error as a store error: the backend failed underneath.
pub fn db_error(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(Box::new(Failure(text(&e))))
}

/// A value that cannot be read back as muster's data.
pub fn corrupt(e: tokio_postgres::Error) -> StoreError {
    StoreError::Corrupt(text(&e))
}

/// A pool error (no connection could be had) as a store error.
pub fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db_error(e),
        other => StoreError::Backend(Box::new(Failure(other.to_string()))),
    }
}

/// A failure already put in words (the driver's `Display` leaves its cause out).
#[derive(Debug)]
struct Failure(String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

/// Why the store could not be opened, naming the server (never the
/// password) and what would fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid PostgreSQL URL: {0}; write it as postgres://user@host:port/database")]
    BadUrl(String),
    #[error("the --store URL asks for TLS (sslmode=require), which this muster cannot speak to PostgreSQL yet: drop sslmode=require, or reach the server over loopback or a tunnel")]
    TlsUnsupported,
    #[error("cannot reach PostgreSQL at {server}: {cause}. Is the server running and listening there? Start it (for example `pg_ctlcluster <version> main start`) or fix the --store URL")]
    Unreachable { server: String, cause: String },
    #[error("PostgreSQL at {server} has no database {database:?}: create it (`{create}`) or name another in the --store URL")]
    NoDatabase {
        server: String,
        database: String,
        /// The command that creates it.
        create: String,
    },
    #[error("PostgreSQL at {server} refused user {user:?}: {cause}. Check the user and password in the --store URL")]
    Refused {
        server: String,
        user: String,
        cause: String,
    },
}

/// Where the store connects, for messages: the server(s) as `host:port`,
/// the database, the user, and the `createdb` command that would make it.
pub struct Target {
    pub server: String,
    pub database: String,
    pub user: String,
    pub create: String,
}

/// The first connection's error, classified for a person.
pub fn connect_error(e: deadpool_postgres::PoolError, target: &Target) -> ConnectError {
    let Target {
        server,
        database,
        user,
        create,
    } = target;
    let (server, database, user) = (server.clone(), database.clone(), user.clone());
    let e = match e {
        deadpool_postgres::PoolError::Backend(e) => e,
        other => {
            return ConnectError::Unreachable {
                server,
                cause: other.to_string(),
            }
        }
    };
    match e.code() {
        Some(code) if *code == SqlState::INVALID_CATALOG_NAME => ConnectError::NoDatabase {
            server,
            database,
            create: create.clone(),
        },
        Some(code)
            if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            ConnectError::Refused {
                server,
                user,
                cause: text(&e),
            }
        }
        _ => ConnectError::Unreachable {
            server,
            cause: text(&e),
        },
    }
}
