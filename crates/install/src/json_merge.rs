//! Adding and removing muster's entries in a harness's JSON settings file
//! without disturbing anything else: keys keep their order (serde_json's
//! `preserve_order`), the user's hooks keep their place, and the file keeps
//! its indentation and final newline.

use serde_json::{Map, Value};

use super::edit::{EditError, Undo};

/// One thing muster puts into a JSON settings file.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonEdit {
    /// An object muster owns at `path` (e.g. `mcpServers.muster`). Keys the user added
    /// to it are kept on update; uninstall removes the whole entry.
    Entry { path: Vec<String>, value: Value },
    /// A string in the array at `path` (e.g. `enabledMcpjsonServers: ["muster"]`).
    ListItem { path: Vec<String>, item: String },
    /// A hook group appended to `hooks.<event>`; muster's groups are recognised by
    /// their commands (see `is_muster_command`), or for Claude Code's http hooks
    /// by their URLs (see `is_muster_url`).
    Hook { event: String, group: Value },
    /// muster's hooks taken out of every event in this file, the user's left
    /// where they are: they live in another file now (Claude Code's http
    /// hooks, in local settings rather than the team's).
    DropHooks,
}

/// A parsed JSON file plus how it was laid out, so it can be written back alike.
#[derive(Debug, Clone)]
pub struct JsonDoc {
    pub root: Map<String, Value>,
    indent: String,
    trailing_newline: bool,
}

impl JsonDoc {
    /// Parses a settings file; an empty (or all-whitespace) file is an empty object.
    pub fn parse(text: &str) -> Result<JsonDoc, EditError> {
        if text.trim().is_empty() {
            return Ok(JsonDoc::empty());
        }
        let value: Value = serde_json::from_str(text).map_err(|e| EditError::Syntax {
            line: e.line(),
            column: e.column(),
            reason: strip_position(&e.to_string()),
        })?;
        let Value::Object(root) = value else {
            return Err(EditError::Shape(
                "its top level is not a JSON object".into(),
            ));
        };
        Ok(JsonDoc {
            root,
            indent: detect_indent(text),
            trailing_newline: text.ends_with('\n') || text.is_empty(),
        })
    }

    pub fn empty() -> JsonDoc {
        JsonDoc {
            root: Map::new(),
            indent: "  ".into(),
            trailing_newline: true,
        }
    }

    pub fn render(&self) -> String {
        use serde::Serialize;
        let mut out = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(self.indent.as_bytes());
        let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
        // Serializing a Map into a Vec cannot fail.
        let _ = self.root.serialize(&mut ser);
        let mut text = String::from_utf8(out).unwrap_or_default();
        if self.trailing_newline {
            text.push('\n');
        }
        text
    }
}

/// serde_json appends " at line L column C"; the caller reports the position itself.
fn strip_position(reason: &str) -> String {
    match reason.rfind(" at line ") {
        Some(i) => reason[..i].to_string(),
        None => reason.to_string(),
    }
}

/// The indentation unit of the first indented line (two spaces if none).
fn detect_indent(text: &str) -> String {
    text.lines()
        .skip(1)
        .map(|line| {
            line.chars()
                .take_while(|c| *c == ' ' || *c == '\t')
                .collect::<String>()
        })
        .find(|lead| !lead.is_empty())
        .unwrap_or_else(|| "  ".into())
}

/// True if a hook command runs muster's hook client: `<…/muster> hook <event> …`.
pub fn is_muster_command(command: &str) -> bool {
    let (program, rest) = first_shell_word(command.trim_start());
    let name = program.rsplit(['/', '\\']).next().unwrap_or(&program);
    let name = name.strip_suffix(".exe").unwrap_or(name);
    name == "muster" && rest.trim_start().starts_with("hook ")
}

/// The first word of a `sh -c` command with its quoting undone, and the rest.
pub(crate) fn first_shell_word(command: &str) -> (String, &str) {
    let mut word = String::new();
    let mut chars = command.char_indices();
    let mut quote: Option<char> = None;
    while let Some((i, c)) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => return (word, &command[i..]),
            (None, '\'') | (None, '"') => quote = Some(c),
            (None, '\\') | (Some('"'), '\\') => {
                if let Some((_, next)) = chars.next() {
                    word.push(next);
                }
            }
            (Some(q), c) if c == q => quote = None,
            (_, c) => word.push(c),
        }
    }
    (word, "")
}

