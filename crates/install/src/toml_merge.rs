//! Adding and removing muster's entries in Codex's `config.toml` with
//! `toml_edit`, so the user's comments, order and formatting survive.

use serde_json::Value as Json;
use toml_edit::{Array, DocumentMut, InlineTable, Item, Table, TableLike, Value};

use super::edit::{EditError, Undo};

/// One thing muster puts into a TOML file.
#[derive(Debug, Clone, PartialEq)]
pub enum TomlEdit {
    /// A table muster owns at `path` (e.g. `mcp_servers.muster`) holding `entries`;
    /// keys the user added to it are kept on update; uninstall removes the table.
    Table {
        path: Vec<String>,
        entries: Vec<(String, Json)>,
    },
    /// A setting muster needs (e.g. `features.codex_hooks = true`). Uninstall takes it
    /// back only if install added or changed it.
    Setting { path: Vec<String>, value: Json },
}

pub fn parse(text: &str) -> Result<DocumentMut, EditError> {
    text.parse::<DocumentMut>().map_err(|e| {
        let (line, column) = match e.span() {
            Some(span) => line_column(text, span.start),
            None => (1, 1),
        };
        EditError::Syntax {
            line,
            column,
            reason: e.message().trim().to_string(),
        }
    })
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, column)
}

/// A TOML value as JSON, for comparing what is there with what muster wants
/// regardless of how the user formatted it.
fn to_json(value: &Value) -> Json {
    match value {
        Value::String(s) => Json::String(s.value().clone()),
        Value::Integer(i) => Json::from(*i.value()),
        Value::Float(f) => {
            serde_json::Number::from_f64(*f.value()).map_or(Json::Null, Json::Number)
        }
        Value::Boolean(b) => Json::Bool(*b.value()),
        Value::Datetime(d) => Json::String(d.value().to_string()),
        Value::Array(a) => Json::Array(a.iter().map(to_json).collect()),
        Value::InlineTable(t) => {
            Json::Object(t.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect())
        }
    }
}

fn from_json(value: &Json) -> Value {
    match value {
        Json::Null => Value::from(""),
        Json::Bool(b) => Value::from(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::from(i),
            None => Value::from(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(items) => Value::Array(items.iter().map(from_json).collect::<Array>()),
        Json::Object(map) => {
            let mut table = InlineTable::new();
            for (k, v) in map {
                table.insert(k, from_json(v));
            }
            Value::InlineTable(table)
        }
    }
}

/// The whole document as JSON (tables as objects), for reading muster's entries back.
pub fn doc_json(doc: &DocumentMut) -> Json {
    table_json(doc.as_table())
}

fn table_json(table: &dyn TableLike) -> Json {
    let mut map = serde_json::Map::new();
    for (key, item) in table.iter() {
        let value = match item {
            Item::Value(v) => to_json(v),
            Item::Table(t) => table_json(t),
            Item::ArrayOfTables(tables) => {
                Json::Array(tables.iter().map(|t| table_json(t)).collect())
            }
            Item::None => continue,
        };
        map.insert(key.to_string(), value);
    }
    Json::Object(map)
}

fn item_json(item: &Item) -> Option<Json> {
    item.as_value().map(to_json)
}

/// The table at `path`, created where missing (as implicit tables, so only the
/// innermost header is written) and recorded in `undo`.
fn table_at<'a>(
    doc: &'a mut DocumentMut,
    path: &[String],
    implicit: bool,
    undo: &mut Vec<Undo>,
) -> Result<&'a mut dyn TableLike, EditError> {
    let mut here: &mut dyn TableLike = doc.as_table_mut();
    for (depth, key) in path.iter().enumerate() {
        if here.get(key).is_none() {
            let mut table = Table::new();
            table.set_implicit(implicit);
            here.insert(key, Item::Table(table));
            undo.push(Undo::created(&path[..=depth]));
        }
        here = match here.get_mut(key).and_then(Item::as_table_like_mut) {
            Some(table) => table,
            None => {
                return Err(EditError::Shape(format!(
                    "`{}` is not a table",
                    path[..=depth].join(".")
                )))
            }
        };
    }
    Ok(here)
}

