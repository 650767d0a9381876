//! What a caller may do, by how it got in (`access::Credential`).
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

use crate::access::Credential;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::state::Principal;

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
fn may_speak_as_person(grant: Option<&Grant>, name: &str) -> Result<(), ApiError> {
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

impl Hub {
    /// Whether `grant` may act as `as_` (a session id, nickname or prefix;
    /// `op:<name>`; none for the daemon's operator), as the API's routes
    /// resolve it.
    pub(crate) fn authorize(
        &self,
        grant: Option<&Grant>,
        as_: Option<&str>,
    ) -> Result<(), ApiError> {
        if !grant.is_some_and(|g| g.is_bound()) {
            return Ok(());
        }
        let st = self.lock();
        match st.principal(as_, &self.config.operator)? {
            Principal::Session(id) => may_act_for(grant, &id, st.session(&id)),
            Principal::Operator(name) => may_speak_as_person(grant, &name),
        }
    }

    /// Whether `grant` may act for the session with this exact id (a hook's,
    /// a link's): one not known yet it may register.
    pub(crate) fn authorize_session(
        &self,
        grant: Option<&Grant>,
        id: &str,
    ) -> Result<(), ApiError> {
        if !grant.is_some_and(|g| g.is_bound()) {
            return Ok(());
        }
        may_act_for(grant, id, self.lock().session(id))
    }

    /// Whether `grant` may read as `as_`: an operator reads as anyone, an
    /// agent token only as its own sessions.
    pub(crate) fn authorize_read(
        &self,
        grant: Option<&Grant>,
        as_: Option<&str>,
    ) -> Result<(), ApiError> {
        match grant {
            Some(g) if g.scope == Scope::Agent => self.authorize(grant, as_),
            _ => Ok(()),
        }
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
