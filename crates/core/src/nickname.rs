//! Nicknames: short, readable, unique among known sessions, and derived from
//! the session id so the same id asks for the same name first.

const ADJECTIVES: &[&str] = &[
    "amber", "brave", "calm", "clever", "cosmic", "crisp", "daring", "eager", "fuzzy", "gentle",
    "golden", "happy", "hazel", "humble", "jolly", "keen", "lively", "lucky", "mellow", "merry",
    "misty", "nimble", "noble", "olive", "plucky", "polite", "proud", "quick", "quiet", "rapid",
    "rosy", "rustic", "sandy", "scarlet", "shiny", "silent", "silver", "sleepy", "smooth", "snowy",
    "solar", "spry", "steady", "stormy", "sunny", "swift", "tidy", "tiny", "tranquil", "vivid",
    "warm", "wild", "wise", "witty", "zesty", "bold", "bright", "cheery", "cozy", "dapper",
    "frosty", "grand", "icy", "jade",
];

const ANIMALS: &[&str] = &[
    "otter", "badger", "falcon", "heron", "lynx", "marten", "ocelot", "panda", "puffin", "quokka",
    "raven", "salmon", "tapir", "walrus", "wombat", "yak", "zebra", "beaver", "bison", "cobra",
    "coyote", "crane", "dingo", "dolphin", "eagle", "ferret", "finch", "gecko", "gibbon", "hare",
    "ibis", "jackal", "koala", "lemur", "llama", "magpie", "marmot", "moose", "newt", "orca",
    "osprey", "owl", "parrot", "pelican", "penguin", "pika", "plover", "robin", "seal", "shrew",
    "sparrow", "stoat", "swan", "tern", "toucan", "trout", "turtle", "viper", "vole", "weasel",
    "wolf", "wren", "alpaca", "bobcat",
];

/// FNV-1a: a stable hash (unlike std's, which is seeded per process), so an
/// id maps to the same first choice on every daemon and every run.
fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The 64-bit finalizer of MurmurHash3 (`fmix64`): every input bit flips
/// each output bit with probability about one half. FNV-1a alone leaves its
/// high bits nearly unchanged when only the last byte differs (`dash-a`,
/// `dash-b`, `dash-c` all drew the same animal).
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

fn candidate(id: &str, attempt: u64) -> String {
    let h = mix(fnv1a(
        id.as_bytes(),
        attempt.wrapping_mul(0x9E37_79B9_7F4A_7C15),
    ));
    let adjective = ADJECTIVES[(h % ADJECTIVES.len() as u64) as usize];
    let animal = ANIMALS[((h >> 32) % ANIMALS.len() as u64) as usize];
    format!("{adjective}-{animal}")
}

/// A nickname for `id` that `taken` does not already hold. Tries a few
/// hashed adjective-animal pairs, then numbers the first one.
pub fn generate(id: &str, taken: impl Fn(&str) -> bool) -> String {
    for attempt in 0..16 {
        let name = candidate(id, attempt);
        if !taken(&name) {
            return name;
        }
    }
    let base = candidate(id, 0);
    (2u64..)
        .map(|n| format!("{base}-{n}"))
        .find(|name| !taken(name))
        .expect("an unbounded sequence always has a free name")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn same_id_same_first_choice() {
        assert_eq!(generate("abc", |_| false), generate("abc", |_| false));
    }

    #[test]
    fn unique_among_many() {
        let mut taken = HashSet::new();
        for i in 0..10_000 {
            let name = generate(&format!("session-{i}"), |n| taken.contains(n));
            assert!(name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
            assert!(taken.insert(name), "duplicate nickname generated");
        }
    }

    /// The distinct animals and adjectives of the first choices for `ids`.
    fn spread(ids: &[String]) -> (usize, usize) {
        let names: Vec<String> = ids.iter().map(|id| candidate(id, 0)).collect();
        let part = |i: usize| {
            names
                .iter()
                .map(|n| n.split('-').nth(i).unwrap().to_string())
                .collect::<HashSet<_>>()
                .len()
        };
        (part(0), part(1))
    }

    #[test]
    fn ids_differing_in_the_last_character_spread_across_the_table() {
        // Proves 26 ids that differ only in their last character get at least 18 distinct animals and 18 distinct
        // adjectives of 64 each (FNV-1a alone gave 1 animal); likewise ids differing in one middle character.
        let last: Vec<String> = ('a'..='z').map(|c| format!("dash-{c}")).collect();
        let (adjectives, animals) = spread(&last);
        assert!(animals >= 18, "{animals} animals for dash-a..dash-z");
        assert!(
            adjectives >= 18,
            "{adjectives} adjectives for dash-a..dash-z"
        );
        let middle: Vec<String> = ('a'..='z').map(|c| format!("1a2b3c4d-{c}-5e6f")).collect();
        let (adjectives, animals) = spread(&middle);
        assert!(
            animals >= 18 && adjectives >= 18,
            "{adjectives} adjectives, {animals} animals"
        );
        assert_ne!(candidate("dash-a", 0), candidate("dash-b", 0));
    }
}
