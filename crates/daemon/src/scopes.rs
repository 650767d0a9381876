//! What a caller may do, by how it got in ([`Credential`]); the hub's checks
//! that apply these rules to its sessions are in `authorize`.
//!
//! The daemon's own user (local key, Unix socket, one-time dashboard link)
//! and admin tokens may do everything. Any other token binds identity: it
//! acts only for the sessions it registered (a session's `owner`), never
//! for one another token or the daemon's own user registered. An `agent`
//! token acts for nobody else (not as a person either) and reads what
//! concerns its sessions; an `operator` token acts as a person (`op:…`)
//! and reads everything.

use axum::http::StatusCode;
use axum::Extension;
use muster_core::token::{Grant, Scope};
use muster_core::Session;

use crate::error::ApiError;

/// How a caller got in, for what it may do and what it records (see
/// `SentVia`): with a token (the daemon's bootstrap `--token`, or one made
/// with `muster token create`), or as the daemon's own user on its machine
/// (the local key, the Unix socket, a dashboard signed in by a one-time
/// link, or a daemon that asks nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Token(Grant),
    Local,
}

impl Credential {
    /// The token's grant, if the caller came with one.
    pub fn grant(&self) -> Option<&Grant> {
        match self {
            Credential::Token(grant) => Some(grant),
            Credential::Local => None,
        }
    }
}

/// The grant a request came with, if any: `None` is the daemon's own user
/// (a route without the guard, as the fuzz targets run them, is too).
pub(crate) fn grant_of(credential: &Option<Extension<Credential>>) -> Option<&Grant> {
    credential.as_ref().and_then(|c| c.0.grant())
}

fn forbidden(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, code, message)
}

/// Whether `grant` may act for `session` (`None`: not known yet, so the
/// act would register it, as the grant's own).
pub(crate) fn may_act_for(
    grant: Option<&Grant>,
    id: &str,
    session: Option<&Session>,
) -> Result<(), ApiError> {
    let Some(grant) = grant.filter(|g| g.is_bound()) else {
        return Ok(());
    };
    match session {
        None => Ok(()),
        Some(s) if s.owner.is_some() && s.owner == grant.token_id => Ok(()),
        Some(s) => Err(forbidden(
            "forbidden_session",
            format!(
                "token {:?} may act only for the sessions it registered; session {id} ({}) was registered {}",
                grant.name,
                s.nickname,
                if s.owner.is_some() { "by another token" } else { "by the daemon's own user" }
            ),
        )),
    }
}

/// Whether `grant` may act as person `name`.
pub(crate) fn may_speak_as_person(grant: Option<&Grant>, name: &str) -> Result<(), ApiError> {
    match grant {
        Some(g) if g.scope == Scope::Agent => Err(forbidden(
            "forbidden_session",
            format!(
                "token {:?} is an agent token: it acts only for the sessions it registered, not as a person (op:{name}); name one of its sessions with --as",
                g.name
            ),
        )),
        _ => Ok(()),
    }
}

/// Whether `grant` may hold run `run`'s wake stream: a token bound to its
/// sessions may not take a run from another's waker (`held_by`: the owner
/// of the waker holding it now, if one does), nor hold one that wakes a
/// session it may not act for (`sessions`: those bound to the run).
pub(crate) fn may_hold_run(
    grant: Option<&Grant>,
    run: &str,
    held_by: Option<Option<&str>>,
    sessions: &[&Session],
) -> Result<(), ApiError> {
    let Some(grant) = grant.filter(|g| g.is_bound()) else {
        return Ok(());
    };
    if held_by.is_some_and(|owner| owner != grant.token_id.as_deref()) {
        return Err(forbidden(
            "forbidden_run",
            format!(
                "run {run} has a waker another token (or the daemon's own user) opened; token {:?} may not take it",
                grant.name
            ),
        ));
    }
    match sessions
        .iter()
        .find(|s| may_act_for(Some(grant), &s.id, Some(s)).is_err())
    {
        Some(s) => Err(forbidden(
            "forbidden_run",
            format!(
                "run {run} wakes session {} ({}), which token {:?} did not register",
                s.id, s.nickname, grant.name
            ),
        )),
        None => Ok(()),
    }
}

/// Reads of everyone's mail and events are for operators and admins.
pub(crate) fn must_read_everything(grant: Option<&Grant>, what: &str) -> Result<(), ApiError> {
    match grant {
        Some(g) if g.scope == Scope::Agent => Err(forbidden(
            "forbidden_scope",
            format!(
                "token {:?} is an agent token: {what} is for operator and admin tokens",
                g.name
            ),
        )),
        _ => Ok(()),
    }
}

/// Only the daemon's own user and admin tokens manage the daemon itself.
pub(crate) fn must_administer(credential: &Credential, what: &str) -> Result<(), ApiError> {
    match credential.grant() {
        Some(g) if g.scope != Scope::Admin => Err(forbidden(
            "forbidden_scope",
            format!(
                "token {:?} has scope {}: {what} is for an admin token (or the daemon's own user)",
                g.name,
                g.scope.as_str()
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(id: &str, scope: Scope) -> Grant {
        Grant {
            token_id: Some(id.into()),
            name: format!("name-{id}"),
            scope,
        }
    }

    fn owned_by(owner: Option<&str>) -> Session {
        let mut s = Session::new("s1", "calm-heron", 1);
        s.owner = owner.map(str::to_string);
        s
    }

    #[test]
    fn a_bound_token_acts_only_for_its_own_sessions() {
        let alice = grant("t1", Scope::Agent);
        let ops = grant("t2", Scope::Operator);
        let mine = owned_by(Some("t1"));
        let local = owned_by(None);
        assert!(may_act_for(Some(&alice), "s1", Some(&mine)).is_ok());
        assert!(
            may_act_for(Some(&alice), "s1", None).is_ok(),
            "a new one is its own"
        );
        for (who, session) in [(&ops, &mine), (&alice, &local), (&ops, &local)] {
            let err = may_act_for(Some(who), "s1", Some(session)).unwrap_err();
            assert_eq!(err.status, StatusCode::FORBIDDEN);
            assert_eq!(err.code, "forbidden_session");
        }
        let admin = grant("t3", Scope::Admin);
        assert!(may_act_for(Some(&admin), "s1", Some(&mine)).is_ok());
        assert!(may_act_for(Some(&Grant::bootstrap()), "s1", Some(&mine)).is_ok());
        assert!(
            may_act_for(None, "s1", Some(&mine)).is_ok(),
            "the daemon's own user"
        );
    }

    #[test]
    fn only_operators_speak_as_people_and_read_everything() {
        let alice = grant("t1", Scope::Agent);
        let ops = grant("t2", Scope::Operator);
        assert!(may_speak_as_person(Some(&alice), "alice").is_err());
        assert!(may_speak_as_person(Some(&ops), "alice").is_ok());
        assert!(must_read_everything(Some(&alice), "the event stream").is_err());
        assert!(must_read_everything(Some(&ops), "the event stream").is_ok());
        let token = |g: &Grant| Credential::Token(g.clone());
        assert!(must_administer(&token(&ops), "tokens").is_err());
        assert!(must_administer(&token(&grant("t3", Scope::Admin)), "tokens").is_ok());
        assert!(must_administer(&Credential::Local, "tokens").is_ok());
    }
}
