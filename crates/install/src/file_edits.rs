//! What the installer does to one file: muster's edits to it as JSON, as TOML,
//! or the whole file, and the file's text with them installed or taken out.

use crate::edit::{EditError, Undo};
use crate::json_merge::{self, JsonDoc, JsonEdit};
use crate::toml_merge::{self, TomlEdit};

/// How muster's part of a file is written.
#[derive(Debug, Clone)]
pub enum FileEdits {
    Json(Vec<JsonEdit>),
    Toml(Vec<TomlEdit>),
    /// A file that is muster's alone (the opencode plugin).
    Whole(String),
}

impl FileEdits {
    pub fn format_name(&self) -> &'static str {
        match self {
            FileEdits::Json(_) => "JSON",
            FileEdits::Toml(_) => "TOML",
            FileEdits::Whole(_) => "text",
        }
    }

    /// The file's text with muster installed, and what install created or replaced.
    /// `current` is None when the file does not exist.
    pub fn install(&self, current: Option<&str>) -> Result<(String, Vec<Undo>), EditError> {
        match self {
            FileEdits::Json(edits) => {
                let mut doc = match current {
                    Some(text) => JsonDoc::parse(text)?,
                    None => JsonDoc::empty(),
                };
                let undo = json_merge::install(&mut doc, edits)?;
                Ok((doc.render(), undo))
            }
            FileEdits::Toml(edits) => {
                let mut doc = toml_merge::parse(current.unwrap_or(""))?;
                let undo = toml_merge::install(&mut doc, edits)?;
                Ok((doc.to_string(), undo))
            }
            FileEdits::Whole(text) => Ok((text.clone(), Vec::new())),
        }
    }

    /// The file's text with muster's entries taken out, or None if nothing of the file
    /// should remain (muster's own file, or an emptied file that install created).
    pub fn uninstall(
        &self,
        current: &str,
        undo: &[Undo],
        created: bool,
    ) -> Result<Option<String>, EditError> {
        let text = match self {
            FileEdits::Json(edits) => {
                let mut doc = JsonDoc::parse(current)?;
                json_merge::uninstall(&mut doc, edits, undo);
                if created && doc.root.is_empty() {
                    return Ok(None);
                }
                doc.render()
            }
            FileEdits::Toml(edits) => {
                let mut doc = toml_merge::parse(current)?;
                toml_merge::uninstall(&mut doc, edits, undo);
                let text = doc.to_string();
                if created && text.trim().is_empty() {
                    return Ok(None);
                }
                text
            }
            FileEdits::Whole(_) => return Ok(None),
        };
        Ok(Some(text))
    }
}
