//! Who may talk to the daemon: the token (when one is set), the local key
//! ([`local_key`](crate::local_key)), a connection over the daemon's own
//! Unix socket, or a dashboard signed in with a one-time link.
//!
//! On one machine every process of the daemon's user is trusted and no
//! other user's is: muster's clients read the local key by themselves and
//! send it, and the Unix socket sits in a directory only that user can
//! enter. A browser cannot read files, so the dashboard signs in through a
//! link `muster dashboard` prints: the link's code works once, within
//! [`LOGIN_CODE_TTL`], and leaves an HttpOnly, SameSite=Strict cookie.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use muster_core::token::Grant;

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::hub::Hub;
use crate::local_key::{self, same_secret, KeyFile};
use crate::scopes::Credential;
use crate::tokens::Registry;

/// How long a sign-in link works.
pub const LOGIN_CODE_TTL: Duration = Duration::from_secs(120);
/// Sign-in links not yet used, at most (older ones lapse first).
const MAX_OPEN_CODES: usize = 16;
/// Signed-in dashboards remembered, at most (the oldest is signed out).
const MAX_DASHBOARDS: usize = 64;
/// The dashboard's cookie.
const COOKIE: &str = "muster_dashboard";
/// How long a signed-in dashboard stays signed in. Browsers send a cookie
/// for 127.0.0.1 to every port of it, another user's server included, so
/// one that leaks is good for this long at most (and until a restart).
pub const SIGNED_IN_FOR: Duration = Duration::from_secs(12 * 3600);

/// Marks a request that came over the daemon's own Unix socket: only the
/// daemon's user can enter its directory, so it needs no key.
#[derive(Clone, Copy)]
pub(crate) struct OwnSocket;

/// What the guard checks callers against.
pub struct Access {
    local_key: Option<KeyFile>,
    logins: Mutex<Logins>,
}

#[derive(Default)]
struct Logins {
    /// One-time sign-in codes and when each was made.
    codes: VecDeque<(String, Instant)>,
    /// The cookies of signed-in dashboards, when each signed in, and as whom.
    dashboards: VecDeque<(String, Instant, Credential)>,
}

impl Access {
    /// `local_key: None` is a daemon that asks no key of local callers (one
    /// a test or benchmark starts in its own process).
    pub fn new(local_key: Option<KeyFile>) -> Arc<Self> {
        Arc::new(Access {
            local_key,
            logins: Mutex::new(Logins::default()),
        })
    }

