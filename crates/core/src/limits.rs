//! Bounds on every input. Changing one here changes it for the daemon, the
//! CLI and the tests alike.

/// Largest HTTP request body the daemon reads (1 MiB); larger gets 413.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1 << 20;
/// Largest message body, in characters. Chosen so one message always fits
/// whole inside the hook budget below.
pub const MAX_BODY_CHARS: usize = 6_000;
/// Largest message body as an agent sees it: escaped (`<` is `&lt;`) and
/// JSON-encoded. With the frame around it this stays under the hook budget.
pub const MAX_RENDERED_BODY_CHARS: usize = 7_000;
/// Longest session id a harness may give us.
pub const MAX_SESSION_ID_LEN: usize = 128;
/// Longest room, operator or nickname.
pub const MAX_NAME_LEN: usize = 64;
/// Longest status text.
pub const MAX_STATUS_CHARS: usize = 200;
/// Longest free-text session field (cwd, host, harness, branch…).
pub const MAX_FIELD_CHARS: usize = 4_096;
/// Hook context budget in characters. Claude Code replaces hook output over
/// 10,000 characters with a file reference; we stay well under it, JSON
/// escaping included.
pub const HOOK_CONTEXT_BUDGET: usize = 8_000;
/// Shortest id prefix accepted as an address, so "a" never matches by luck.
pub const MIN_ID_PREFIX: usize = 4;