/// Applies muster's edits, returning what was created or replaced.
pub fn install(doc: &mut DocumentMut, edits: &[TomlEdit]) -> Result<Vec<Undo>, EditError> {
    let mut undo = Vec::new();
    for edit in edits {
        match edit {
            TomlEdit::Table { path, entries } => {
                let (key, parent) = path
                    .split_last()
                    .ok_or_else(|| EditError::Shape("empty path".into()))?;
                let parent = table_at(doc, parent, true, &mut undo)?;
                if parent.get(key).is_none() {
                    parent.insert(key, Item::Table(Table::new()));
                    undo.push(Undo::created(path));
                }
                let table = parent
                    .get_mut(key)
                    .and_then(Item::as_table_like_mut)
                    .ok_or_else(|| {
                        EditError::Shape(format!("`{}` is not a table", path.join(".")))
                    })?;
                for (k, wanted) in entries {
                    if table.get(k).and_then(item_json).as_ref() != Some(wanted) {
                        table.insert(k, Item::Value(from_json(wanted)));
                    }
                }
            }
            TomlEdit::Setting { path, value } => {
                let (key, parent) = path
                    .split_last()
                    .ok_or_else(|| EditError::Shape("empty path".into()))?;
                let table = table_at(doc, parent, false, &mut undo)?;
                match table.get(key) {
                    Some(item) if item_json(item).as_ref() == Some(value) => {}
                    Some(item) => {
                        undo.push(Undo {
                            path: path.clone(),
                            prior: Some(item.to_string().trim().to_string()),
                        });
                        table.insert(key, Item::Value(from_json(value)));
                    }
                    None => {
                        undo.push(Undo::created(path));
                        table.insert(key, Item::Value(from_json(value)));
                    }
                }
            }
        }
    }
    Ok(undo)
}

fn parent_of<'a>(doc: &'a mut DocumentMut, path: &[String]) -> Option<&'a mut dyn TableLike> {
    let (_, parent) = path.split_last()?;
    let mut here: &mut dyn TableLike = doc.as_table_mut();
    for key in parent {
        here = here.get_mut(key)?.as_table_like_mut()?;
    }
    Some(here)
}

