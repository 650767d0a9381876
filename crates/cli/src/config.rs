//! Where a client command finds the daemon, who the operator is, and who a
//! command acts as. Every resolution takes its inputs as arguments (an `Env`
//! snapshot and the parsed config file) so tests never touch the process env.

use std::fmt;
use std::path::{Path, PathBuf};

use muster_core::operator_principal;
use serde::Deserialize;

pub const DEFAULT_URL: &str = "http://127.0.0.1:7420";

/// The environment variables muster reads, captured once. Empty values count as unset.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub muster_url: Option<String>,
    pub muster_operator: Option<String>,
    pub muster_session_id: Option<String>,
    pub claude_code_session_id: Option<String>,
    pub muster_token: Option<String>,
    /// A file holding the token (MUSTER_TOKEN_FILE), so no config names the secret.
    pub muster_token_file: Option<String>,
    pub user: Option<String>,
    pub home: Option<String>,
    pub xdg_config_home: Option<String>,
    pub xdg_state_home: Option<String>,
    pub hostname: Option<String>,
}

impl Env {
    pub fn from_process() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Env {
            muster_url: var("MUSTER_URL"),
            muster_operator: var("MUSTER_OPERATOR"),
            muster_session_id: var("MUSTER_SESSION_ID"),
            claude_code_session_id: var("CLAUDE_CODE_SESSION_ID"),
            muster_token: var("MUSTER_TOKEN"),
            muster_token_file: var("MUSTER_TOKEN_FILE"),
            user: var("USER"),
            home: var("HOME"),
            xdg_config_home: var("XDG_CONFIG_HOME"),
            xdg_state_home: var("XDG_STATE_HOME"),
            hostname: var("HOSTNAME"),
        }
    }
}

/// `config.toml`: every key optional; unknown keys are ignored so newer files
/// still load in older clients.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct FileConfig {
    pub url: Option<String>,
    pub operator: Option<String>,
    pub token: Option<String>,
    /// A file holding the token: what a committed or shared config should
    /// name instead of the secret.
    pub token_file: Option<String>,
}

/// The config file as found on disk.
#[derive(Debug, Clone, Default)]
pub struct LoadedConfig {
    /// Where it is (or would be); `None` when neither XDG_CONFIG_HOME nor HOME is set.
    pub path: Option<PathBuf>,
    pub exists: bool,
    pub values: FileConfig,
    /// Why the file could not be used, if it exists but is unreadable or malformed.
    pub error: Option<String>,
}

/// An XDG base directory: the variable if it is an absolute path (the spec
/// says to ignore relative ones), else `$HOME/<fallback>`.
fn xdg_dir(xdg: Option<&str>, home: Option<&str>, fallback: &str) -> Option<PathBuf> {
    match xdg {
        Some(dir) if Path::new(dir).is_absolute() => Some(PathBuf::from(dir)),
        _ => home.map(|h| Path::new(h).join(fallback)),
    }
}

/// `$XDG_CONFIG_HOME/muster/config.toml`, else `~/.config/muster/config.toml`.
pub fn config_path(env: &Env) -> Option<PathBuf> {
    xdg_dir(
        env.xdg_config_home.as_deref(),
        env.home.as_deref(),
        ".config",
    )
    .map(|d| d.join("muster").join("config.toml"))
}

/// `$XDG_STATE_HOME/muster`, else `~/.local/state/muster`.
pub fn default_data_dir(env: &Env) -> Option<PathBuf> {
    xdg_dir(
        env.xdg_state_home.as_deref(),
        env.home.as_deref(),
        ".local/state",
    )
    .map(|d| d.join("muster"))
}

pub fn parse_config(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| one_line_toml_error(&e.to_string()))
}

/// toml's errors draw a multi-line snippet; keep the position and the reason on one line.
fn one_line_toml_error(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match (lines.first(), lines.last()) {
        (Some(first), Some(last)) if lines.len() > 1 => format!("{first}: {last}"),
        _ => text.trim().to_string(),
    }
}

