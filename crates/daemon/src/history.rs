//! Reading stored mail back: `GET /api/v1/messages` (history, newest
//! first, in pages) and `GET /api/v1/search` (the messages whose body has
//! the words), both read from the store, and the `search_messages` tool.
//!
//! Who reads what: the daemon's own user, operator and admin tokens read
//! everyone's messages; an agent token reads only as one of its own
//! sessions (`as=`), and then sees what that session sent or has a
//! delivery for. Anyone who names `as=` gets that reader's view.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use muster_core::api::{MessagePage, PAGE_DEFAULT, PAGE_MAX, SEARCH_MAX_CHARS};
use muster_core::token::{Grant, Scope};
use muster_core::{CoreError, Target};
use muster_store::{HistoryQuery, SearchQuery};
use serde::Deserialize;

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::hub::Hub;
use crate::scopes::{grant_of, must_read_everything, Credential};

/// The longest cursor taken: message ids are 26 characters.
const MAX_CURSOR: usize = 64;

#[derive(Deserialize)]
pub(crate) struct PageParams {
    #[serde(rename = "as")]
    as_: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    before: Option<String>,
    q: Option<String>,
}

pub(crate) async fn history(
    State(hub): State<Arc<Hub>>,
    credential: Option<Extension<Credential>>,
    ApiQuery(p): ApiQuery<PageParams>,
) -> Result<Json<MessagePage>, ApiError> {
    let within = hub.history_query(grant_of(&credential), &p)?;
    hub.history_page(within).await.map(Json)
}

pub(crate) async fn search(
    State(hub): State<Arc<Hub>>,
    credential: Option<Extension<Credential>>,
    ApiQuery(p): ApiQuery<PageParams>,
) -> Result<Json<MessagePage>, ApiError> {
    let text = search_text("q", p.q.as_deref())?;
    let within = hub.history_query(grant_of(&credential), &p)?;
    hub.search_page(text, within).await.map(Json)
}

/// The search text (named `field` where it came from), refused when it is
/// missing, blank or too long.
fn search_text(field: &str, q: Option<&str>) -> Result<String, ApiError> {
    let q = q.map(str::trim).unwrap_or("");
    if q.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{field} is required: the words to search message bodies for"
        )));
    }
    if q.chars().count() > SEARCH_MAX_CHARS {
        return Err(ApiError::bad_request(format!(
            "{field} is too long: at most {SEARCH_MAX_CHARS} characters"
        )));
    }
    Ok(q.to_string())
}

fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(PAGE_DEFAULT),
        Some(n) if (1..=PAGE_MAX).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "limit {n} is out of range: 1 to {PAGE_MAX} (default {PAGE_DEFAULT})"
        ))),
    }
}

fn cursor(before: Option<&str>) -> Result<Option<String>, ApiError> {
    match before {
        None => Ok(None),
        Some(b) if !b.is_empty() && b.len() <= MAX_CURSOR => Ok(Some(b.to_string())),
        Some(b) => Err(ApiError::bad_request(format!(
            "before {b:?} is not a message id: pass a page's `next` as it came"
        ))),
    }
}

/// Asks the store for one more than the page holds, so the answer knows
/// whether more follow.
fn page(mut messages: Vec<muster_core::Message>, limit: usize) -> MessagePage {
    let partial = messages.len() > limit;
    messages.truncate(limit);
    let next = if partial {
        messages.last().map(|m| m.id.clone())
    } else {
        None
    };
    MessagePage {
        messages,
        next,
        partial,
    }
}