/// True if an http hook's URL is muster's hook route:
/// `http(s)://<address>/hook/<event>?harness=<harness>`.
pub fn is_muster_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let Some((_, event)) = path.rsplit_once("/hook/") else {
        return false;
    };
    muster_core::protocol::HookEvent::parse(event).is_some()
        && query.split('&').any(|pair| pair.starts_with("harness="))
}

/// The daemon address an http hook of muster's posts to (its URL without
/// `/hook/<event>?…`).
pub fn muster_url_base(url: &str) -> Option<&str> {
    is_muster_url(url)
        .then(|| url.rsplit_once("/hook/").map(|(base, _)| base))
        .flatten()
}

fn group_hooks(group: &Value) -> Option<&Vec<Value>> {
    group.get("hooks").and_then(Value::as_array)
}

fn is_muster_hook(hook: &Value) -> bool {
    match hook.get("type").and_then(Value::as_str) {
        Some("http") => hook
            .get("url")
            .and_then(Value::as_str)
            .is_some_and(is_muster_url),
        _ => hook
            .get("command")
            .and_then(Value::as_str)
            .is_some_and(is_muster_command),
    }
}

fn group_has_muster(group: &Value) -> bool {
    group_hooks(group).is_some_and(|hooks| hooks.iter().any(is_muster_hook))
}

/// The object at `path`, created (and recorded in `undo`) where missing.
fn object_at<'a>(
    root: &'a mut Map<String, Value>,
    path: &[String],
    undo: &mut Vec<Undo>,
) -> Result<&'a mut Map<String, Value>, EditError> {
    let mut here = root;
    for (depth, key) in path.iter().enumerate() {
        if !here.contains_key(key) {
            here.insert(key.clone(), Value::Object(Map::new()));
            undo.push(Undo::created(&path[..=depth]));
        }
        here = match here.get_mut(key) {
            Some(Value::Object(map)) => map,
            _ => {
                return Err(EditError::Shape(format!(
                    "`{}` is not an object",
                    path[..=depth].join(".")
                )))
            }
        };
    }
    Ok(here)
}

/// Applies muster's edits to `doc`, returning what was created or replaced (for a
/// later structural uninstall). Editing an already-installed file changes nothing.
pub fn install(doc: &mut JsonDoc, edits: &[JsonEdit]) -> Result<Vec<Undo>, EditError> {
    let mut undo = Vec::new();
    for edit in edits {
        match edit {
            JsonEdit::Entry { path, value } => {
                let (key, parent) = path
                    .split_last()
                    .ok_or_else(|| EditError::Shape("empty path".into()))?;
                let map = object_at(&mut doc.root, parent, &mut undo)?;
                match (map.get_mut(key), value) {
                    (Some(Value::Object(existing)), Value::Object(wanted)) => {
                        for (k, v) in wanted {
                            if existing.get(k) != Some(v) {
                                existing.insert(k.clone(), v.clone());
                            }
                        }
                    }
                    (Some(existing), _) => *existing = value.clone(),
                    (None, _) => {
                        map.insert(key.clone(), value.clone());
                    }
                }
            }
            JsonEdit::ListItem { path, item } => {
                let (key, parent) = path
                    .split_last()
                    .ok_or_else(|| EditError::Shape("empty path".into()))?;
                let map = object_at(&mut doc.root, parent, &mut undo)?;
                if !map.contains_key(key) {
                    map.insert(key.clone(), Value::Array(Vec::new()));
                    undo.push(Undo::created(path));
                }
                let Some(Value::Array(list)) = map.get_mut(key) else {
                    return Err(EditError::Shape(format!(
                        "`{}` is not an array",
                        path.join(".")
                    )));
                };
                if !list.iter().any(|v| v.as_str() == Some(item)) {
                    list.push(Value::String(item.clone()));
                }
            }
            JsonEdit::Hook { event, group } => {
                let hooks = object_at(&mut doc.root, &["hooks".to_string()], &mut undo)?;
                if !hooks.contains_key(event) {
                    hooks.insert(event.clone(), Value::Array(Vec::new()));
                    undo.push(Undo::created(&["hooks".to_string(), event.clone()]));
                }
                let Some(Value::Array(groups)) = hooks.get_mut(event) else {
                    return Err(EditError::Shape(format!("`hooks.{event}` is not an array")));
                };
                place_hook_group(groups, group);
            }
            JsonEdit::DropHooks => drop_muster_hooks(&mut doc.root),
        }
    }
    Ok(undo)
}

