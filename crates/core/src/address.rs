//! Addressing: turning what a person or agent typed (`to`) into a target.
//!
//! Order: `op:<name>` or `#room` as written; then an exact session id; an
//! exact nickname; a unique id prefix; an operator name. Anything else is an
//! error listing the close matches, and nothing is sent.

use crate::limits::MIN_ID_PREFIX;
use crate::{CoreError, Match, Session, Target};

/// What the resolver needs to know about sessions: every known one, on the
/// roster or away (mail to an away session waits for its return).
pub trait Directory {
    fn by_id(&self, id: &str) -> Option<&Session>;
    fn by_nickname(&self, nickname: &str) -> Option<&Session>;
    fn sessions(&self) -> Box<dyn Iterator<Item = &Session> + '_>;
}

/// How alike two names are, 0.0 to 1.0 (Jaro-Winkler), for close-match hints.
pub fn similarity(a: &str, b: &str) -> f64 {
    strsim::jaro_winkler(a, b)
}

fn as_match(s: &Session) -> Match {
    Match {
        id: s.id.clone(),
        nickname: s.nickname.clone(),
        present: s.present(),
    }
}

fn operator_known(dir: &dyn Directory, name: &str) -> bool {
    dir.sessions().any(|s| s.operator == name)
}

/// Resolves a direct-message address. `self_operator` is the operator the
/// caller acts for, always addressable even with no sessions of their own.
pub fn resolve(
    dir: &dyn Directory,
    address: &str,
    self_operator: Option<&str>,
) -> Result<Target, CoreError> {
    let address = address.trim();
    if address.is_empty() {
        return Err(CoreError::invalid("to", "must not be empty"));
    }
    if let Some(name) = address.strip_prefix("op:") {
        if operator_known(dir, name) || self_operator == Some(name) {
            return Ok(Target::Operator(name.to_string()));
        }
        return Err(unknown(dir, address));
    }
    if address.starts_with('#') {
        return Err(CoreError::invalid(
            "to",
            "rooms take `broadcast`, not `send`",
        ));
    }
    if let Some(s) = dir.by_id(address).or_else(|| dir.by_nickname(address)) {
        return Ok(Target::Session(s.id.clone()));
    }
    if address.len() >= MIN_ID_PREFIX {
        let mut hits: Vec<&Session> = dir
            .sessions()
            .filter(|s| s.id.starts_with(address))
            .collect();
        match hits.len() {
            0 => {}
            1 => return Ok(Target::Session(hits[0].id.clone())),
            _ => {
                hits.sort_by(|a, b| a.id.cmp(&b.id));
                return Err(CoreError::AmbiguousRecipient {
                    address: address.to_string(),
                    matches: hits.into_iter().take(8).map(as_match).collect(),
                });
            }
        }
    }
    if operator_known(dir, address) || self_operator == Some(address) {
        return Ok(Target::Operator(address.to_string()));
    }
    Err(unknown(dir, address))
}

/// The unknown-recipient error, with up to five close matches by
/// similarity of nickname, id or operator name.
fn unknown(dir: &dyn Directory, address: &str) -> CoreError {
    let wanted = address
        .strip_prefix("op:")
        .unwrap_or(address)
        .to_lowercase();
    let mut scored: Vec<(f64, Match)> = Vec::new();
    let mut operators: Vec<String> = Vec::new();
    for s in dir.sessions() {
        let by_nick = strsim::jaro_winkler(&wanted, &s.nickname.to_lowercase());
        let head: String = wanted.chars().take(8).collect();
        let id_head: String = s.id.chars().take(head.chars().count()).collect();
        let by_id = strsim::jaro_winkler(&head, &id_head);
        let by_substring = if s.nickname.contains(&wanted) {
            0.95
        } else {
            0.0
        };
        scored.push((by_nick.max(by_id).max(by_substring), as_match(s)));
        if !s.operator.is_empty() && !operators.contains(&s.operator) {
            operators.push(s.operator.clone());
        }
    }
    for op in operators {
        let score = strsim::jaro_winkler(&wanted, &op.to_lowercase());
        let principal = format!("op:{op}");
        scored.push((
            score,
            Match {
                id: principal.clone(),
                nickname: principal,
                present: true,
            },
        ));
    }
    scored.retain(|(score, _)| *score >= 0.75);
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    CoreError::UnknownRecipient {
        address: address.to_string(),
        close: scored.into_iter().take(5).map(|(_, m)| m).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Dir(HashMap<String, Session>);
    impl Directory for Dir {
        fn by_id(&self, id: &str) -> Option<&Session> {
            self.0.get(id)
        }
        fn by_nickname(&self, n: &str) -> Option<&Session> {
            self.0.values().find(|s| s.nickname == n)
        }
        fn sessions(&self) -> Box<dyn Iterator<Item = &Session> + '_> {
            Box::new(self.0.values())
        }
    }

    fn dir() -> Dir {
        let mut m = HashMap::new();
        for (id, nick, op) in [
            ("aaaa1111-x", "swift-otter", "alice"),
            ("aaaa2222-y", "calm-heron", "bob"),
            ("bbbb3333-z", "quiet-lynx", "alice"),
        ] {
            let mut s = Session::new(id, nick, 0);
            s.operator = op.to_string();
            m.insert(id.to_string(), s);
        }
        Dir(m)
    }

    #[test]
    fn resolves_id_nickname_prefix_operator() {
        let d = dir();
        assert_eq!(
            resolve(&d, "aaaa1111-x", None).unwrap(),
            Target::Session("aaaa1111-x".into())
        );
        assert_eq!(
            resolve(&d, "calm-heron", None).unwrap(),
            Target::Session("aaaa2222-y".into())
        );
        assert_eq!(
            resolve(&d, "bbbb", None).unwrap(),
            Target::Session("bbbb3333-z".into())
        );
        assert_eq!(
            resolve(&d, "op:bob", None).unwrap(),
            Target::Operator("bob".into())
        );
        assert_eq!(
            resolve(&d, "alice", None).unwrap(),
            Target::Operator("alice".into())
        );
        assert_eq!(
            resolve(&d, "op:carol", Some("carol")).unwrap(),
            Target::Operator("carol".into())
        );
    }

    #[test]
    fn ambiguous_prefix_lists_both() {
        let err = resolve(&dir(), "aaaa", None).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, CoreError::AmbiguousRecipient { ref matches, .. } if matches.len() == 2)
        );
        assert!(
            text.contains("swift-otter") && text.contains("calm-heron"),
            "{text}"
        );
    }

    #[test]
    fn unknown_lists_close_matches() {
        let err = resolve(&dir(), "swift-oter", None).unwrap_err();
        assert!(
            err.to_string().contains("did you mean: swift-otter"),
            "{err}"
        );
        let err = resolve(&dir(), "zzzzzzzz", None).unwrap_err();
        assert!(
            matches!(err, CoreError::UnknownRecipient { ref close, .. } if close.is_empty()),
            "{err}"
        );
        assert!(resolve(&dir(), "op:mallory", None).is_err());
        assert!(resolve(&dir(), "", None).is_err());
    }
}