impl Hub {
    /// The store query a request asks for, once it is known the caller
    /// may read it.
    fn history_query(
        &self,
        grant: Option<&Grant>,
        p: &PageParams,
    ) -> Result<HistoryQuery, ApiError> {
        let limit = page_limit(p.limit)?;
        let before = cursor(p.before.as_deref())?;
        let as_ = p.as_.as_deref().map(str::trim).filter(|a| !a.is_empty());
        if as_.is_none() && grant.is_some_and(|g| g.scope == Scope::Agent) {
            must_read_everything(
                grant,
                "reading every session's messages (name one of its sessions: as=, or --as)",
            )?;
        }
        self.authorize_read(grant, as_)?;
        let st = self.lock();
        let reader = match as_ {
            Some(as_) => Some(st.principal(Some(as_), &self.config.operator)?.key()),
            None => None,
        };
        let to = match p.to.as_deref() {
            Some(to) => Some(self.history_target(&st, to)?),
            None => None,
        };
        Ok(HistoryQuery {
            reader,
            to,
            before,
            limit,
        })
    }

    /// `#room` is a room; otherwise an address as `send` takes it (a
    /// session, a person), else the name of a room that exists.
    fn history_target(&self, st: &crate::state::State, to: &str) -> Result<Target, ApiError> {
        let to = to.trim();
        if let Some(room) = to.strip_prefix('#') {
            muster_core::validate::name("room", room)?;
            return Ok(Target::Room(room.to_string()));
        }
        match st.resolve(to, &self.config.operator) {
            Ok(target) => Ok(target),
            Err(CoreError::UnknownRecipient { .. })
                if muster_core::is_automatic_room(to) || st.rooms.get(to).is_some() =>
            {
                Ok(Target::Room(to.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn history_page(&self, mut q: HistoryQuery) -> Result<MessagePage, ApiError> {
        let limit = q.limit;
        q.limit = limit + 1;
        let found = self.store.history(q).await.map_err(ApiError::unread)?;
        Ok(page(found, limit))
    }

    pub(crate) async fn search_page(
        &self,
        text: String,
        mut within: HistoryQuery,
    ) -> Result<MessagePage, ApiError> {
        let limit = within.limit;
        within.limit = limit + 1;
        let query = SearchQuery { text, within };
        let found = self.store.search(query).await.map_err(ApiError::unread)?;
        Ok(page(found, limit))
    }

    /// `search_messages`: a search as the calling session reads.
    pub(crate) async fn search_as(
        &self,
        session: &str,
        query: &str,
        limit: Option<usize>,
    ) -> Result<MessagePage, ApiError> {
        let text = search_text("query", Some(query))?;
        let within = HistoryQuery {
            reader: Some(session.to_string()),
            to: None,
            before: None,
            limit: page_limit(limit)?,
        };
        self.search_page(text, within).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str) -> muster_core::Message {
        muster_core::Message {
            id: id.into(),
            from: "a".into(),
            from_nickname: "a".into(),
            to: Target::Session("b".into()),
            reply_to: None,
            body: String::new(),
            sent_at: 0,
            via: Default::default(),
        }
    }

    #[test]
    fn a_page_says_whether_more_follow_and_where_they_start() {
        let full = page(vec![m("3"), m("2"), m("1")], 2);
        assert!(full.partial);
        assert_eq!(full.next.as_deref(), Some("2"));
        assert_eq!(full.messages.len(), 2);
        let last = page(vec![m("1")], 2);
        assert!(!last.partial);
        assert_eq!(last.next, None);
    }

    #[test]
    fn bad_limits_texts_and_cursors_are_refused() {
        assert_eq!(page_limit(None).unwrap(), PAGE_DEFAULT);
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(PAGE_MAX + 1)).is_err());
        assert_eq!(page_limit(Some(PAGE_MAX)).unwrap(), PAGE_MAX);
        assert!(search_text("q", None).is_err());
        assert!(search_text("q", Some("   ")).is_err());
        assert!(search_text("q", Some(&"é".repeat(SEARCH_MAX_CHARS + 1))).is_err());
        assert!(search_text("q", Some(&"é".repeat(SEARCH_MAX_CHARS))).is_ok());
        assert!(cursor(Some("")).is_err());
        assert!(cursor(Some(&"x".repeat(MAX_CURSOR + 1))).is_err());
        assert_eq!(cursor(Some("01J")).unwrap().as_deref(), Some("01J"));
    }
}