    /// Whether `request` comes from someone allowed in, and as whom; or the
    /// refusal. `bootstrap` is the daemon's own `--token`, if it has one,
    /// and `tokens` the ones made since: beyond loopback a token is the
    /// way in, and the local key still lets the daemon's own user in with
    /// no configuration.
    pub fn check(
        &self,
        bootstrap: Option<&str>,
        tokens: &Registry,
        request: &Request,
    ) -> Result<Credential, ApiError> {
        if is_public(request) || request.extensions().get::<OwnSocket>().is_some() {
            return Ok(Credential::Local);
        }
        let headers = request.headers();
        // The local key first: on the daemon's own machine every client of
        // its user is that user, whatever token it also carries (its shim
        // over the Unix socket is), so one session's hooks, shim and CLI
        // never act as two different callers.
        let key_given = headers.get(local_key::HEADER).map(|v| v.as_bytes());
        if let (Some(key), Some(given)) = (&self.local_key, key_given) {
            if same_secret(given, key.secret.as_bytes()) {
                return Ok(Credential::Local);
            }
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if let Some(grant) = bearer.and_then(|given| token_grant(bootstrap, tokens, given)) {
            return Ok(Credential::Token(grant));
        }
        let Some(key) = &self.local_key else {
            return match (bootstrap, bearer) {
                (None, None) => Ok(Credential::Local),
                _ => Err(unauthorized(BEARER_REQUIRED)),
            };
        };
        if let Some(credential) = self.signed_in(headers) {
            return Ok(credential);
        }
        Err(unauthorized(match (bootstrap, bearer) {
            (Some(_), _) | (_, Some(_)) => BEARER_REQUIRED.to_string(),
            (None, None) => format!(
                "this daemon serves only its own user: muster's clients prove they are that user \
                 with the key in {}, which only that user can read (a client looks for it under \
                 its own $XDG_RUNTIME_DIR, else its temp directory: run it with the daemon's); a \
                 browser signs in with the link `muster dashboard` prints",
                key.path.display()
            ),
        }))
    }

    /// A new one-time sign-in code.
    fn new_code(&self) -> Result<String, ApiError> {
        let code = random_hex()?;
        let mut logins = self.lock();
        let now = Instant::now();
        logins
            .codes
            .retain(|(_, made)| now - *made < LOGIN_CODE_TTL);
        if logins.codes.len() >= MAX_OPEN_CODES {
            logins.codes.pop_front();
        }
        logins.codes.push_back((code.clone(), now));
        Ok(code)
    }

    /// Spends `code` if it is open and fresh; a cookie for the dashboard.
    fn redeem(&self, code: &str) -> Result<Option<String>, ApiError> {
        let mut logins = self.lock();
        let now = Instant::now();
        logins
            .codes
            .retain(|(_, made)| now - *made < LOGIN_CODE_TTL);
        let Some(at) = logins
            .codes
            .iter()
            .position(|(open, _)| same_secret(code.as_bytes(), open.as_bytes()))
        else {
            return Ok(None);
        };
        logins.codes.remove(at);
        drop(logins);
        self.sign_in_as(Credential::Local).map(Some)
    }

    /// A new signed-in dashboard acting as `credential`: its cookie.
    fn sign_in_as(&self, credential: Credential) -> Result<String, ApiError> {
        let cookie = random_hex()?;
        let mut logins = self.lock();
        let now = Instant::now();
        if logins.dashboards.len() >= MAX_DASHBOARDS {
            logins.dashboards.pop_front();
        }
        logins
            .dashboards
            .retain(|(_, at, _)| now - *at < SIGNED_IN_FOR);
        logins
            .dashboards
            .push_back((cookie.clone(), now, credential));
        Ok(cookie)
    }

    /// As whom the request's dashboard cookie signed in, if it carries one.
    fn signed_in(&self, headers: &HeaderMap) -> Option<Credential> {
        let given = cookie(headers, COOKIE)?;
        let now = Instant::now();
        self.lock()
            .dashboards
            .iter()
            .find(|(known, at, _)| {
                now - *at < SIGNED_IN_FOR && same_secret(given.as_bytes(), known.as_bytes())
            })
            .map(|(_, _, credential)| credential.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Logins> {
        self.logins.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What anyone may fetch: the dashboard's page (static: it reveals nothing
/// until it has signed in) and the sign-in link's landing.
fn is_public(request: &Request) -> bool {
    let path = request.uri().path();
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    // `POST /login` checks the token it carries itself.
    (read && (path == "/" || path == "/login"))
        || (*request.method() == Method::POST && path == "/login")
}

const BEARER_REQUIRED: &str =
    "a valid `Authorization: Bearer <token>` is required (that token is unknown or revoked, or none was sent)";

/// What a bearer secret grants: the bootstrap token's admin, or a made
/// token's scope.
fn token_grant(bootstrap: Option<&str>, tokens: &Registry, given: &str) -> Option<Grant> {
    if bootstrap.is_some_and(|b| same_secret(given.as_bytes(), b.as_bytes())) {
        return Some(Grant::bootstrap());
    }
    tokens.grant(given)
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// 128 random bits as hex: a sign-in code or a dashboard's cookie.
fn random_hex() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::internal(format!("cannot draw a random code: {e}")))?;
    Ok(local_key::hex(&bytes))
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// `POST /api/v1/dashboard/link`: a one-time sign-in link for a browser,
/// asked for by a caller already let in (`muster dashboard`).
pub(crate) async fn sign_in_link(
    Extension(access): Extension<Arc<Access>>,
    credential: Option<Extension<Credential>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    // The link signs a browser in as the daemon's own user.
    if let Some(Extension(credential)) = &credential {
        crate::scopes::must_administer(credential, "a sign-in link")?;
    }
    let code = access.new_code()?;
    Ok(Json(json!({
        "path": format!("/login?code={code}"),
        "expires_in_ms": LOGIN_CODE_TTL.as_millis() as u64,
    })))
}

#[derive(Deserialize)]
pub(crate) struct SignIn {
    #[serde(default)]
    code: String,
}

/// `GET /login?code=…`: spends the code, sets the dashboard's cookie and
/// sends the browser to the dashboard; a used or stale code gets a page
/// saying how to get a new one. `GET /login` with no code is the page
/// where a teammate signs in with a token instead.
pub(crate) async fn sign_in(
    Extension(access): Extension<Arc<Access>>,
    Query(q): Query<SignIn>,
) -> Response {
    if q.code.is_empty() {
        return login_page();
    }
    match access.redeem(&q.code) {
        Ok(Some(cookie)) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, "/".to_string()),
                (header::SET_COOKIE, cookie_header(&cookie)),
                (header::CACHE_CONTROL, "no-store".to_string()),
            ],
        )
            .into_response(),
        Ok(None) => (
            StatusCode::UNAUTHORIZED,
            Html(
                "<!doctype html><meta charset=utf-8><title>muster: sign-in link expired</title>\
                 <p>This sign-in link has been used or has expired (links work once, for two \
                 minutes). Run <code>muster dashboard</code> for a new one, or \
                 <a href=\"/login\">sign in with a token</a>.</p>",
            ),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// The dashboard's cookie, as `Set-Cookie` gives it: script cannot read
/// it, and no other site's request carries it.
fn cookie_header(cookie: &str) -> String {
    format!(
        "{COOKIE}={cookie}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SIGNED_IN_FOR.as_secs()
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenSignIn {
    token: String,
}

/// `POST /login` `{"token": …}` (JSON, from the login page's own script:
/// the router's guard refuses it from any other page): a dashboard that
/// acts with that token's scope, by cookie. The token itself is never kept
/// in the browser.
pub(crate) async fn sign_in_with_token(
    State(hub): State<Arc<Hub>>,
    Extension(access): Extension<Arc<Access>>,
    ApiJson(req): ApiJson<TokenSignIn>,
) -> Response {
    let bootstrap = hub.config.token.as_deref().filter(|t| !t.is_empty());
    let Some(grant) = token_grant(bootstrap, &hub.tokens, req.token.trim()) else {
        return unauthorized("that token is unknown or revoked").into_response();
    };
    let name = grant.name.clone();
    match access.sign_in_as(Credential::Token(grant)) {
        Ok(cookie) => (
            StatusCode::OK,
            [
                (header::SET_COOKIE, cookie_header(&cookie)),
                (header::CACHE_CONTROL, "no-store".to_string()),
            ],
            Json(json!({"signed_in_as": name})),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// The token sign-in page: static, with a script that posts the token as
/// JSON and goes to the dashboard.
const LOGIN_PAGE: &str = include_str!("../assets/login.html");

fn login_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        LOGIN_PAGE,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, headers: &[(&str, &str)]) -> Request {
        let mut builder = Request::builder().uri(path);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    fn keyed() -> Arc<Access> {
        use std::path::PathBuf;
        Access::new(Some(KeyFile {
            secret: "k".repeat(64),
            path: PathBuf::from("/run/user/1/muster-1/7420.key"),
        }))
    }

    #[test]
    fn the_local_key_or_the_own_socket_lets_in_and_nothing_else_does() {
        let access = keyed();
        let key = "k".repeat(64);
        assert!(access
            .check(
                None,
                &Registry::default(),
                &request("/api/v1/roster", &[("x-muster-key", &key)])
            )
            .is_ok());
        let wrong = access.check(
            None,
            &Registry::default(),
            &request("/api/v1/roster", &[("x-muster-key", "kk")]),
        );
        let err = wrong.err().unwrap();
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);
        assert!(err.message.contains("7420.key"), "{}", err.message);
        assert!(access
            .check(None, &Registry::default(), &request("/api/v1/roster", &[]))
            .is_err());
        assert!(access
            .check(None, &Registry::default(), &request("/metrics", &[]))
            .is_err());
        let mut over_socket = request("/api/v1/roster", &[]);
        over_socket.extensions_mut().insert(OwnSocket);
        assert!(access
            .check(None, &Registry::default(), &over_socket)
            .is_ok());
        assert!(
            access
                .check(None, &Registry::default(), &request("/", &[]))
                .is_ok(),
            "the page itself is static"
        );
    }

    #[test]
    fn with_a_token_either_the_token_or_the_local_key_lets_in() {
        let access = keyed();
        let key = "k".repeat(64);
        let bearer = [("authorization", "Bearer t0ken")];
        assert!(access
            .check(
                Some("t0ken"),
                &Registry::default(),
                &request("/ws", &bearer)
            )
            .is_ok());
        assert!(access
            .check(
                Some("t0ken"),
                &Registry::default(),
                &request("/ws", &[("x-muster-key", &key)])
            )
            .is_ok());
        let wrong = [("authorization", "Bearer t0kem")];
        assert!(access
            .check(Some("t0ken"), &Registry::default(), &request("/ws", &wrong))
            .is_err());
        let keyless = Access::new(None);
        assert!(keyless
            .check(Some("t0ken"), &Registry::default(), &request("/ws", &[]))
            .is_err());
        assert!(keyless
            .check(None, &Registry::default(), &request("/ws", &[]))
            .is_ok());
    }

    #[test]
    fn the_local_key_outranks_a_token_it_comes_with() {
        // Proves a client of the daemon's own user that also carries a
        // token acts as that user (as its shim over the Unix socket does),
        // and the same token alone acts as the token.
        use muster_core::token::{hash_secret, Scope, TokenRecord};
        let access = keyed();
        let tokens = Registry::new(vec![TokenRecord {
            id: "t1".into(),
            name: "box".into(),
            scope: Scope::Agent,
            hash: hash_secret("muster_box"),
            created_at: 1,
            created_by: "local".into(),
            revoked_at: None,
        }]);
        let key = "k".repeat(64);
        let both = [
            ("x-muster-key", key.as_str()),
            ("authorization", "Bearer muster_box"),
        ];
        let got = access.check(None, &tokens, &request("/api/v1/roster", &both));
        assert_eq!(got.unwrap(), Credential::Local);
        let alone = [("authorization", "Bearer muster_box")];
        let got = access.check(None, &tokens, &request("/api/v1/roster", &alone));
        assert_eq!(got.unwrap().grant().map(|g| g.scope), Some(Scope::Agent));
    }

    #[test]
    fn a_sign_in_code_works_once_and_its_cookie_lets_the_dashboard_in() {
        let access = keyed();
        let code = access.new_code().unwrap();
        let cookie = access
            .redeem(&code)
            .unwrap()
            .expect("a fresh code signs in");
        assert_eq!(access.redeem(&code).unwrap(), None, "only once");
        assert_eq!(access.redeem("made-up").unwrap(), None);
        let with = format!("theme=dark; {COOKIE}={cookie}");
        assert!(access
            .check(
                None,
                &Registry::default(),
                &request("/api/v1/roster", &[("cookie", &with)])
            )
            .is_ok());
        let forged = format!("{COOKIE}={}", "0".repeat(32));
        assert!(access
            .check(
                None,
                &Registry::default(),
                &request("/api/v1/roster", &[("cookie", &forged)])
            )
            .is_err());
    }
}
