//! Paths and globs that sessions reserve, and whether two of them can name
//! the same file.
//!
//! A pattern is kept relative to its repository root, `/`-separated and
//! normalized (no `.`, no `..`, no doubled slashes), so two sessions in one
//! repository compare the same file however they wrote it. Glob syntax:
//! `*` (any run of characters but `/`), `**` (any run, `/` included), `?`
//! (one character but `/`). A trailing `/` reserves a whole directory.

use crate::CoreError;

/// Longest pattern accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 1_024;

/// One element of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `?`: one character other than `/`.
    One,
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**`: any run of characters.
    GlobStar,
    /// Placed before the `GlobStar` and `/` of a `**/`: consumes nothing,
    /// but lets `**/` as a whole match nothing, so `src/**/*.rs` matches
    /// `src/a.rs`.
    DirSkip,
}

fn tokens(pattern: &str) -> Vec<Token> {
    let mut out = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        let token = match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                // `***` and longer mean the same as `**`.
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                if chars.peek() == Some(&'/') {
                    out.push(Token::DirSkip);
                }
                Token::GlobStar
            }
            '*' => Token::Star,
            '?' => Token::One,
            c => Token::Char(c),
        };
        out.push(token);
    }
    out
}

/// What characters a token can consume next, and whether it stays put
/// after; `None` for a token that consumes nothing.
fn step(t: Token) -> Option<(Class, bool)> {
    match t {
        Token::Char(c) => Some((Class::Exactly(c), false)),
        Token::One => Some((Class::NotSlash, false)),
        Token::Star => Some((Class::NotSlash, true)),
        Token::GlobStar => Some((Class::Any, true)),
        Token::DirSkip => None,
    }
}

#[derive(Debug, Clone, Copy)]
enum Class {
    Exactly(char),
    NotSlash,
    Any,
}

fn classes_meet(a: Class, b: Class) -> bool {
    match (a, b) {
        (Class::Exactly(x), Class::Exactly(y)) => x == y,
        (Class::Exactly(c), Class::NotSlash) | (Class::NotSlash, Class::Exactly(c)) => c != '/',
        _ => true,
    }
}

/// Whether some path matches both patterns (both already normalized).
/// Decided exactly by searching the product of the two patterns' automata.
pub fn overlaps(a: &str, b: &str) -> bool {
    let (a, b) = (tokens(a), tokens(b));
    let width = b.len() + 1;
    let mut seen = vec![false; (a.len() + 1) * width];
    let mut stack = vec![(0usize, 0usize)];
    while let Some((i, j)) = stack.pop() {
        if std::mem::replace(&mut seen[i * width + j], true) {
            continue;
        }
        if i == a.len() && j == b.len() {
            return true;
        }
        // A star may match nothing: move past it without consuming; `**/`
        // may match nothing at all, slash included.
        for (k, _) in skips(&a, i) {
            stack.push((k, j));
        }
        for (k, _) in skips(&b, j) {
            stack.push((i, k));
        }
        // Both consume one common character.
        if let (Some(&ta), Some(&tb)) = (a.get(i), b.get(j)) {
            let (Some((ca, stay_a)), Some((cb, stay_b))) = (step(ta), step(tb)) else {
                continue;
            };
            if classes_meet(ca, cb) {
                stack.push((
                    if stay_a { i } else { i + 1 },
                    if stay_b { j } else { j + 1 },
                ));
            }
        }
    }
    false
}

/// Positions reachable from `i` without consuming a character.
fn skips(t: &[Token], i: usize) -> impl Iterator<Item = (usize, ())> {
    let next = match t.get(i) {
        Some(Token::Star | Token::GlobStar) => [Some(i + 1), None],
        // Past `DirSkip, GlobStar, '/'` at once, or on into the `**`.
        Some(Token::DirSkip) => [Some(i + 1), Some(i + 3)],
        _ => [None, None],
    };
    next.into_iter().flatten().map(|k| (k, ()))
}

/// Whether a concrete path matches a pattern.
pub fn matches(pattern: &str, path: &str) -> bool {
    overlaps(pattern, &path.replace(['*', '?'], "\u{FFFD}"))
}

/// Normalizes a path or glob relative to a repository: `cwd` is where the
/// session works, `root` the repository root (both absolute, `/`-separated).
/// Relative input is taken from `cwd`. Returns the pattern relative to `root`.
pub fn normalize(input: &str, cwd: &str, root: &str) -> Result<String, CoreError> {
    let invalid = |reason: String| CoreError::invalid("path", reason);
    if input.trim().is_empty() {
        return Err(invalid("must not be empty".into()));
    }
    if input.len() > MAX_PATTERN_LEN {
        return Err(invalid(format!("longer than {MAX_PATTERN_LEN} bytes")));
    }
    if let Some(c) = input
        .chars()
        .find(|c| c.is_control() || matches!(c, '[' | ']' | '{' | '}' | '\\'))
    {
        return Err(invalid(format!(
            "{input:?} contains {c:?}; globs use only *, ** and ? (character classes and braces are not supported)"
        )));
    }
    let absolute = if input.starts_with('/') {
        input.to_string()
    } else {
        format!("{cwd}/{input}")
    };
    let directory = input.ends_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in absolute.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(invalid(format!(
                        "{input:?} climbs above the filesystem root"
                    )));
                }
            }
            p => parts.push(p),
        }
    }
    let root_parts: Vec<&str> = root.split('/').filter(|p| !p.is_empty()).collect();
    if parts.len() < root_parts.len() || parts[..root_parts.len()] != root_parts[..] {
        return Err(invalid(format!(
            "{input:?} is outside the repository {root}"
        )));
    }
    let mut relative = parts[root_parts.len()..].join("/");
    if relative.is_empty() || directory {
        // The root itself or a directory: everything under it.
        relative = if relative.is_empty() {
            "**".to_string()
        } else {
            format!("{relative}/**")
        };
    }
    Ok(relative)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn literal_and_glob_overlaps() {
        assert!(overlaps("src/a.rs", "src/a.rs"));
        assert!(!overlaps("src/a.rs", "src/b.rs"));
        assert!(overlaps("src/*.rs", "src/a.rs"));
        assert!(!overlaps("src/*.rs", "src/x/a.rs"), "* does not cross /");
        assert!(overlaps("src/**", "src/x/y/a.rs"));
        assert!(overlaps("src/**/*.rs", "src/a.rs"), "** may be empty");
        assert!(overlaps("*.md", "README.?d"));
        assert!(overlaps("src/*/mod.rs", "src/**"));
        assert!(!overlaps("docs/**", "src/**"));
        assert!(overlaps("**", "anything/at/all"));
        assert!(!overlaps("a?c", "a/c"), "? does not match /");
    }

    #[test]
    fn normalizes_against_the_repository() {
        let (root, cwd) = ("/home/u/repo", "/home/u/repo/crates/core");
        assert_eq!(
            normalize("src/lib.rs", cwd, root).unwrap(),
            "crates/core/src/lib.rs"
        );
        assert_eq!(
            normalize("./src//lib.rs", cwd, root).unwrap(),
            "crates/core/src/lib.rs"
        );
        assert_eq!(
            normalize("../../README.md", cwd, root).unwrap(),
            "README.md"
        );
        assert_eq!(
            normalize("/home/u/repo/docs/", cwd, root).unwrap(),
            "docs/**"
        );
        assert_eq!(
            normalize("**/*.rs", cwd, root).unwrap(),
            "crates/core/**/*.rs"
        );
        assert_eq!(normalize("/home/u/repo", cwd, root).unwrap(), "**");
        assert!(normalize("../../../etc/passwd", cwd, root)
            .unwrap_err()
            .to_string()
            .contains("outside"));
        assert!(normalize("/etc/passwd", cwd, root).is_err());
        assert!(
            normalize("/home/u/repository/x", cwd, root).is_err(),
            "a sibling with the same prefix is outside"
        );
        assert!(normalize("src/[ab].rs", cwd, root)
            .unwrap_err()
            .to_string()
            .contains("not supported"));
        assert!(normalize("", cwd, root).is_err());
        assert!(normalize(&"a".repeat(2_000), cwd, root).is_err());
    }

    /// Every string over `alphabet` up to `max_len` characters.
    fn all_paths(alphabet: &[char], max_len: usize) -> Vec<String> {
        let mut out = vec![String::new()];
        let mut frontier = vec![String::new()];
        for _ in 0..max_len {
            let mut next = Vec::new();
            for s in &frontier {
                for c in alphabet {
                    next.push(format!("{s}{c}"));
                }
            }
            out.extend(next.iter().cloned());
            frontier = next;
        }
        out
    }

    /// A matcher written the slow, obvious way, to check `overlaps` against.
    fn naive_match(p: &[char], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('*') if p.get(1) == Some(&'*') && p.get(2) == Some(&'*') => {
                naive_match(&p[1..], s)
            }
            Some('*') if p.get(1) == Some(&'*') && p.get(2) == Some(&'/') => {
                naive_match(&p[3..], s) || (0..=s.len()).any(|k| naive_match(&p[2..], &s[k..]))
            }
            Some('*') if p.get(1) == Some(&'*') => {
                (0..=s.len()).any(|k| naive_match(&p[2..], &s[k..]))
            }
            Some('*') => (0..=s.len())
                .take_while(|&k| !s[..k].contains(&'/'))
                .any(|k| naive_match(&p[1..], &s[k..])),
            Some('?') => s.first().is_some_and(|c| *c != '/') && naive_match(&p[1..], &s[1..]),
            Some(c) => s.first() == Some(c) && naive_match(&p[1..], &s[1..]),
        }
    }

    fn pattern() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("a"),
            Just("b"),
            Just("/"),
            Just("*"),
            Just("**"),
            Just("?")
        ];
        proptest::collection::vec(token, 0..5).prop_map(|v| v.concat())
    }

    proptest! {
        // Overlap agrees with brute force: some short path matches both.
        #[test]
        fn overlap_agrees_with_brute_force(a in pattern(), b in pattern()) {
            let paths = all_paths(&['a', 'b', '/'], 6);
            let (pa, pb): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
            let witness = paths.iter().any(|s| {
                let s: Vec<char> = s.chars().collect();
                naive_match(&pa, &s) && naive_match(&pb, &s)
            });
            // Patterns of at most 4 tokens always have a witness this short if any.
            prop_assert_eq!(overlaps(&a, &b), witness, "a={:?} b={:?}", a, b);
        }

        #[test]
        fn overlap_is_symmetric(a in pattern(), b in pattern()) {
            prop_assert_eq!(overlaps(&a, &b), overlaps(&b, &a));
        }

        #[test]
        fn a_pattern_overlaps_every_path_it_matches(a in pattern(), s in "[ab/]{0,6}") {
            let pa: Vec<char> = a.chars().collect();
            let ps: Vec<char> = s.chars().collect();
            prop_assert_eq!(matches(&a, &s), naive_match(&pa, &ps));
        }
    }
}
