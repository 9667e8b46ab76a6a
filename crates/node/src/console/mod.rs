//! The duty officers' web console: server-rendered pages (askama) in the user's
//! language (Fluent) and time zone, live updates over server-sent events, and forms
//! protected by the session's CSRF secret. Every page asks the same authorisation
//! checks as the JSON API (`crate::users`, `crate::api`), so the two cannot disagree.

pub mod i18n;

use std::convert::Infallible;
use std::net::SocketAddr;

use askama::Template;
use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures_util::stream::Stream;
use jiff::Timestamp;
use liaison_core::audit::{AuditEntry, AuditEvent, StoredLeaf, verify_log};
use liaison_core::envelope::Receipt;
use liaison_core::label::Label;
use liaison_core::lifecycle::Participation;
use liaison_core::precedence::Precedence;
use liaison_store::Store;
use serde::Deserialize;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

use crate::api::{self, ApiError, MessageView};
use crate::node::{SendError, SendRequest};
use crate::users::{Clearance, LoginError, Principal, Role, SESSION_COOKIE};
use crate::web::{App, ConsoleUser, csrf_ok, url_encode};
use i18n::Tr;

/// Messages listed per page of a box.
pub const LIST_ROWS_MAX: u32 = 200;
/// Audit entries shown on the audit page.
pub const AUDIT_ROWS_SHOWN: u64 = 50;
/// Audit rows read per query while verifying the whole log.
const AUDIT_VERIFY_CHUNK: u32 = 10_000;
/// Longest body preview in a list.
const PREVIEW_CHARS: usize = 80;

pub fn router<S: Store>(app: App<S>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/inbox") }))
        .route("/login", get(login_page::<S>).post(login::<S>))
        .route("/logout", post(logout::<S>))
        .route("/inbox", get(inbox::<S>))
        .route("/sent", get(sent::<S>))
        .route("/messages/{id}", get(message::<S>))
        .route("/messages/{id}/ack", post(ack::<S>))
        .route("/compose", get(compose_page::<S>).post(compose::<S>))
        .route("/hotlines", get(hotlines::<S>))
        .route("/agreements", get(agreements::<S>))
        .route("/agreements/{id}/events", post(record_event::<S>))
        .route("/agreements/{file}", get(agreement_file::<S>))
        .route("/consents", get(consents::<S>))
        .route("/audit", get(audit::<S>))
        .route("/events", get(events::<S>))
        .route("/static/console.css", get(css))
        .route("/static/console.js", get(js))
        .with_state(app)
}

/// What every signed-in page shows around its content.
#[derive(Debug)]
pub struct Chrome {
    pub tr: Tr,
    pub title: String,
    pub party: String,
    pub user: String,
    pub clearance: String,
    pub csrf: String,
    /// Which node events make this page refresh itself.
    pub live: &'static str,
    pub nav: Vec<(&'static str, &'static str, bool)>,
}

const NAV: [(&str, &str); 7] = [
    ("/inbox", "nav-inbox"),
    ("/sent", "nav-sent"),
    ("/compose", "nav-compose"),
    ("/hotlines", "nav-hotlines"),
    ("/agreements", "nav-agreements"),
    ("/consents", "nav-consents"),
    ("/audit", "nav-audit"),
];

fn chrome<S: Store>(
    app: &App<S>,
    p: &Principal,
    active: &str,
    title_key: &str,
    live: &'static str,
) -> Chrome {
    let tr = Tr::new(p.language);
    Chrome {
        title: tr.t(title_key),
        party: app.node.party.to_string(),
        user: p.display_name.clone(),
        clearance: match &p.clearance {
            Clearance::Level(l) => l.clone(),
            Clearance::Unlimited => "—".into(),
        },
        csrf: match &p.via {
            crate::users::Via::Session { csrf, .. } => csrf.clone(),
            _ => String::new(),
        },
        live,
        nav: NAV
            .iter()
            .filter(|(href, _)| match *href {
                "/consents" => p.has(Role::ReleaseOfficer),
                "/audit" => p.has(Role::Administrator),
                _ => true,
            })
            .map(|(href, key)| (*href, *key, *href == active))
            .collect(),
        tr,
    }
}

fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("page failed to render: {e}"),
        )
            .into_response(),
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    c: Chrome,
    message: String,
}

fn error_page<S: Store>(app: &App<S>, p: &Principal, e: ApiError) -> Response {
    let key = match e.status() {
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not-found",
        _ => "forbidden",
    };
    let mut res = render(&ErrorPage {
        c: chrome(app, p, "", key, ""),
        message: e.message().to_owned(),
    });
    *res.status_mut() = e.status();
    res
}

