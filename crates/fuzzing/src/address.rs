//! Addresses: the stored form (`Target::parse_address`), what a person
//! types (`muster_core::address::resolve`), and the CLI's daemon URL
//! (`normalize_url`).

use muster_core::address::{resolve, Directory};
use muster_core::{Session, Target};

use crate::cli_config::normalize_url;

/// A few sessions to resolve against (ids, nicknames, operators).
struct Sessions(Vec<Session>);

impl Directory for Sessions {
    fn by_id(&self, id: &str) -> Option<&Session> {
        self.0.iter().find(|s| s.id == id)
    }
    fn by_nickname(&self, nickname: &str) -> Option<&Session> {
        self.0.iter().find(|s| s.nickname == nickname)
    }
    fn sessions(&self) -> Box<dyn Iterator<Item = &Session> + '_> {
        Box::new(self.0.iter())
    }
}

fn sessions() -> Sessions {
    let made = [
        ("aaaa1111-x", "swift-otter", "alice"),
        ("aaaa2222-y", "calm-heron", "bob"),
        ("bbbb3333-z", "quiet-lynx", "alice"),
    ];
    Sessions(
        made.iter()
            .map(|(id, nickname, operator)| {
                let mut s = Session::new(id, nickname, 0);
                s.operator = operator.to_string();
                s
            })
            .collect(),
    )
}

/// Any text: a stored address reads back to itself; resolving it names a
/// known session or operator or fails (never a room: rooms take
/// `broadcast`); a daemon URL the CLI accepts is accepted again as it is.
pub fn address(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    assert_eq!(Target::parse_address(text).address(), text);
    resolves_to_known(text);
    if let Ok(url) = normalize_url(text) {
        assert_eq!(normalize_url(&url).as_ref(), Ok(&url), "not idempotent");
        assert!(!url.ends_with('/'), "{url:?} keeps a trailing slash");
    }
}

fn resolves_to_known(text: &str) {
    let dir = sessions();
    match resolve(&dir, text, Some("carol")) {
        Ok(Target::Session(id)) => assert!(dir.by_id(&id).is_some(), "unknown {id:?}"),
        Ok(Target::Operator(name)) => assert!(
            name == "carol" || dir.0.iter().any(|s| s.operator == name),
            "unknown operator {name:?}"
        ),
        Ok(Target::Room(room)) => panic!("send resolved to room {room:?}"),
        Err(_) => {}
    }
}
