//! muster's footprint in a model request: the tokens every request of an
//! agent session carries because muster is installed. Three parts:
//!
//! - the server instructions (`INSTRUCTIONS`, from the MCP handshake);
//! - the identity note a session gets at its start (`render_identity`),
//!   with a typical roster of three live peers;
//! - every tool, serialized as `tools/list` answers it (`tool_list()`):
//!   name, description and JSON schema.
//!
//! Tokens are counted with a real BPE tokenizer, tiktoken's `o200k_base`
//! (bundled with the `tiktoken-rs` crate, so this works offline). Claude's
//! own tokenizer is not public; o200k_base is a close, reproducible proxy,
//! and the figure is for comparing muster with itself and with the target.

use anyhow::Context;
use muster_core::inbox::render_identity;
use muster_core::tools::INSTRUCTIONS;
use muster_core::{Activity, Session};
use serde_json::{json, Value};
use tiktoken_rs::CoreBPE;

use crate::report::{thousands, Row, Section, Verdict};

/// Tokens muster may add to every model request, all parts together.
pub const TARGET_TOKENS: usize = 1_200;
pub const TOKENIZER: &str = "o200k_base";

/// A session as the roster shows a typical one.
fn session(id: &str, nickname: &str, branch: &str, activity: Activity, status: &str) -> Session {
    let mut s = Session::new(id, nickname, 1_764_496_800_000);
    s.harness = "claude".into();
    s.project = "muster".into();
    s.branch = branch.into();
    s.cwd = "/home/dev/muster".into();
    s.activity = activity;
    s.status = status.into();
    s
}

/// The identity note with a typical 3-peer roster.
pub fn typical_identity() -> String {
    let me = session(
        "4f1c2a9e-7b3d-4e8a-9c21-5d6e7f809a1b",
        "swift-otter",
        "main",
        Activity::Busy,
        "",
    );
    let peers = [
        session(
            "8a2b3c4d-1e2f-4a5b-8c6d-7e8f9a0b1c2d",
            "calm-heron",
            "main",
            Activity::Busy,
            "migrating the store schema",
        ),
        session(
            "1d2e3f4a-5b6c-4d7e-8f9a-0b1c2d3e4f5a",
            "brave-lynx",
            "fix-hooks",
            Activity::Idle,
            "",
        ),
        session(
            "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b",
            "quiet-wren",
            "docs",
            Activity::Busy,
            "README harness matrix",
        ),
    ];
    let refs: Vec<&Session> = peers.iter().collect();
    render_identity(&me, &refs, refs.len())
}

/// Each tool as `tools/list` serializes it: (name, JSON text).
pub fn tool_texts() -> anyhow::Result<Vec<(String, String)>> {
    muster_mcp::tool_list()
        .iter()
        .map(|tool| {
            let text = serde_json::to_string(tool).context("a tool does not serialize")?;
            let value: Value = serde_json::from_str(&text)?;
            let name = value["name"].as_str().unwrap_or("?").to_string();
            Ok((name, text))
        })
        .collect()
}

/// Counts in one place so every part uses the same tokenizer.
pub struct Counter {
    bpe: CoreBPE,
}

impl Counter {
    pub fn new() -> anyhow::Result<Counter> {
        Ok(Counter {
            bpe: tiktoken_rs::o200k_base().context("cannot load the o200k_base vocabulary")?,
        })
    }

    pub fn tokens(&self, text: &str) -> usize {
        self.bpe.encode_ordinary(text).len()
    }
}

pub struct Part {
    pub name: String,
    pub chars: usize,
    pub tokens: usize,
}

/// The footprint's texts, part by part: instructions, identity, then each tool.
pub fn parts_text() -> anyhow::Result<Vec<(String, String)>> {
    let mut parts = vec![
        ("instructions".to_string(), INSTRUCTIONS.to_string()),
        ("identity (3 peers)".to_string(), typical_identity()),
    ];
    for (name, text) in tool_texts()? {
        parts.push((format!("tool {name}"), text));
    }
    Ok(parts)
}

fn texts(parts: &[(String, String)]) -> Vec<&str> {
    parts.iter().map(|(_, t)| t.as_str()).collect()
}

/// The footprint, part by part, counted.
pub fn measure(counter: &Counter) -> anyhow::Result<Vec<Part>> {
    Ok(parts_text()?
        .into_iter()
        .map(|(name, text)| Part {
            chars: text.chars().count(),
            tokens: counter.tokens(&text),
            name,
        })
        .collect())
}

pub fn run() -> anyhow::Result<Section> {
    let counter = Counter::new()?;
    let parts = measure(&counter)?;
    let total: usize = parts.iter().map(|p| p.tokens).sum();
    let tools: usize = parts
        .iter()
        .filter(|p| p.name.starts_with("tool "))
        .map(|p| p.tokens)
        .sum();
    let tool_count = parts.iter().filter(|p| p.name.starts_with("tool ")).count();
    let mut rows: Vec<Row> = parts
        .iter()
        .map(|p| {
            Row::info(
                format!("footprint: {}", p.name),
                format!(
                    "{} tok ({} chars)",
                    thousands(p.tokens as u64),
                    thousands(p.chars as u64)
                ),
            )
        })
        .collect();
    rows.push(Row::info(
        format!("footprint: all {tool_count} tool schemas"),
        format!("{} tok", thousands(tools as u64)),
    ));
    rows.push(Row::new(
        format!("footprint: total ({TOKENIZER})"),
        format!("{} tok", thousands(total as u64)),
        format!("< {} tok", thousands(TARGET_TOKENS as u64)),
        Verdict::under(total as f64, TARGET_TOKENS as f64),
    ));
    // The same text through OpenAI's previous vocabulary, for comparison only.
    let cl100k = tiktoken_rs::cl100k_base().context("cannot load the cl100k_base vocabulary")?;
    let total_cl100k: usize = texts(&parts_text()?)
        .iter()
        .map(|t| cl100k.encode_ordinary(t).len())
        .sum();
    rows.push(Row::info(
        "footprint: total (cl100k_base, for comparison)",
        format!("{} tok", thousands(total_cl100k as u64)),
    ));
    let json = json!({
        "tokenizer": TOKENIZER,
        "total_tokens_cl100k_base": total_cl100k,
        "parts": parts
            .iter()
            .map(|p| json!({"part": p.name, "tokens": p.tokens, "chars": p.chars}))
            .collect::<Vec<_>>(),
        "tools_tokens": tools,
        "total_tokens": total,
        "target_tokens": TARGET_TOKENS,
        "pass": total < TARGET_TOKENS,
    });
    Ok(Section {
        name: "footprint",
        json,
        rows,
        errors: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_with_a_real_bpe() {
        let c = Counter::new().unwrap();
        assert_eq!(c.tokens(""), 0);
        // A common word is one token; a long run of it is far fewer tokens than characters.
        assert_eq!(c.tokens("hello"), 1);
        let text = "send_message ".repeat(50);
        assert!(c.tokens(&text) < text.len() / 3);
    }

    #[test]
    fn every_part_is_there() {
        let c = Counter::new().unwrap();
        let parts = measure(&c).unwrap();
        assert_eq!(parts[0].name, "instructions");
        assert!(parts[1].name.starts_with("identity"));
        assert!(parts.iter().any(|p| p.name == "tool send_message"));
        assert_eq!(parts.len(), 2 + muster_core::tools::TOOLS.len());
        assert!(parts.iter().all(|p| p.tokens > 0));
        let identity = typical_identity();
        assert!(identity.contains("calm-heron") && identity.contains("quiet-wren"));
    }
}
