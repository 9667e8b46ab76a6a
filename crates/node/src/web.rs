//! What the local API and the console share: their state, who is calling (session
//! cookie, API token or the operator's token), CSRF checks, and the security headers
//! every response carries.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use liaison_store::Store;

use crate::node::Node;
use crate::users::{People, Principal, SESSION_COOKIE, Via};

/// State of the local web server.
#[derive(Debug)]
pub struct App<S: Store> {
    pub node: Arc<Node<S>>,
    pub people: Arc<People>,
}

impl<S: Store> Clone for App<S> {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
            people: self.people.clone(),
        }
    }
}

/// Header that carries a session's CSRF secret on API calls made by the console's
/// scripts; forms carry it in a `csrf` field instead.
pub const CSRF_HEADER: &str = "x-csrf-token";

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Why a request could not be attributed to anyone.
#[derive(Debug)]
pub enum Unauthenticated {
    Missing,
    Invalid,
    Unavailable(String),
}

/// Finds who is calling; `None` when nobody signed in.
pub async fn authenticate<S: Store>(
    app: &App<S>,
    headers: &HeaderMap,
) -> Result<Principal, Unauthenticated> {
    if let Some(token) = bearer(headers) {
        return match app
            .people
            .bearer(&app.node.store, app.node.party.as_str(), token)
            .await
        {
            Ok(Some(p)) => Ok(p),
            Ok(None) => Err(Unauthenticated::Invalid),
            Err(e) => Err(Unauthenticated::Unavailable(e.to_string())),
        };
    }
    let Some(secret) = cookie(headers, SESSION_COOKIE) else {
        return Err(Unauthenticated::Missing);
    };
    match app.people.session(&app.node.store, secret).await {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(Unauthenticated::Invalid),
        Err(e) => Err(Unauthenticated::Unavailable(e.to_string())),
    }
}

/// A session's CSRF secret must come with every state-changing request made with the
/// session cookie. Tokens are not sent by browsers on their own, so they need none.
pub fn csrf_ok(p: &Principal, supplied: Option<&str>) -> bool {
    match &p.via {
        Via::Session { csrf, .. } => supplied.is_some_and(|s| crate::users::same(s, csrf)),
        Via::Token | Via::Operator => true,
    }
}

/// A caller of the JSON API: authenticated, and for unsafe methods with a session
/// cookie, carrying the CSRF header.
#[derive(Debug)]
pub struct ApiCaller(pub Principal);

impl<S: Store> FromRequestParts<App<S>> for ApiCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App<S>) -> Result<Self, Response> {
        let p = authenticate(app, &parts.headers)
            .await
            .map_err(|e| api_unauthenticated(&e))?;
        let safe = matches!(parts.method, Method::GET | Method::HEAD);
        let supplied = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if !safe && !csrf_ok(&p, supplied) {
            return Err(json_error(
                StatusCode::FORBIDDEN,
                "missing or wrong CSRF token: send the session's token in the X-CSRF-Token header",
            ));
        }
        Ok(Self(p))
    }
}

/// A signed-in console user. CSRF is checked by each form handler against the form's
/// `csrf` field, because the body is not readable here.
#[derive(Debug)]
pub struct ConsoleUser(pub Principal);

impl<S: Store> FromRequestParts<App<S>> for ConsoleUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App<S>) -> Result<Self, Response> {
        match authenticate(app, &parts.headers).await {
            Ok(p) => Ok(Self(p)),
            Err(Unauthenticated::Unavailable(e)) => Err((
                StatusCode::SERVICE_UNAVAILABLE,
                format!("store unavailable: {e}"),
            )
                .into_response()),
            Err(_) => {
                let next = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                Err(Redirect::to(&format!("/login?next={}", url_encode(next))).into_response())
            }
        }
    }
}

/// The client's address, for sign-in throttling.
pub fn client_addr(parts_ext: Option<&ConnectInfo<SocketAddr>>) -> String {
    parts_ext
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

pub fn json_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

fn api_unauthenticated(e: &Unauthenticated) -> Response {
    match e {
        Unauthenticated::Missing => json_error(
            StatusCode::UNAUTHORIZED,
            "sign in first: send a session cookie or `Authorization: Bearer <token>` (the operator's token is in the node directory's operator.token)",
        ),
        Unauthenticated::Invalid => json_error(
            StatusCode::UNAUTHORIZED,
            "the session has expired or the token is not valid; sign in again",
        ),
        Unauthenticated::Unavailable(m) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("store unavailable: {m}"),
        ),
    }
}

pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Adds the headers every local response carries.
pub async fn security_headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}
