//! Durations as the CLI reads them (`muster_core::duration`).

use std::time::Duration;

use muster_core::duration::{format_duration, parse_duration};

/// Any text: parsing never panics, and a parsed duration written back
/// parses to itself, in its canonical text. The first eight bytes, as a
/// count of milliseconds, format to text that parses back to them.
pub fn duration(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(d) = parse_duration(text) {
            round_trips(d);
        }
    }
    if let Some(bytes) = data.get(..8) {
        let ms = u64::from_le_bytes(bytes.try_into().expect("eight bytes"));
        round_trips(Duration::from_millis(ms));
    }
}

fn round_trips(d: Duration) {
    let written = format_duration(d);
    assert_eq!(
        parse_duration(&written),
        Ok(d),
        "{written:?} does not parse back"
    );
}