/// Takes muster's hooks out of every event; a group, an event's list or the
/// `hooks` object emptied by that goes too (the user's own empty ones stay).
fn drop_muster_hooks(root: &mut Map<String, Value>) {
    let Some(Value::Object(hooks)) = root.get_mut("hooks") else {
        return;
    };
    let before = hooks.len();
    hooks.retain(|_, groups| {
        let Value::Array(list) = groups else {
            return true;
        };
        if !list.iter().any(group_has_muster) {
            return true;
        }
        list.retain_mut(|group| {
            if !group_has_muster(group) {
                return true;
            }
            strip_muster_hooks(group);
            !group_hooks(group).is_some_and(Vec::is_empty)
        });
        !list.is_empty()
    });
    if hooks.is_empty() && before > 0 {
        root.shift_remove("hooks");
    }
}

/// Puts muster's group into an event's list: left alone if already there, updated
/// in place if an older muster group is there, else appended after the user's.
fn place_hook_group(groups: &mut Vec<Value>, wanted: &Value) {
    let ours: Vec<usize> = (0..groups.len())
        .filter(|&i| group_has_muster(&groups[i]))
        .collect();
    let Some(&first) = ours.first() else {
        groups.push(wanted.clone());
        return;
    };
    if ours.len() == 1 && groups[first] == *wanted {
        return;
    }
    // Drop muster's extra groups (from older installs), keeping the user's hooks in them.
    for &i in ours.iter().skip(1).rev() {
        strip_muster_hooks(&mut groups[i]);
        if group_hooks(&groups[i]).is_some_and(Vec::is_empty) {
            groups.remove(i);
        }
    }
    let all_ours =
        group_hooks(&groups[first]).is_some_and(|hooks| hooks.iter().all(is_muster_hook));
    if all_ours {
        groups[first] = wanted.clone();
    } else if let (Some(Value::Array(hooks)), Some(new_hook)) = (
        groups[first].get_mut("hooks"),
        group_hooks(wanted).and_then(|h| h.first()),
    ) {
        // The user put their own hook into muster's group: replace only muster's.
        if let Some(pos) = hooks.iter().position(is_muster_hook) {
            hooks[pos] = new_hook.clone();
            let mut seen = false;
            hooks.retain(|h| {
                let keep = !is_muster_hook(h) || !seen;
                seen |= is_muster_hook(h);
                keep
            });
        }
    }
}

fn strip_muster_hooks(group: &mut Value) {
    if let Some(Value::Array(hooks)) = group.get_mut("hooks") {
        hooks.retain(|h| !is_muster_hook(h));
    }
}

fn get_path<'a>(root: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter().try_fold(root.get(first)?, |v, k| v.get(k))
}

fn parent_map<'a>(
    root: &'a mut Map<String, Value>,
    path: &[String],
) -> Option<&'a mut Map<String, Value>> {
    let (_, parent) = path.split_last()?;
    parent
        .iter()
        .try_fold(root, |map, key| map.get_mut(key)?.as_object_mut())
}