/// A time in the person's own zone.
pub fn show(p: &Principal, t: Timestamp) -> String {
    t.to_zoned(p.time_zone.clone())
        .strftime("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

fn show_str(p: &Principal, rfc3339: &str) -> String {
    rfc3339
        .parse::<Timestamp>()
        .map(|t| show(p, t))
        .unwrap_or_else(|_| rfc3339.to_owned())
}

fn bad_csrf<S: Store>(app: &App<S>, p: &Principal) -> Response {
    error_page(
        app,
        p,
        ApiError::new(
            StatusCode::FORBIDDEN,
            "this form is stale or did not come from this console (CSRF check failed); reload the page and try again",
        ),
    )
}

// ----- sign-in -------------------------------------------------------------

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    tr: Tr,
    party: String,
    error: String,
    next: String,
    name: String,
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    #[serde(default)]
    next: Option<String>,
}

fn safe_next(next: Option<&str>) -> String {
    // Only paths on this console: never `//host` or a full URL.
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/inbox".to_owned(),
    }
}

async fn login_page<S: Store>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    let tr = Tr::new(i18n::from_accept_language(
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    ));
    render(&LoginPage {
        tr,
        party: app.node.party.to_string(),
        error: String::new(),
        next: safe_next(q.next.as_deref()),
        name: String::new(),
    })
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    name: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
}

fn same_origin(headers: &HeaderMap) -> bool {
    // Browsers send Origin on every cross-site POST; when present it must be ours.
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest == host)
}