/// Removes muster's tables, takes back the settings install added or changed (if
/// they still hold muster's value), and prunes emptied tables install created.
pub fn uninstall(doc: &mut DocumentMut, edits: &[TomlEdit], undo: &[Undo]) {
    for edit in edits {
        match edit {
            TomlEdit::Table { path, .. } => {
                if let (Some(parent), Some(key)) = (parent_of(doc, path), path.last()) {
                    parent.remove(key);
                }
            }
            TomlEdit::Setting { path, value } => {
                let Some(record) = undo.iter().find(|u| &u.path == path) else {
                    continue;
                };
                let (Some(parent), Some(key)) = (parent_of(doc, path), path.last()) else {
                    continue;
                };
                if parent.get(key).and_then(item_json).as_ref() != Some(value) {
                    continue; // the user changed it since: theirs now
                }
                match record.prior.as_deref().map(str::parse::<Value>) {
                    None => {
                        parent.remove(key);
                    }
                    Some(Ok(prior)) => {
                        parent.insert(key, Item::Value(prior));
                    }
                    Some(Err(_)) => {}
                }
            }
        }
    }
    let mut created: Vec<&Undo> = undo.iter().filter(|u| u.prior.is_none()).collect();
    created.sort_by_key(|u| std::cmp::Reverse(u.path.len()));
    for entry in created {
        let Some(parent) = parent_of(doc, &entry.path) else {
            continue;
        };
        let Some(key) = entry.path.last() else {
            continue;
        };
        if parent
            .get(key)
            .and_then(Item::as_table_like)
            .is_some_and(|t| t.is_empty())
        {
            parent.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn edits() -> Vec<TomlEdit> {
        vec![
            TomlEdit::Table {
                path: vec!["mcp_servers".into(), "muster".into()],
                entries: vec![
                    ("command".into(), json!("/bin/muster")),
                    ("args".into(), json!(["mcp"])),
                    (
                        "env".into(),
                        json!({"MUSTER_HARNESS": "codex", "MUSTER_CHANNELS": "off"}),
                    ),
                ],
            },
            TomlEdit::Setting {
                path: vec!["features".into(), "codex_hooks".into()],
                value: json!(true),
            },
        ]
    }

    const USER: &str = "# my codex config\nmodel = \"o4\"  # keep this\n\n[mcp_servers.other]\ncommand = \"x\"\n\n[features]\nweb = true\n";

    #[test]
    fn install_adds_muster_and_keeps_comments() {
        // Proves the user's comments, keys and tables survive and muster's table and flag are added.
        let mut doc = parse(USER).unwrap();
        install(&mut doc, &edits()).unwrap();
        let text = doc.to_string();
        assert!(
            text.starts_with(
                USER.trim_end_matches('\n')
                    .split("[features]")
                    .next()
                    .unwrap()
            ),
            "{text}"
        );
        assert!(text.contains("model = \"o4\"  # keep this"), "{text}");
        assert!(
            text.contains("[features]\nweb = true\ncodex_hooks = true"),
            "{text}"
        );
        assert!(
            text.contains("[mcp_servers.muster]\ncommand = \"/bin/muster\"\nargs = [\"mcp\"]\n"),
            "{text}"
        );
        assert!(!text.contains("[mcp_servers]\n"), "{text}");
        let again = {
            let mut d = parse(&text).unwrap();
            install(&mut d, &edits()).unwrap();
            d.to_string()
        };
        assert_eq!(again, text, "second install changed the file");
    }

    #[test]
    fn install_into_an_empty_file() {
        // Proves a fresh config.toml gets exactly muster's table and the hooks feature.
        let mut doc = parse("").unwrap();
        install(&mut doc, &edits()).unwrap();
        let text = doc.to_string();
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(parsed["features"]["codex_hooks"].as_bool(), Some(true));
        assert_eq!(
            parsed["mcp_servers"]["muster"]["env"]["MUSTER_HARNESS"].as_str(),
            Some("codex")
        );
    }

    #[test]
    fn uninstall_restores_the_user_document() {
        // Proves structural uninstall returns the user's text, even after they edited elsewhere.
        let mut doc = parse(USER).unwrap();
        let undo = install(&mut doc, &edits()).unwrap();
        let mut edited = parse(&format!("{}\n[extra]\nx = 1\n", doc)).unwrap();
        uninstall(&mut edited, &edits(), &undo);
        assert_eq!(edited.to_string(), format!("{USER}\n[extra]\nx = 1\n"));

        let mut fresh = parse("").unwrap();
        let undo = install(&mut fresh, &edits()).unwrap();
        uninstall(&mut fresh, &edits(), &undo);
        assert_eq!(fresh.to_string().trim(), "");
    }

    #[test]
    fn uninstall_puts_back_a_setting_install_changed() {
        // Proves codex_hooks=false before install is false again after uninstall, and a user-set true stays.
        let mut doc = parse("[features]\ncodex_hooks = false\n").unwrap();
        let undo = install(&mut doc, &edits()).unwrap();
        assert!(doc.to_string().contains("codex_hooks = true"));
        uninstall(&mut doc, &edits(), &undo);
        assert_eq!(doc.to_string(), "[features]\ncodex_hooks = false\n");

        let mut doc = parse("[features]\ncodex_hooks = true\n").unwrap();
        let undo = install(&mut doc, &edits()).unwrap();
        uninstall(&mut doc, &edits(), &undo);
        assert_eq!(doc.to_string(), "[features]\ncodex_hooks = true\n");
    }

    #[test]
    fn bad_toml_reports_its_line() {
        // Proves a syntax error names the line it is on.
        let err = parse("a = 1\nb = [\n").unwrap_err();
        let EditError::Syntax { line, .. } = err else {
            panic!("{err:?}")
        };
        assert!(line >= 2, "{line}");
    }
}
