//! The hub's side of what a caller may do: whether a token may act as the
//! principal a request names, resolved against the roster (the rules
//! themselves are in `scopes`).

use muster_core::token::{Grant, Scope};

use crate::error::ApiError;
use crate::hub::Hub;
use crate::scopes::{may_act_for, may_speak_as_person};
use crate::state::Principal;

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
