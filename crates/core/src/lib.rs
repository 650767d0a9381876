//! muster's model, with no I/O: what a session, a message, a delivery and a
//! room are; how addresses resolve; how nicknames are made; when a session is
//! swept; and how mail is framed for an agent's context.
//!
//! Everything here is a pure function of its arguments. Time is passed in as
//! milliseconds since the Unix epoch so tests can drive it.

pub mod address;
pub mod api;
pub mod duration;
pub mod error;
pub mod inbox;
pub mod limits;
pub mod link;
pub mod liveness;
pub mod model;
pub mod nickname;
pub mod paths;
pub mod protocol;
pub mod token;
pub mod tools;
pub mod validate;
pub mod wake;

pub use error::{CoreError, Match};
pub use model::*;

/// Milliseconds since the Unix epoch (wall clock) or, for in-memory windows,
/// since an arbitrary origin. Every decision that depends on time takes one.
pub type Millis = i64;
