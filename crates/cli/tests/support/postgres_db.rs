//! A real PostgreSQL for the tests that use one (team mode, the PostgreSQL
//! store): the server (127.0.0.1:5432, or `MUSTER_TEST_POSTGRES`), psql to look
//! into it, and a fresh database per test, dropped with its connections
//! afterwards.

#![allow(dead_code)]

use std::process::Command;

/// The server the tests use, as a URL without a database.
pub fn server() -> String {
    std::env::var("MUSTER_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Runs one SQL command with psql on `database`; returns its unaligned output.
pub fn psql(database: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .arg(format!("{}/{database}", server()))
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("run psql (PostgreSQL's client)");
    assert!(
        out.status.success(),
        "psql {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A fresh database, dropped with its connections when this goes.
pub struct FreshDatabase {
    name: String,
}

impl FreshDatabase {
    pub fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("muster_team_{tag}_{}_{nanos}", std::process::id());
        psql("postgres", &format!("CREATE DATABASE {name}"));
        FreshDatabase { name }
    }

    /// The database's name, as the server knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn url(&self) -> String {
        format!("{}/{}", server(), self.name)
    }

    pub fn sql(&self, sql: &str) -> String {
        psql(&self.name, sql)
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}