/// Reads the config file if there is one. A missing file is no error; a broken one is
/// reported in `error` and its values are ignored.
pub fn load_config(path: Option<PathBuf>) -> LoadedConfig {
    let Some(path) = path else {
        return LoadedConfig::default();
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => match parse_config(&text) {
            Ok(values) => LoadedConfig {
                path: Some(path),
                exists: true,
                values,
                error: None,
            },
            Err(e) => LoadedConfig {
                path: Some(path),
                exists: true,
                values: FileConfig::default(),
                error: Some(e),
            },
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => LoadedConfig {
            path: Some(path),
            exists: false,
            values: FileConfig::default(),
            error: None,
        },
        Err(e) => LoadedConfig {
            path: Some(path),
            exists: true,
            values: FileConfig::default(),
            error: Some(e.to_string()),
        },
    }
}

/// Where a resolved value came from, for `doctor` and error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env(&'static str),
    ConfigFile(PathBuf),
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => write!(f, "command line"),
            Source::Env(name) => write!(f, "{name}"),
            Source::ConfigFile(path) => write!(f, "{}", path.display()),
            Source::Default => write!(f, "default"),
        }
    }
}

impl Source {
    /// A short machine name: flag, env, config, default.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env(_) => "env",
            Source::ConfigFile(_) => "config",
            Source::Default => "default",
        }
    }
}

/// The daemon URL: `--url`, else MUSTER_URL, else `url` in config.toml, else the default.
/// It may list several daemons of a team, separated by commas, tried in
/// order; each must be `http://host[:port]` or `https://…` (see
/// `normalize_urls`). A list stays one string, its normalized addresses
/// joined by commas, so it passes unchanged through MUSTER_URL to what
/// `muster run` starts; `split_urls` gives its addresses.
pub fn resolve_url(
    flag: Option<&str>,
    env: &Env,
    config: &LoadedConfig,
) -> Result<(String, Source), String> {
    let (raw, source) = if let Some(url) = flag {
        (url.to_string(), Source::Flag)
    } else if let Some(url) = &env.muster_url {
        (url.clone(), Source::Env("MUSTER_URL"))
    } else if let (Some(url), Some(path)) = (&config.values.url, &config.path) {
        (url.clone(), Source::ConfigFile(path.clone()))
    } else {
        (DEFAULT_URL.to_string(), Source::Default)
    };
    let url =
        normalize_urls(&raw).map_err(|why| format!("daemon URL {raw:?} (from {source}) {why}"))?;
    Ok((url, source))
}

/// What separates the addresses of a daemon URL list. No daemon URL holds
/// one: a host name cannot, and muster serves no path that does.
pub const URL_SEPARATOR: char = ',';

/// Checks a daemon URL list (`http://a:7420,http://b:7420`, spaces around
/// the commas allowed) and normalizes each address with `normalize_url`;
/// the result is the addresses joined by bare commas. A list of one is
/// `normalize_url` itself, errors and all; in a longer list an error names
/// the address, by position and as typed.
pub fn normalize_urls(raw: &str) -> Result<String, String> {
    let entries: Vec<&str> = raw.split(URL_SEPARATOR).collect();
    if entries.len() == 1 {
        return normalize_url(raw);
    }
    let mut urls = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let n = i + 1;
        if entry.trim().is_empty() {
            return Err(format!(
                "has an empty address (number {n} of {})",
                entries.len()
            ));
        }
        let url = normalize_url(entry)
            .map_err(|why| format!("has a bad address, number {n}: {:?} {why}", entry.trim()))?;
        urls.push(url);
    }
    Ok(urls.join(&URL_SEPARATOR.to_string()))
}

/// The addresses of a list `normalize_urls` returned, in order.
pub fn split_urls(list: &str) -> impl Iterator<Item = &str> {
    list.split(URL_SEPARATOR)
}

