//! Link frames (`muster_core::link`), as the daemon decodes a shim's text
//! frame (`serde_json::from_str::<ClientFrame>` in the daemon's `link`) and
//! the shim decodes the daemon's.

use muster_core::link::{ClientFrame, ServerFrame};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Any text: decoding never panics, and a frame that decodes, encoded
/// again, decodes to the same frame.
pub fn link_frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    round_trips::<ClientFrame>(text);
    round_trips::<ServerFrame>(text);
}

fn round_trips<F>(text: &str)
where
    F: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let Ok(frame) = serde_json::from_str::<F>(text) else {
        return;
    };
    let again = serde_json::to_string(&frame).expect("a decoded frame encodes");
    let back = serde_json::from_str::<F>(&again)
        .unwrap_or_else(|e| panic!("{again} does not decode again: {e}"));
    assert_eq!(back, frame, "{again} decodes to another frame");
}
