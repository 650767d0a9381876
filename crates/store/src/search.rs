//! What a search's text means, the same for every backend: the words in it,
//! each matched as the start of a word of a message's body, all of them
//! somewhere in the body, in any order, case aside.
//!
//! A word is a run of letters and digits; everything else separates words
//! and is never passed to a backend's query language (so `"`, `*`, `AND(`
//! or `:` typed by a person are separators, never syntax). Each backend
//! tokenizes bodies the same way (SQLite FTS5's `unicode61`, PostgreSQL's
//! `simple` configuration over the body with its punctuation replaced by
//! spaces) and gets these words, each to quote for its own query language.

/// The longest word PostgreSQL indexes (longer ones are left out of a
/// `tsvector`); a search for a longer word matches nothing in either backend.
pub const MAX_WORD_BYTES: usize = 2_047;

/// The search's words, in order, each once; `None` when it has no word
/// (only punctuation) or one too long for any index, so nothing matches.
pub fn search_words(text: &str) -> Option<Vec<&str>> {
    let mut words: Vec<&str> = Vec::new();
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() || words.contains(&word) {
            continue;
        }
        if word.len() > MAX_WORD_BYTES {
            return None;
        }
        words.push(word);
    }
    (!words.is_empty()).then_some(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_runs_of_letters_and_digits() {
        assert_eq!(
            search_words("crates/store-sqlite lib.rs").unwrap(),
            ["crates", "store", "sqlite", "lib", "rs"]
        );
        assert_eq!(
            search_words("Café \"naïve\" 日本語 v1.2").unwrap(),
            ["Café", "naïve", "日本語", "v1", "2"]
        );
        assert_eq!(search_words("a a A").unwrap(), ["a", "A"]);
    }

    #[test]
    fn query_syntax_is_only_separators() {
        assert_eq!(
            search_words("AND( x* OR \"y").unwrap(),
            ["AND", "x", "OR", "y"]
        );
        assert_eq!(search_words("\"*():^-+'"), None);
        assert_eq!(search_words(""), None);
    }

    #[test]
    fn a_word_no_index_holds_matches_nothing() {
        let long = "x".repeat(MAX_WORD_BYTES + 1);
        assert_eq!(search_words(&format!("ok {long}")), None);
        assert!(search_words(&"x".repeat(MAX_WORD_BYTES)).is_some());
    }
}