/// Checks a daemon URL and strips its trailing slashes: `http://`, or
/// `https://` for a daemon served with TLS (see `tls`). Returns the URL as
/// parsed, not as typed: the parser drops tabs, newlines and control
/// characters the text may hold, which the typed text would otherwise
/// carry into every request URL (found by the `address` fuzz target).
pub fn normalize_url(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(trimmed).map_err(|e| format!("is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "uses {}://; muster speaks http:// (e.g. {DEFAULT_URL}) or https://",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("has no host".to_string());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("must not have a query or fragment".to_string());
    }
    Ok(parsed.as_str().trim_end_matches('/').to_string())
}

/// The operator (the person at the keyboard): MUSTER_OPERATOR, else `operator`
/// in config.toml, else $USER, else "operator".
pub fn resolve_operator(env: &Env, config: &LoadedConfig) -> (String, Source) {
    if let Some(op) = &env.muster_operator {
        return (op.trim().to_string(), Source::Env("MUSTER_OPERATOR"));
    }
    if let (Some(op), Some(path)) = (
        config
            .values
            .operator
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty()),
        &config.path,
    ) {
        return (op.to_string(), Source::ConfigFile(path.clone()));
    }
    if let Some(user) = &env.user {
        return (user.trim().to_string(), Source::Env("USER"));
    }
    ("operator".to_string(), Source::Default)
}

/// This process's session identity, if a harness gave it one:
/// MUSTER_SESSION_ID, else CLAUDE_CODE_SESSION_ID.
pub fn session_from_env(env: &Env) -> Option<(String, &'static str)> {
    if let Some(id) = &env.muster_session_id {
        return Some((id.trim().to_string(), "MUSTER_SESSION_ID"));
    }
    env.claude_code_session_id
        .as_ref()
        .map(|id| (id.trim().to_string(), "CLAUDE_CODE_SESSION_ID"))
}

/// Who a command acts as: `--as`, else this session, else the operator as `op:<name>`.
pub fn resolve_as(flag: Option<&str>, env: &Env, operator: &str) -> (String, Source) {
    if let Some(who) = flag.map(str::trim).filter(|s| !s.is_empty()) {
        return (who.to_string(), Source::Flag);
    }
    if let Some((id, var)) = session_from_env(env) {
        return (id, Source::Env(var));
    }
    (operator_principal(operator), Source::Default)
}

/// The bearer token clients present: MUSTER_TOKEN, else the file
/// MUSTER_TOKEN_FILE names, else `token`, else `token_file`, in config.toml.
/// A file that cannot be read is said on stderr, and no token is sent (the
/// daemon's 401 then says one is needed).
pub fn resolve_token(env: &Env, config: &LoadedConfig) -> Option<String> {
    let from_file = |path: &str| match read_token_file(Path::new(path)) {
        Ok(token) => Some(token),
        Err(why) => {
            eprintln!("muster: {why}; sending no token");
            None
        }
    };
    let token = if let Some(token) = &env.muster_token {
        Some(token.clone())
    } else if let Some(path) = &env.muster_token_file {
        from_file(path)
    } else if let Some(token) = &config.values.token {
        Some(token.clone())
    } else {
        config.values.token_file.as_deref().and_then(from_file)
    };
    token
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// A token file's secret (its first line). One that others may read is
/// used, with a warning: the secret may have leaked.
pub fn read_token_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                eprintln!(
                    "muster: warning: the token file {} is readable by others; `chmod 600 {}`",
                    path.display(),
                    path.display()
                );
            }
        }
    }
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(format!("the token file {} is empty", path.display()));
    }
    Ok(token)
}

/// The host name sent with hook calls: /etc/hostname, else $HOSTNAME, else
/// the system's (`gethostname`, which macOS has and /etc/hostname it has
/// not), else "localhost".
pub fn hostname(env: &Env) -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| env.hostname.clone())
        .or_else(system_hostname)
        .unwrap_or_else(|| "localhost".to_string())
}