async fn login<S: Store>(
    State(app): State<App<S>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let tr = Tr::new(i18n::from_accept_language(
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    ));
    let page = |status: StatusCode, error: String| {
        let mut r = render(&LoginPage {
            tr,
            party: app.node.party.to_string(),
            error,
            next: safe_next(f.next.as_deref()),
            name: f.name.clone(),
        });
        *r.status_mut() = status;
        r
    };
    if !same_origin(&headers) {
        return page(StatusCode::FORBIDDEN, "cross-site sign-in refused".into());
    }
    match app
        .people
        .login(
            &app.node.store,
            &f.name,
            &f.password,
            &addr.ip().to_string(),
        )
        .await
    {
        Ok((secret, p)) => {
            let mut res = Redirect::to(&safe_next(f.next.as_deref())).into_response();
            let cookie = format!(
                "{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
                app.people.policy.absolute_ms / 1000
            );
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                res.headers_mut().append(header::SET_COOKIE, v);
            }
            tracing::info!(user = %p.name, "signed in");
            res
        }
        Err(LoginError::Wrong) => page(StatusCode::UNAUTHORIZED, tr.t("login-wrong")),
        Err(LoginError::Throttled { retry_after_s }) => {
            let mut r = page(
                StatusCode::TOO_MANY_REQUESTS,
                tr.t1("login-throttled", "seconds", &retry_after_s.to_string()),
            );
            if let Ok(v) = HeaderValue::from_str(&retry_after_s.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Err(LoginError::Unavailable(e)) => page(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: Option<String>,
}

async fn logout<S: Store>(
    State(app): State<App<S>>,
    ConsoleUser(p): ConsoleUser,
    Form(f): Form<CsrfForm>,
) -> Response {
    if !csrf_ok(&p, f.csrf.as_deref()) {
        return bad_csrf(&app, &p);
    }
    let _ = app.people.logout(&app.node.store, &p).await;
    let mut res = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
    )) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

// ----- boxes and messages --------------------------------------------------

struct Row {
    id: String,
    precedence: String,
    peer: String,
    label: String,
    at: String,
    state: String,
    preview: String,
    loud: bool,
}

#[derive(Template)]
#[template(path = "messages.html")]
struct MessagesPage {
    c: Chrome,
    desks: Vec<(String, bool)>,
    rows: Vec<Row>,
    inbound: bool,
}

#[derive(Debug, Deserialize)]
pub struct DeskQuery {
    #[serde(default)]
    desk: Option<String>,
}

fn state_text(tr: &Tr, state: &str) -> String {
    match state {
        "queued" | "sending" | "leased" => tr.t("state-queued"),
        "delivered" => tr.t("state-delivered"),
        "acknowledged" => tr.t("state-acknowledged"),
        "bounced" => tr.t("state-bounced"),
        "received" => tr.t("unacknowledged"),
        "escalated" => tr.t("state-escalated"),
        other => other.to_owned(),
    }
}

fn preview(body: &str) -> String {
    let mut s: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(PREVIEW_CHARS)
        .collect();
    if body.chars().count() > PREVIEW_CHARS {
        s.push('…');
    }
    if s.trim().is_empty() {
        s = "(…)".into();
    }
    s
}

async fn boxed<S: Store>(app: App<S>, p: Principal, q: DeskQuery, inbound: bool) -> Response {
    let set = app.node.agreements();
    let desks = p.desk_list(&set, app.node.party.as_str());
    let chosen = q
        .desk
        .filter(|d| desks.contains(d))
        .or_else(|| desks.first().cloned());
    let (active, title) = if inbound {
        ("/inbox", "inbox-title")
    } else {
        ("/sent", "sent-title")
    };
    let c = chrome(
        &app,
        &p,
        active,
        title,
        if inbound { "inbox" } else { "outbox" },
    );
    let mut views: Vec<MessageView> = match &chosen {
        Some(d) => match api::list_messages(
            &app.node,
            &p,
            d,
            if inbound { "inbox" } else { "outbox" },
            LIST_ROWS_MAX,
        )
        .await
        {
            Ok(v) => v,
            Err(e) => return error_page(&app, &p, e),
        },
        None => Vec::new(),
    };
    let rank = |m: &MessageView| {
        m.precedence
            .parse::<Precedence>()
            .map(|p| p.rank())
            .unwrap_or(0)
    };
    // FLASH on top; within a precedence, what still needs a person first, then newest.
    views.sort_by(|a, b| {
        rank(b)
            .cmp(&rank(a))
            .then((a.state == "acknowledged").cmp(&(b.state == "acknowledged")))
            .then(b.seq.cmp(&a.seq))
    });
    let rows = views
        .iter()
        .map(|m| Row {
            id: m.id.clone(),
            precedence: m.precedence.clone(),
            peer: if inbound {
                m.from.clone()
            } else {
                m.to.clone()
            },
            label: m.label.clone(),
            at: show_str(&p, &m.created_at),
            state: state_text(&c.tr, &m.state),
            preview: preview(&m.body),
            loud: inbound
                && m.state != "acknowledged"
                && matches!(m.precedence.as_str(), "FLASH" | "IMMEDIATE"),
        })
        .collect();
    render(&MessagesPage {
        desks: desks
            .iter()
            .map(|d| (d.clone(), Some(d) == chosen.as_ref()))
            .collect(),
        c,
        rows,
        inbound,
    })
}

async fn inbox<S: Store>(
    State(app): State<App<S>>,
    ConsoleUser(p): ConsoleUser,
    Query(q): Query<DeskQuery>,
) -> Response {
    boxed(app, p, q, true).await
}

async fn sent<S: Store>(
    State(app): State<App<S>>,
    ConsoleUser(p): ConsoleUser,
    Query(q): Query<DeskQuery>,
) -> Response {
    boxed(app, p, q, false).await
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    c: Chrome,
    m: MessageView,
    created: String,
    state: String,
    agreement_channel: String,
    receipts: Vec<String>,
    can_ack: bool,
    inbound: bool,
    loud: bool,
}

fn receipt_lines(tr: &Tr, p: &Principal, m: &MessageView) -> Vec<String> {
    let mut out = Vec::new();
    for v in &m.receipts {
        let Ok(r) = serde_json::from_value::<Receipt>(v.clone()) else {
            continue;
        };
        let b = &r.body;
        let at = show(p, b.at);
        let party = b.receiver.to_string();
        let line = match b.kind {
            liaison_core::envelope::ReceiptKind::Stored => tr.tn(
                "receipt-delivered",
                &[
                    ("party", &party),
                    ("at", &at),
                    (
                        "label",
                        &b.receiver_label
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                    ),
                ],
            ),
            liaison_core::envelope::ReceiptKind::Refused => {
                tr.tn("receipt-refused", &[("party", &party), ("at", &at)])
            }
            liaison_core::envelope::ReceiptKind::Acknowledged => tr.tn(
                "receipt-acknowledged",
                &[
                    ("party", &party),
                    ("at", &at),
                    ("who", b.acknowledged_by.as_deref().unwrap_or("?")),
                ],
            ),
        };
        out.push(line);
    }
    if m.direction == "in"
        && m.receipts.is_empty()
        && let (Some(by), Some(at)) = (&m.acknowledged_by, &m.acknowledged_at)
    {
        out.push(tr.tn("acknowledged-by", &[("who", by), ("at", &show_str(p, at))]));
    }
    out
}

async fn message<S: Store>(
    State(app): State<App<S>>,
    ConsoleUser(p): ConsoleUser,
    Path(id): Path<String>,
) -> Response {
    let m = match api::message_for(&app.node, &p, &id).await {
        Ok(m) => m,
        Err(e) => return error_page(&app, &p, e),
    };
    let inbound = m.direction == "in";
    let mut c = chrome(
        &app,
        &p,
        if inbound { "/inbox" } else { "/sent" },
        "message-title",
        if inbound { "inbox" } else { "outbox" },
    );
    let receipts = receipt_lines(&c.tr, &p, &m);
    c.title = format!("{} {}", m.precedence, m.label);
    render(&MessagePage {
        created: show_str(&p, &m.created_at),
        state: state_text(&c.tr, &m.state),
        agreement_channel: c.tr.tn(
            "agreement-channel",
            &[("agreement", &m.agreement), ("channel", &m.channel)],
        ),
        receipts,
        can_ack: inbound && m.state != "acknowledged" && p.has(Role::DutyOfficer),
        loud: inbound
            && m.state != "acknowledged"
            && matches!(m.precedence.as_str(), "FLASH" | "IMMEDIATE"),
        inbound,
        c,
        m,
    })
}

async fn ack<S: Store>(
    State(app): State<App<S>>,
    ConsoleUser(p): ConsoleUser,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if !csrf_ok(&p, f.csrf.as_deref()) {
        return bad_csrf(&app, &p);
    }
    match api::acknowledge_as(&app.node, &p, &id, None).await {
        Ok(_) => Redirect::to(&format!("/messages/{}", url_encode(&id))).into_response(),
        Err(e) => error_page(&app, &p, e),
    }
}

// ----- compose -------------------------------------------------------------

#[derive(Template)]
#[template(path = "compose.html")]
struct ComposePage {
    c: Chrome,
    froms: Vec<(String, bool)>,
    tos: Vec<(String, bool)>,
    labels: Vec<(String, String, bool)>,
    precedences: Vec<(String, bool)>,
    body: String,
    reply_to: String,
    decision_class: &'static str,
    decision_text: String,
    reasons: Vec<String>,
    notice: String,
    allowed_pattern: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct ComposeForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    precedence: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    reply_to: Option<String>,
    #[serde(default)]
    action: Option<String>,
}

/// Desks of other parties that `from` desks can reach over channels of agreements in
/// force for both parties now.
fn reachable<S: Store>(app: &App<S>, froms: &[String], now: Timestamp) -> Vec<String> {
    let set = app.node.agreements();
    let mut out: Vec<String> = Vec::new();
    for c in set.iter() {
        for ch in &c.agreement.channels {
            for from in ch
                .desks
                .iter()
                .filter(|d| froms.iter().any(|f| f == d.as_str()))
            {
                if !c.participation(&from.party(), now).participates() {
                    continue;
                }
                for to in &ch.desks {
                    if to.party_str() != from.party_str()
                        && c.participation(&to.party(), now).participates()
                    {
                        out.push(to.as_str().to_owned());
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

async fn compose_view<S: Store>(
    app: &App<S>,
    p: &Principal,
    f: ComposeForm,
    outcome: Option<(bool, String, Vec<String>)>,
    notice: String,
) -> Response {
    let node = &app.node;
    let set = node.agreements();
    let now = node.now();
    let c = chrome(app, p, "/compose", "compose-title", "");
    let desks = p.desk_list(&set, node.party.as_str());
    let mut reply_to = String::new();
    let mut to_default = f.to.clone();
    if let Some(r) = f.reply_to.as_deref().filter(|r| !r.is_empty())
        && let Ok(m) = api::message_for(node, p, r).await
    {
        reply_to = m.id.clone();
        if to_default.is_none() {
            to_default = Some(m.from.clone());
        }
    }
    let from = f.from.clone().or_else(|| desks.first().cloned());
    let tos = reachable(app, &desks, now);
    let to = to_default.or_else(|| tos.first().cloned());
    let party = node.party.clone();
    let clearance_rank = match &p.clearance {
        Clearance::Level(l) => set.level_ranks(&Label::party(&party, l)).map(|(lo, _)| lo),
        Clearance::Unlimited => Some(usize::MAX),
    };
    let levels: Vec<String> = set
        .party_levels(party.as_str())
        .into_iter()
        .filter(|(_, r)| clearance_rank.is_some_and(|c| *r <= c))
        .map(|(l, _)| Label::party(&party, &l).to_string())
        .collect();
    let label = f.label.clone().or_else(|| levels.first().cloned());
    let precedence = f.precedence.clone().unwrap_or_else(|| "ROUTINE".into());
    let (decision_class, decision_text, reasons) = match outcome {
        Some((true, text, reasons)) => ("allowed", text, reasons),
        Some((false, text, reasons)) => ("refused", text, reasons),
        None => match (&from, &to, &label) {
            (Some(fr), Some(t), Some(l)) => {
                let req = SendRequest {
                    from: fr.clone(),
                    to: t.clone(),
                    label: l.clone(),
                    precedence: precedence.clone(),
                    body: String::new(),
                    originator: None,
                    reply_to: None,
                };
                decision_words(&c.tr, node.prepare(&req))
            }
            _ => ("", c.tr.t("decision-pending"), Vec::new()),
        },
    };
    let allowed_pattern = c.tr.tn(
        "decision-allowed",
        &[
            ("label", "{label}"),
            ("agreement", "{agreement}"),
            ("channel", "{channel}"),
        ],
    );
    render(&ComposePage {
        froms: desks
            .iter()
            .map(|d| (d.clone(), Some(d) == from.as_ref()))
            .collect(),
        tos: tos
            .iter()
            .map(|d| (d.clone(), Some(d) == to.as_ref()))
            .collect(),
        labels: levels
            .iter()
            .map(|l| {
                let shown = l.split_once(':').map(|(_, lv)| lv).unwrap_or(l).to_owned();
                (l.clone(), shown, Some(l) == label.as_ref())
            })
            .collect(),
        precedences: ["FLASH", "IMMEDIATE", "PRIORITY", "ROUTINE"]
            .iter()
            .map(|x| ((*x).to_owned(), *x == precedence))
            .collect(),
        body: f.body.unwrap_or_default(),
        reply_to,
        decision_class,
        decision_text,
        reasons,
        notice,
        allowed_pattern,
        c,
    })
}

fn decision_words(
    tr: &Tr,
    r: Result<crate::node::Prepared, SendError>,
) -> (&'static str, String, Vec<String>) {
    match r {
        Ok(prep) => {
            let d = prep.decision;
            let reasons: Vec<String> = d.reasons.iter().map(ToString::to_string).collect();
            if d.allowed() {
                (
                    "allowed",
                    tr.tn(
                        "decision-allowed",
                        &[
                            (
                                "label",
                                &d.receiver_label.map(|l| l.to_string()).unwrap_or_default(),
                            ),
                            ("agreement", d.agreement.as_deref().unwrap_or("")),
                            ("channel", d.channel.as_deref().unwrap_or("")),
                        ],
                    ),
                    reasons,
                )
            } else {
                ("refused", tr.t("decision-refused"), reasons)
            }
        }
        Err(e) => ("refused", tr.t("decision-refused"), vec![e.to_string()]),
    }
}

async fn compose_page<S: Store>(
    State(app): State<App<S>>,
    ConsoleUser(p): ConsoleUser,
    Query(f): Query<ComposeForm>,
) -> Response {
    if let Err(d) = p.require(Role::DutyOfficer) {
        return error_page(&app, &p, d.into());
    }
    compose_view(&app, &p, f, None, String::new()).await
}

async fn compose<S: Store>(
    State(app): State<App<S>>,
    ConsoleUser(p): ConsoleUser,
    Form(f): Form<ComposeForm>,
) -> Response {
    if !csrf_ok(&p, f.csrf.as_deref()) {
        return bad_csrf(&app, &p);
    }
    let req = SendRequest {
        from: f.from.clone().unwrap_or_default(),
        to: f.to.clone().unwrap_or_default(),
        label: f.label.clone().unwrap_or_default(),
        precedence: f.precedence.clone().unwrap_or_else(|| "ROUTINE".into()),
        body: f.body.clone().unwrap_or_default(),
        originator: None,
        reply_to: f.reply_to.clone().filter(|r| !r.is_empty()),
    };
    if let Err(e) = api::authorise_send(&app.node, &p, &req) {
        let tr = Tr::new(p.language);
        let mut r = compose_view(
            &app,
            &p,
            f,
            Some((
                false,
                tr.t("decision-refused"),
                vec![e.message().to_owned()],
            )),
            String::new(),
        )
        .await;
        *r.status_mut() = StatusCode::FORBIDDEN;
        return r;
    }
    let tr = Tr::new(p.language);
    if f.action.as_deref() == Some("check") {
        let outcome = decision_words(&tr, app.node.prepare(&req));
        return compose_view(
            &app,
            &p,
            f,
            Some((outcome.0 == "allowed", outcome.1, outcome.2)),
            String::new(),
        )
        .await;
    }
    match app.node.send(req).await {
        Ok(a) => Redirect::to(&format!("/messages/{}", url_encode(&a.id))).into_response(),
        Err(e) => {
            let status = match &e {
                SendError::Refused(_) => StatusCode::FORBIDDEN,
                SendError::BadRequest { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                SendError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            // A refusal at send time carries the decision's reasons; show them.
            let (text, reasons) = match e {
                SendError::Refused(d) => (
                    tr.t("decision-refused"),
                    d.reasons.iter().map(ToString::to_string).collect(),
                ),
                other => {
                    let (_, text, reasons) = decision_words(&tr, Err(other));
                    (text, reasons)
                }
            };
            let mut r =
                compose_view(&app, &p, f, Some((false, text, reasons)), String::new()).await;
            *r.status_mut() = status;
            r
        }
    }
}

// ----- hotlines ------------------------------------------------------------

struct LineView {
    channel: String,
    peer: String,
    desks: String,
    state: String,
    state_text: String,
    last: String,
    rtt: String,
    deadline: String,
    failure: String,
    history: Vec<(String, bool, String)>,
}

#[derive(Template)]
#[template(path = "hotlines.html")]
struct HotlinesPage {
    c: Chrome,
    lines: Vec<LineView>,
    escalations: Vec<(String, String, String)>,
}

async fn hotlines<S: Store>(State(app): State<App<S>>, ConsoleUser(p): ConsoleUser) -> Response {
    let c = chrome(
        &app,
        &p,
        "/hotlines",
        "hotlines-title",
        "hotlines escalations inbox",
    );
    let lines = api::hotline_views(&app.node)
        .into_iter()
        .map(|h| LineView {
            state_text: match h.state.as_str() {
                "up" => c.tr.t("hotline-up"),
                "degraded" => c.tr.t("hotline-degraded"),
                "down" => c.tr.t("hotline-down"),
                _ => c.tr.t("hotline-unknown"),
            },
            channel: format!("{} / {}", h.agreement, h.channel),
            peer: h.peer,
            desks: format!("{} ↔ {}", h.my_desk, h.peer_desk),
            state: h.state,
            last: h
                .last_ok_at
                .as_deref()
                .map(|t| show_str(&p, t))
                .unwrap_or_else(|| "—".into()),
            rtt: h
                .rtt_ms
                .map(|r| format!("{r} ms"))
                .unwrap_or_else(|| "—".into()),
            deadline: c.tr.t1(
                "ack-deadline",
                "seconds",
                &(h.ack_deadline_ms / 1000).to_string(),
            ),
            failure: h.failure.unwrap_or_default(),
            history: h
                .history
                .iter()
                .map(|(t, r)| {
                    (
                        show_str(&p, t),
                        r.is_some(),
                        r.map(|x| format!("{x} ms")).unwrap_or_else(|| "✗".into()),
                    )
                })
                .collect(),
        })
        .collect();
    let escalations = app
        .node
        .store
        .escalation_list()
        .await
        .unwrap_or_default()
        .into_iter()
        .rev()
        .take(50)
        .map(|e| {
            (
                e.envelope_id,
                Timestamp::from_millisecond(e.raised_ms)
                    .map(|t| show(&p, t))
                    .unwrap_or_default(),
                e.reason,
            )
        })
        .collect();
    render(&HotlinesPage {
        c,
        lines,
        escalations,
    })
}

// ----- agreements ----------------------------------------------------------

struct AgreementView {
    id: String,
    title: String,
    version: u32,
    parties: Vec<(String, String, String, String)>,
    timeline: Vec<(String, String, bool)>,
    next_deadline: String,
    deadline_ms: i64,
    countdown: String,
    channels: Vec<String>,
    conditions: Vec<(String, String)>,
    obligations: Vec<(String, String, String)>,
}

#[derive(Template)]
#[template(path = "agreements.html")]
struct AgreementsPage {
    c: Chrome,
    agreements: Vec<AgreementView>,
    can_record: bool,
    /// The node's clock at render and its speed, so the page can count down in the
    /// node's (possibly scenario) time.
    now_ms: i64,
    speed: f64,
}

fn span_words(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h {m}m")
    } else {
        format!("{h:02}:{m:02}:{sec:02}")
    }
}

async fn agreements<S: Store>(State(app): State<App<S>>, ConsoleUser(p): ConsoleUser) -> Response {
    let c = chrome(&app, &p, "/agreements", "agreements-title", "agreements");
    let set = app.node.agreements();
    let now = app.node.now();
    let mut views = Vec::new();
    for comp in set.iter() {
        let a = &comp.agreement;
        let mut timeline: Vec<(Timestamp, String)> = Vec::new();
        let mut deadlines: Vec<Timestamp> = Vec::new();
        if let Some(t) = &a.term {
            timeline.push((t.effective.timestamp(), c.tr.t("effective")));
        }
        let parties = a
            .parties
            .iter()
            .map(|party| {
                let s = comp.participation(&party.id, now);
                match &s {
                    Participation::InForce {
                        term_ends: Some(end),
                    } => deadlines.push(*end),
                    Participation::NoticeGiven { lapses, given, .. } => {
                        deadlines.push(*lapses);
                        timeline.push((*given, format!("{}: notice of withdrawal", party.id)));
                        timeline.push((*lapses, format!("{}: participation lapses", party.id)));
                    }
                    Participation::Lapsed { at, .. } => {
                        timeline.push((*at, format!("{}: lapsed", party.id)));
                    }
                    Participation::Signed { effective } => deadlines.push(*effective),
                    _ => {}
                }
                (
                    party.id.to_string(),
                    party.name.clone(),
                    s.name().to_owned(),
                    s.explain(&party.id, &comp.zone),
                )
            })
            .collect();
        for e in &a.events {
            timeline.push((e.at, format!("{}: {}", e.party, event_name(&e.kind))));
        }
        timeline.sort_by_key(|(t, _)| *t);
        timeline.dedup();
        let next = deadlines.into_iter().filter(|d| *d > now).min();
        views.push(AgreementView {
            id: a.id.clone(),
            title: a.title.clone(),
            version: a.version,
            parties,
            timeline: timeline
                .into_iter()
                .map(|(t, w)| (show(&p, t), w, t <= now))
                .collect(),
            next_deadline: next.map(|t| show(&p, t)).unwrap_or_default(),
            deadline_ms: next.map(|t| t.as_millisecond()).unwrap_or_default(),
            countdown: next
                .map(|t| {
                    c.tr.t1(
                        "countdown",
                        "time",
                        &span_words(t.as_millisecond() - now.as_millisecond()),
                    )
                })
                .unwrap_or_default(),
            channels: a
                .channels
                .iter()
                .map(|ch| {
                    format!(
                        "{} ({:?}): {} — {}: {}",
                        ch.id,
                        ch.kind,
                        ch.desks
                            .iter()
                            .map(|d| d.as_str())
                            .collect::<Vec<_>>()
                            .join(" ↔ "),
                        c.tr.t("ceiling"),
                        a.common_name(ch.ceiling)
                    )
                })
                .collect(),
            conditions: a
                .conditions
                .iter()
                .map(|x| (x.id.clone(), x.text.clone()))
                .collect(),
            obligations: a
                .obligations
                .iter()
                .map(|o| {
                    let owed = match &o.owed {
                        liaison_core::agreement::Owed::Payment { amount, currency } => {
                            format!("{} {currency}", liaison_core::agreement::thousands(*amount))
                        }
                        liaison_core::agreement::Owed::Act { act } => act.clone(),
                    };
                    (
                        format!(
                            "{} → {}: {owed} per {:?}{}",
                            o.from,
                            o.to,
                            o.per,
                            o.period
                                .as_deref()
                                .map(|x| format!(" ({x})"))
                                .unwrap_or_default()
                        ),
                        format!("{:?}", o.state).to_lowercase(),
                        o.source.clone(),
                    )
                })
                .collect(),
        });
    }
    render(&AgreementsPage {
        c,
        agreements: views,
        can_record: p.has(Role::AgreementOfficer),
        now_ms: now.as_millisecond(),
        speed: app.node.clock.speed(),
    })
}

#[derive(Debug, Deserialize)]
pub struct EventForm {
    #[serde(default)]
    csrf: Option<String>,
    kind: String,
    #[serde(default)]
    condition: Option<String>,
}

/// An agreement officer records an event for this party: signed with the party's key,
/// checked and installed here like any agreement update. The other parties receive the
/// signed file from the officer (download link on the page) and install it in turn.
async fn record_event<S: Store>(
    State(app): State<App<S>>,
    ConsoleUser(p): ConsoleUser,
    Path(id): Path<String>,
    Form(f): Form<EventForm>,
) -> Response {
    if !csrf_ok(&p, f.csrf.as_deref()) {
        return bad_csrf(&app, &p);
    }
    if let Err(d) = p.require(Role::AgreementOfficer) {
        return error_page(&app, &p, d.into());
    }
    let node = &app.node;
    let fail = |status: StatusCode, m: String| error_page(&app, &p, ApiError::new(status, m));
    let row = match node.store.agreement_get(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => return fail(StatusCode::NOT_FOUND, format!("no agreement `{id}`")),
        Err(e) => return fail(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    if !matches!(
        f.kind.as_str(),
        "condition-recorded" | "notice-of-withdrawal" | "notice-withdrawn"
    ) {
        return fail(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "kind: `{}` is not an event officers record here, expected condition-recorded, notice-of-withdrawal or notice-withdrawn",
                f.kind
            ),
        );
    }
    let condition = f.condition.as_deref().filter(|c| !c.is_empty());
    let file = format!("{id}.toml");
    let updated = match liaison_core::signed_document::append_event(
        &file,
        &row.text,
        &node.key,
        &f.kind,
        node.now(),
        condition,
    ) {
        Ok(t) => t,
        Err(e) => return fail(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    };
    if let Err(e) =
        crate::install_agreement(&node.store, &file, &updated, node.now().as_millisecond()).await
    {
        return fail(StatusCode::UNPROCESSABLE_ENTITY, e.to_string());
    }
    let _ = node.refresh_agreements().await;
    crate::events::publish(node, "agreements");
    tracing::info!(agreement = %id, kind = %f.kind, by = %p.name, "agreement event recorded");
    Redirect::to(&format!("/agreements#agreement-{}", url_encode(&id))).into_response()
}

/// The installed text of an agreement (with every signed event), to hand to the other
/// parties.
async fn agreement_file<S: Store>(
    State(app): State<App<S>>,
    ConsoleUser(p): ConsoleUser,
    Path(file): Path<String>,
) -> Response {
    let Some(id) = file.strip_suffix(".toml") else {
        return error_page(
            &app,
            &p,
            ApiError::new(StatusCode::NOT_FOUND, format!("no `{file}`")),
        );
    };
    match app.node.store.agreement_get(id).await {
        Ok(Some(r)) => (
            [
                (
                    header::CONTENT_TYPE,
                    "application/toml; charset=utf-8".to_owned(),
                ),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{}.toml\"", url_encode(id)),
                ),
            ],
            r.text,
        )
            .into_response(),
        Ok(None) => error_page(
            &app,
            &p,
            ApiError::new(StatusCode::NOT_FOUND, format!("no agreement `{id}`")),
        ),
        Err(e) => error_page(&app, &p, e.into()),
    }
}

fn event_name(k: &liaison_core::agreement::EventKind) -> String {
    use liaison_core::agreement::EventKind as K;
    match k {
        K::Signed => "signed".into(),
        K::NoticeOfWithdrawal => "notice of withdrawal".into(),
        K::NoticeWithdrawn { condition: Some(c) } => format!("notice withdrawn once `{c}`"),
        K::NoticeWithdrawn { condition: None } => "notice withdrawn".into(),
        K::ConditionRecorded { condition } => format!("condition `{condition}` recorded"),
        K::Suspended { .. } => "suspended".into(),
        K::Resumed => "resumed".into(),
        K::Terminated => "terminated".into(),
    }
}

// ----- consents and audit --------------------------------------------------

#[derive(Template)]
#[template(path = "consents.html")]
struct ConsentsPage {
    c: Chrome,
    rows: Vec<(String, String)>,
}

async fn recent_entries<S: Store>(app: &App<S>, n: u64) -> Vec<(u64, AuditEntry)> {
    let Ok((size, _)) = app.node.store.audit_head().await else {
        return Vec::new();
    };
    let start = size.saturating_sub(n);
    app.node
        .store
        .audit_rows(start, u32::try_from(n).unwrap_or(u32::MAX))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| AuditEntry::decode(&r.entry).map(|e| (r.index, e)))
        .collect()
}

async fn consents<S: Store>(State(app): State<App<S>>, ConsoleUser(p): ConsoleUser) -> Response {
    let c = chrome(&app, &p, "/consents", "consents-title", "");
    if let Err(d) = p.require(Role::ReleaseOfficer) {
        return error_page(&app, &p, d.into());
    }
    let rows = recent_entries(&app, 2000)
        .await
        .into_iter()
        .rev()
        .filter_map(|(_, e)| match &e.event {
            AuditEvent::MessageRefused {
                from,
                to,
                label,
                reasons,
            } if reasons.iter().any(|r| r.contains("consent")) => Some((
                show(&p, e.at),
                format!("{from} → {to} [{label}]: {}", reasons.join("; ")),
            )),
            AuditEvent::ArrivalRefused { id, from, reasons }
                if reasons.iter().any(|r| r.contains("consent")) =>
            {
                Some((
                    show(&p, e.at),
                    format!("{id} from {from}: {}", reasons.join("; ")),
                ))
            }
            _ => None,
        })
        .take(100)
        .collect();
    render(&ConsentsPage { c, rows })
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    c: Chrome,
    ok: bool,
    verified: String,
    peers: Vec<(String, String, bool)>,
    entries: Vec<(u64, String, String, String)>,
}

async fn audit<S: Store>(State(app): State<App<S>>, ConsoleUser(p): ConsoleUser) -> Response {
    let c = chrome(&app, &p, "/audit", "audit-title", "");
    if let Err(d) = p.require(Role::Administrator) {
        return error_page(&app, &p, d.into());
    }
    let store = &app.node.store;
    let mut rows = Vec::new();
    let mut start = 0u64;
    let (ok, verified) = loop {
        match store.audit_rows(start, AUDIT_VERIFY_CHUNK).await {
            Ok(chunk) if chunk.is_empty() => break (true, String::new()),
            Ok(chunk) => {
                start += chunk.len() as u64;
                rows.extend(chunk);
            }
            Err(e) => break (false, e.to_string()),
        }
    };
    let (ok, verified) = if !ok {
        (false, verified)
    } else {
        match verify_log(rows.iter().map(|r| StoredLeaf {
            index: r.index,
            entry: &r.entry,
            leaf: r.leaf,
            root_after: r.root_after,
        })) {
            Ok(f) => (
                true,
                c.tr.tn(
                    "audit-verified",
                    &[
                        ("size", &f.size().to_string()),
                        (
                            "root",
                            &hex::encode(f.root()).chars().take(16).collect::<String>(),
                        ),
                    ],
                ),
            ),
            Err((i, why)) => (
                false,
                c.tr.tn("audit-broken", &[("index", &i.to_string()), ("why", &why)]),
            ),
        }
    };
    drop(rows);
    let peers = crate::audit::peer_logs(&app.node)
        .await
        .into_iter()
        .map(|(peer, log)| {
            let size = log
                .head
                .as_ref()
                .map(|h| format!("{} entries", h.head.size))
                .unwrap_or_else(|| "—".into());
            match log.forked {
                Some(d) => (peer, c.tr.t1("peer-forked", "detail", &d), false),
                None => (peer, format!("{size}: {}", c.tr.t("peer-consistent")), true),
            }
        })
        .collect();
    let entries = recent_entries(&app, AUDIT_ROWS_SHOWN)
        .await
        .into_iter()
        .rev()
        .map(|(i, e)| {
            let detail = serde_json::to_value(&e.event)
                .ok()
                .and_then(|v| v.as_object().cloned())
                .map(|o| {
                    o.iter()
                        .filter(|(k, _)| k.as_str() != "kind")
                        .map(|(k, v)| {
                            format!(
                                "{k}={}",
                                v.as_str()
                                    .map(str::to_owned)
                                    .unwrap_or_else(|| v.to_string())
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            (i, show(&p, e.at), e.event.name().to_owned(), detail)
        })
        .collect();
    render(&AuditPage {
        c,
        ok,
        verified,
        peers,
        entries,
    })
}

// ----- live updates and assets ---------------------------------------------

async fn events<S: Store>(
    State(app): State<App<S>>,
    ConsoleUser(_p): ConsoleUser,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = app.node.events.subscribe();
    let stream = BroadcastStream::new(rx).filter_map(|m| match m {
        Ok(what) => Some(Ok(Event::default().event("change").data(what))),
        // A listener that fell behind refreshes everything rather than miss a change.
        Err(_) => Some(Ok(Event::default().event("change").data("inbox"))),
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../../static/console.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../../static/console.js"),
    )
        .into_response()
}
