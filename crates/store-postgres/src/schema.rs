//! Versioned migrations: SQL files embedded in the binary, applied in
//! order, each recorded in `muster_schema_migrations`. Migrating runs in one
//! transaction under an advisory lock, so daemons starting together on one
//! database migrate it once, and a failed migration leaves nothing behind.

use muster_store::StoreError;
use tokio_postgres::Client;

use crate::errors::db_error;

/// The migrations, oldest first; migration `n` brings a database to version `n`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_team.sql"),
    include_str!("migrations/0003_sent_via.sql"),
    include_str!("migrations/0004_tokens.sql"),
    include_str!("migrations/0005_search.sql"),
    include_str!("migrations/0006_search_words_by_the_writer.sql"),
];

/// The schema version a fully migrated database is at.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Which migrations have run: one row per version.
const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS muster_schema_migrations (
    version INTEGER PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)";

/// The advisory lock every migrating muster takes (the bytes of "muster").
const MIGRATION_LOCK: i64 = 0x6d75_7374_6572;

/// Brings the database to [`SCHEMA_VERSION`], refusing one that a newer
/// muster migrated further.
pub async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(db_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db_error)?;
    tx.batch_execute(VERSION_TABLE).await.map_err(db_error)?;
    let found: i32 = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM muster_schema_migrations",
            &[],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(db_error)?;
    let found = found.max(0) as usize;
    if found > SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "the database is at schema version {found}, newer than this muster knows ({SCHEMA_VERSION}); upgrade muster"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found) {
        tx.batch_execute(sql).await.map_err(|e| {
            StoreError::Write(format!(
                "schema migration {} failed: {}",
                i + 1,
                crate::errors::text(&e)
            ))
        })?;
        tx.execute(
            "INSERT INTO muster_schema_migrations (version) VALUES ($1)",
            &[&((i + 1) as i32)],
        )
        .await
        .map_err(db_error)?;
    }
    tx.commit().await.map_err(db_error)
}