fn system_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many bytes and we read only up to the first NUL.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_hostname_is_the_kernels_node_name() {
        // Proves the fallback used where /etc/hostname is missing (macOS)
        // reads the same name `uname -n` prints.
        let uname = std::process::Command::new("uname")
            .arg("-n")
            .output()
            .unwrap();
        let expected = String::from_utf8(uname.stdout).unwrap().trim().to_string();
        assert_eq!(system_hostname(), Some(expected));
    }

    #[test]
    fn the_token_is_the_variable_then_its_file_then_the_configs() {
        // Proves MUSTER_TOKEN beats MUSTER_TOKEN_FILE beats `token` beats
        // `token_file`, a file's first line is the token, and an unreadable
        // or empty file sends none.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        std::fs::write(&file, "from-the-file\nignored\n").unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let path = |p: &Path| Some(p.to_str().unwrap().to_string());
        let mut config = config_with(None, None);
        config.values.token_file = path(&file);
        let env = |token: Option<&str>, file: Option<String>| Env {
            muster_token: token.map(Into::into),
            muster_token_file: file,
            ..Env::default()
        };
        assert_eq!(
            resolve_token(&env(None, None), &config).as_deref(),
            Some("from-the-file")
        );
        config.values.token = Some("from-config".into());
        assert_eq!(
            resolve_token(&env(None, None), &config).as_deref(),
            Some("from-config")
        );
        let other = dir.path().join("other");
        std::fs::write(&other, " spaced \n").unwrap();
        assert_eq!(
            resolve_token(&env(None, path(&other)), &config).as_deref(),
            Some("spaced")
        );
        assert_eq!(
            resolve_token(&env(Some("var"), path(&other)), &config).as_deref(),
            Some("var")
        );
        let missing = Some("/nonexistent/muster-token".to_string());
        assert_eq!(resolve_token(&env(None, missing), &config), None);
        assert_eq!(resolve_token(&env(None, path(&empty)), &config), None);
    }

    fn config_with(url: Option<&str>, operator: Option<&str>) -> LoadedConfig {
        LoadedConfig {
            path: Some(PathBuf::from("/home/a/.config/muster/config.toml")),
            exists: true,
            values: FileConfig {
                url: url.map(Into::into),
                operator: operator.map(Into::into),
                ..FileConfig::default()
            },
            error: None,
        }
    }

    #[test]
    fn url_precedence_is_flag_env_config_default() {
        // Proves --url beats MUSTER_URL beats config.toml beats the built-in default.
        let mut env = Env {
            muster_url: Some("http://env:1".into()),
            ..Env::default()
        };
        let config = config_with(Some("http://file:2/"), None);
        assert_eq!(
            resolve_url(Some("http://flag:3"), &env, &config).unwrap(),
            ("http://flag:3".into(), Source::Flag)
        );
        assert_eq!(
            resolve_url(None, &env, &config).unwrap(),
            ("http://env:1".into(), Source::Env("MUSTER_URL"))
        );
        env.muster_url = None;
        let (url, source) = resolve_url(None, &env, &config).unwrap();
        assert_eq!(url, "http://file:2");
        assert_eq!(source.kind(), "config");
        assert_eq!(
            resolve_url(None, &env, &LoadedConfig::default()).unwrap(),
            (DEFAULT_URL.into(), Source::Default)
        );
    }

    #[test]
    fn bad_urls_are_refused_with_their_source() {
        // Proves a malformed or ws:// URL is an error naming where it came
        // from, not a panic, and an https:// one is taken.
        let env = Env {
            muster_url: Some("ws://x:1".into()),
            ..Env::default()
        };
        let err = resolve_url(None, &env, &LoadedConfig::default()).unwrap_err();
        assert_eq!(
            err,
            "daemon URL \"ws://x:1\" (from MUSTER_URL) uses ws://; muster speaks http:// (e.g. http://127.0.0.1:7420) or https://"
        );
        let env = Env {
            muster_url: Some("https://team.example:7420/".into()),
            ..Env::default()
        };
        assert_eq!(
            resolve_url(None, &env, &LoadedConfig::default()),
            Ok((
                "https://team.example:7420".to_string(),
                Source::Env("MUSTER_URL")
            ))
        );
        assert!(resolve_url(Some("not a url"), &env, &LoadedConfig::default()).is_err());
        assert!(resolve_url(Some("http://h:1/?q=1"), &env, &LoadedConfig::default()).is_err());
    }

    #[test]
    fn a_list_of_daemons_is_normalized_address_by_address() {
        // Proves a comma-separated list keeps its order, each address
        // normalized as one URL alone would be, spaces around the commas
        // ignored, and that the list's text normalizes to itself again.
        let env = Env {
            muster_url: Some(" http://a:7420/ , https://b.example:7420,http://[::1]:7421/ ".into()),
            ..Env::default()
        };
        let (list, source) = resolve_url(None, &env, &LoadedConfig::default()).unwrap();
        assert_eq!(
            list,
            "http://a:7420,https://b.example:7420,http://[::1]:7421"
        );
        assert_eq!(source, Source::Env("MUSTER_URL"));
        assert_eq!(
            split_urls(&list).collect::<Vec<_>>(),
            [
                "http://a:7420",
                "https://b.example:7420",
                "http://[::1]:7421"
            ]
        );
        assert_eq!(normalize_urls(&list).as_deref(), Ok(list.as_str()));
        let config = config_with(Some("http://file:1,http://file:2"), None);
        assert_eq!(
            resolve_url(None, &Env::default(), &config).unwrap().0,
            "http://file:1,http://file:2"
        );
    }

    #[test]
    fn a_list_of_one_is_a_single_url() {
        // Proves one address is taken exactly as before lists existed: the
        // same text back, the same error for a bad one, one address split.
        assert_eq!(normalize_urls("http://h:1/").as_deref(), Ok("http://h:1"));
        assert_eq!(split_urls("http://h:1").collect::<Vec<_>>(), ["http://h:1"]);
        assert_eq!(normalize_urls("ws://x:1"), normalize_url("ws://x:1"));
        assert_eq!(normalize_urls(""), normalize_url(""));
    }

    #[test]
    fn a_bad_address_in_a_list_is_named() {
        // Proves a list with a bad or empty address is refused whole, the
        // error saying which address (its place and its text) and why.
        let flag = |raw: &str| resolve_url(Some(raw), &Env::default(), &LoadedConfig::default());
        assert_eq!(
            flag("http://a:1, ws://b:2").unwrap_err(),
            "daemon URL \"http://a:1, ws://b:2\" (from command line) has a bad address, number 2: \"ws://b:2\" uses ws://; muster speaks http:// (e.g. http://127.0.0.1:7420) or https://"
        );
        assert_eq!(
            flag("http://a:1,,http://c:3").unwrap_err(),
            "daemon URL \"http://a:1,,http://c:3\" (from command line) has an empty address (number 2 of 3)"
        );
        assert_eq!(
            flag("http://a:1, ").unwrap_err(),
            "daemon URL \"http://a:1, \" (from command line) has an empty address (number 2 of 2)"
        );
        let err = flag("not a url,http://b:2").unwrap_err();
        assert!(
            err.starts_with("daemon URL \"not a url,http://b:2\" (from command line) has a bad address, number 1: \"not a url\" is not a URL: "),
            "{err}"
        );
        assert!(flag("http://a:1,http://b:2/?q=1").is_err());
    }

    #[test]
    fn a_url_is_kept_as_parsed_so_normalizing_twice_changes_nothing() {
        // Proves the inputs the address fuzz target found: the text kept a
        // tab, a newline or a NUL the URL parser ignores, so a second
        // normalization gave another string.
        for (raw, url) in [
            ("htTp:h\t//", "http://h"),
            ("http:/\n\n\n\n\n\nJ\n\n\n\n/", "http://j"),
            ("http://127.0.0.1:7420/ /", "http://127.0.0.1:7420"),
            ("http://127.0.0.1:7420/", "http://127.0.0.1:7420"),
            ("http://[::1]:7420/muster//", "http://[::1]:7420/muster"),
        ] {
            assert_eq!(normalize_url(raw).as_deref(), Ok(url), "{raw:?}");
            assert_eq!(normalize_url(url).as_deref(), Ok(url), "{url:?}");
        }
    }

    #[test]
    fn as_precedence_is_flag_session_env_then_operator() {
        // Proves --as beats MUSTER_SESSION_ID beats CLAUDE_CODE_SESSION_ID beats op:<operator>.
        let mut env = Env {
            muster_session_id: Some("m-1".into()),
            claude_code_session_id: Some("c-2".into()),
            ..Env::default()
        };
        assert_eq!(
            resolve_as(Some("calm-heron"), &env, "alice"),
            ("calm-heron".into(), Source::Flag)
        );
        assert_eq!(
            resolve_as(None, &env, "alice"),
            ("m-1".into(), Source::Env("MUSTER_SESSION_ID"))
        );
        env.muster_session_id = None;
        assert_eq!(
            resolve_as(None, &env, "alice"),
            ("c-2".into(), Source::Env("CLAUDE_CODE_SESSION_ID"))
        );
        env.claude_code_session_id = None;
        assert_eq!(
            resolve_as(None, &env, "alice"),
            ("op:alice".into(), Source::Default)
        );
        assert_eq!(resolve_as(Some("  "), &env, "alice").0, "op:alice");
    }

    #[test]
    fn operator_precedence_is_env_config_user_default() {
        // Proves MUSTER_OPERATOR beats config.toml beats $USER beats "operator".
        let mut env = Env {
            muster_operator: Some("mo".into()),
            user: Some("unix".into()),
            ..Env::default()
        };
        let config = config_with(None, Some("cfg"));
        assert_eq!(resolve_operator(&env, &config).0, "mo");
        env.muster_operator = None;
        assert_eq!(resolve_operator(&env, &config).0, "cfg");
        assert_eq!(
            resolve_operator(&env, &LoadedConfig::default()),
            ("unix".into(), Source::Env("USER"))
        );
        env.user = None;
        assert_eq!(
            resolve_operator(&env, &LoadedConfig::default()),
            ("operator".into(), Source::Default)
        );
    }

    #[test]
    fn xdg_paths_fall_back_to_home_and_ignore_relative_dirs() {
        // Proves config and data paths follow XDG, falling back to ~/.config and ~/.local/state.
        let mut env = Env {
            home: Some("/home/a".into()),
            ..Env::default()
        };
        assert_eq!(
            config_path(&env).unwrap(),
            PathBuf::from("/home/a/.config/muster/config.toml")
        );
        assert_eq!(
            default_data_dir(&env).unwrap(),
            PathBuf::from("/home/a/.local/state/muster")
        );
        env.xdg_config_home = Some("/x/cfg".into());
        env.xdg_state_home = Some("relative/state".into());
        assert_eq!(
            config_path(&env).unwrap(),
            PathBuf::from("/x/cfg/muster/config.toml")
        );
        assert_eq!(
            default_data_dir(&env).unwrap(),
            PathBuf::from("/home/a/.local/state/muster")
        );
        assert!(config_path(&Env::default()).is_none());
    }

    #[test]
    fn config_file_parses_known_keys_and_reports_broken_files() {
        // Proves config.toml's keys are read, unknown keys ignored, and a broken file reported, not fatal.
        let parsed =
            parse_config("url = \"http://h:1\"\noperator = \"bob\"\nfuture = 3\n").unwrap();
        assert_eq!(parsed.url.as_deref(), Some("http://h:1"));
        assert_eq!(parsed.operator.as_deref(), Some("bob"));
        let err = parse_config("url = [").unwrap_err();
        assert!(!err.contains('\n') && err.contains("line 1"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        assert!(!load_config(Some(path.clone())).exists);
        std::fs::write(&path, "url = [").unwrap();
        let loaded = load_config(Some(path));
        assert!(loaded.exists && loaded.error.is_some() && loaded.values == FileConfig::default());
    }
}
