//! One module per command (but `hook`, `mcp` and `run`), each with its own
//! `Args`. A client command's `run` returns the exit code on success; failures
//! come back as a `ClientError` for `main` to report.

pub mod completions;
pub mod dashboard;
pub mod doctor;
pub mod guard;
pub mod inbox;
pub mod install;
pub mod man;
pub mod reserve;
pub mod rooms;
pub mod roster;
pub mod search;
pub mod send;
pub mod serve;
pub mod service;
pub mod status;
pub mod tail;
pub mod token;
pub mod top;