/// Removes muster's entries (wherever the user left them) and, where `undo` says
/// install created a container that is now empty, the container too.
pub fn uninstall(doc: &mut JsonDoc, edits: &[JsonEdit], undo: &[Undo]) {
    for edit in edits {
        match edit {
            JsonEdit::Entry { path, .. } => {
                if let (Some(map), Some(key)) = (parent_map(&mut doc.root, path), path.last()) {
                    map.shift_remove(key);
                }
            }
            JsonEdit::ListItem { path, item } => {
                if let (Some(map), Some(key)) = (parent_map(&mut doc.root, path), path.last()) {
                    if let Some(Value::Array(list)) = map.get_mut(key) {
                        list.retain(|v| v.as_str() != Some(item));
                    }
                }
            }
            JsonEdit::Hook { .. } | JsonEdit::DropHooks => {}
        }
    }
    if edits
        .iter()
        .any(|e| matches!(e, JsonEdit::Hook { .. } | JsonEdit::DropHooks))
    {
        if let Some(Value::Object(hooks)) = doc.root.get_mut("hooks") {
            for groups in hooks.values_mut() {
                if let Value::Array(groups) = groups {
                    // A group emptied by taking muster's hooks out goes too; the user's stay.
                    groups.retain_mut(|group| {
                        if !group_has_muster(group) {
                            return true;
                        }
                        strip_muster_hooks(group);
                        !group_hooks(group).is_some_and(Vec::is_empty)
                    });
                }
            }
        }
    }
    // Deepest first, so a created parent is seen empty after its created child went.
    let mut created: Vec<&Undo> = undo.iter().filter(|u| u.prior.is_none()).collect();
    created.sort_by_key(|u| std::cmp::Reverse(u.path.len()));
    for entry in created {
        let empty = match get_path(&doc.root, &entry.path) {
            Some(Value::Object(m)) => m.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        if empty {
            if let (Some(map), Some(key)) =
                (parent_map(&mut doc.root, &entry.path), entry.path.last())
            {
                map.shift_remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(String::from).collect()
    }

    fn hook_group(cmd: &str) -> Value {
        json!({"hooks": [{"type": "command", "command": cmd, "timeout": 5}]})
    }

    fn edits() -> Vec<JsonEdit> {
        vec![
            JsonEdit::Entry {
                path: path("mcpServers.muster"),
                value: json!({"command": "/bin/muster", "args": ["mcp"]}),
            },
            JsonEdit::ListItem {
                path: path("enabledMcpjsonServers"),
                item: "muster".into(),
            },
            JsonEdit::Hook {
                event: "Stop".into(),
                group: hook_group("/bin/muster hook stop --harness claude"),
            },
        ]
    }

    const USER: &str = r#"{
    "zeta": 1,
    "mcpServers": {"other": {"command": "x"}},
    "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "say done"}]}]},
    "alpha": [1, 2]
}"#;

    #[test]
    fn install_keeps_user_keys_in_order_and_appends_hooks() {
        // Proves muster's entries are added after the user's, whose keys keep their order and indent.
        let mut doc = JsonDoc::parse(USER).unwrap();
        install(&mut doc, &edits()).unwrap();
        let text = doc.render();
        let keys: Vec<&String> = doc.root.keys().collect();
        assert_eq!(
            keys,
            [
                "zeta",
                "mcpServers",
                "hooks",
                "alpha",
                "enabledMcpjsonServers"
            ]
        );
        assert!(text.starts_with("{\n    \"zeta\": 1,"), "{text}");
        let stop = &doc.root["hooks"]["Stop"];
        assert_eq!(stop[0]["hooks"][0]["command"], "say done");
        assert_eq!(
            stop[1]["hooks"][0]["command"],
            "/bin/muster hook stop --harness claude"
        );
        assert_eq!(doc.root["mcpServers"]["other"]["command"], "x");
    }

    #[test]
    fn install_twice_is_a_no_op() {
        // Proves a second install renders byte-identical output.
        let mut doc = JsonDoc::parse(USER).unwrap();
        install(&mut doc, &edits()).unwrap();
        let once = doc.render();
        let mut again = JsonDoc::parse(&once).unwrap();
        install(&mut again, &edits()).unwrap();
        assert_eq!(again.render(), once);
    }

    #[test]
    fn install_updates_a_moved_binary_in_place() {
        // Proves an older muster hook (other binary path) is replaced where it stands, not duplicated.
        let mut doc = JsonDoc::parse(
            r#"{"hooks": {"Stop": [{"hooks": [{"type": "command", "command": "/old/muster hook stop --harness claude"}]}, {"hooks": [{"type": "command", "command": "mine"}]}]}}"#,
        )
        .unwrap();
        install(&mut doc, &edits()).unwrap();
        let stop = doc.root["hooks"]["Stop"].as_array().unwrap();
        assert_eq!(stop.len(), 2);
        assert_eq!(
            stop[0]["hooks"][0]["command"],
            "/bin/muster hook stop --harness claude"
        );
        assert_eq!(stop[1]["hooks"][0]["command"], "mine");
    }

    #[test]
    fn uninstall_removes_only_muster_and_the_containers_it_created() {
        // Proves structural uninstall leaves the user's entries and prunes only what install created.
        let original = JsonDoc::parse(USER).unwrap();
        let mut doc = original.clone();
        let undo = install(&mut doc, &edits()).unwrap();
        doc.root.insert("added_later".into(), json!(true));
        uninstall(&mut doc, &edits(), &undo);
        let mut expected = original.root.clone();
        expected.insert("added_later".into(), json!(true));
        assert_eq!(doc.root, expected);
        assert_eq!(doc.render(), {
            let mut e = original.clone();
            e.root = expected;
            e.render()
        });
    }

    #[test]
    fn uninstall_without_a_record_removes_entries_but_keeps_containers() {
        // Proves uninstall with no install record still strips muster's entries and nothing else.
        let mut doc =
            JsonDoc::parse(r#"{"mcpServers": {"muster": {}}, "hooks": {"Stop": []}}"#).unwrap();
        install(&mut doc, &edits()).unwrap();
        uninstall(&mut doc, &edits(), &[]);
        assert_eq!(
            Value::Object(doc.root),
            json!({"mcpServers": {}, "hooks": {"Stop": []}, "enabledMcpjsonServers": []})
        );
    }

    #[test]
    fn bad_json_reports_line_and_column() {
        // Proves a syntax error names its position.
        let err = JsonDoc::parse("{\n  \"a\": 1,\n  oops\n}").unwrap_err();
        let EditError::Syntax { line, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!(line, 3);
        assert!(matches!(JsonDoc::parse("[1]"), Err(EditError::Shape(_))));
    }

    #[test]
    fn recognises_muster_hook_commands() {
        // Proves hook commands are claimed by muster only when they run a muster binary's hook client.
        assert!(is_muster_command(
            "/usr/bin/muster hook stop --harness claude"
        ));
        assert!(is_muster_command("'/my dir/muster' hook stop"));
        assert!(is_muster_command(
            r"'/a b/it'\''s/muster' hook stop --harness codex"
        ));
        assert!(is_muster_command(r#""/c/muster.exe" hook stop"#));
        assert!(is_muster_command("muster hook prompt-submit"));
        assert!(!is_muster_command("/usr/bin/mustard hook stop"));
        assert!(!is_muster_command("echo muster hook"));
        assert!(!is_muster_command("muster"));
    }

    #[test]
    fn recognises_muster_hook_urls() {
        // Proves an http hook is muster's only when it posts to a daemon's `/hook/<event>?harness=…` route.
        assert!(is_muster_url(
            "http://127.0.0.1:7420/hook/stop?harness=claude"
        ));
        assert!(is_muster_url(
            "https://muster.example:7420/hook/post-tool-use?harness=claude"
        ));
        assert!(!is_muster_url("http://127.0.0.1:7420/hook/stop"));
        assert!(!is_muster_url(
            "http://127.0.0.1:7420/hook/deploy?harness=claude"
        ));
        assert!(!is_muster_url("ftp://x/hook/stop?harness=claude"));
        assert_eq!(
            muster_url_base("http://127.0.0.1:7420/hook/stop?harness=claude"),
            Some("http://127.0.0.1:7420")
        );
    }

    #[test]
    fn http_hooks_replace_command_hooks_in_place_and_drop_hooks_keeps_the_users() {
        // Proves muster's http hook group takes the place of its command group (and back), and DropHooks takes
        // out muster's hooks of either kind, removing what it emptied, leaving the user's hook where it was.
        let http = json!({"hooks": [{"type": "http", "url": "http://127.0.0.1:7420/hook/stop?harness=claude"}]});
        let mut doc = JsonDoc::parse(USER).unwrap();
        install(&mut doc, &edits()).unwrap();
        install(
            &mut doc,
            &[JsonEdit::Hook {
                event: "Stop".into(),
                group: http.clone(),
            }],
        )
        .unwrap();
        let stop = doc.root["hooks"]["Stop"].as_array().unwrap();
        assert_eq!(stop.len(), 2, "{stop:?}");
        assert_eq!(stop[1], http);
        install(
            &mut doc,
            &[JsonEdit::Hook {
                event: "PostToolUse".into(),
                group: http.clone(),
            }],
        )
        .unwrap();
        install(&mut doc, &[JsonEdit::DropHooks]).unwrap();
        assert_eq!(
            doc.root["hooks"],
            json!({"Stop": [{"hooks": [{"type": "command", "command": "say done"}]}]})
        );
        let mut ours = JsonDoc::parse(r#"{"hooks": {"Stop": []}}"#).unwrap();
        install(
            &mut ours,
            &[JsonEdit::Hook {
                event: "Stop".into(),
                group: http,
            }],
        )
        .unwrap();
        install(&mut ours, &[JsonEdit::DropHooks]).unwrap();
        assert_eq!(Value::Object(ours.root), json!({}));
    }
}
