//! The local API for this party's people and tools: send, list, acknowledge, hotlines,
//! escalations, metrics, health. JSON in and out; every refusal says why.

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use liaison_core::audit::AuditEvent;
use liaison_core::envelope::{Envelope, EnvelopeId, Receipt, ReceiptBody, ReceiptKind};
use liaison_core::ids::DeskId;
use liaison_store::{AckOutcome, InboxRow, OutboxRow, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::metrics::Exposition;
use crate::node::{Node, SendError, SendRequest};
use crate::users::{Denied, Principal, Via};
use crate::web::{ApiCaller, App};

/// Largest request body accepted by the local API.
pub const API_BODY_BYTES_MAX: usize = 2 * 1024 * 1024;
pub const LIST_LIMIT_MAX: u32 = 1000;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: String,
    reasons: Vec<String>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.error
    }

    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            reasons: Vec::new(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = if self.reasons.is_empty() {
            serde_json::json!({ "error": self.error })
        } else {
            serde_json::json!({ "error": self.error, "reasons": self.reasons })
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}"),
        )
    }
}

fn json_rejection(e: JsonRejection) -> ApiError {
    let status = match &e {
        JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        JsonRejection::BytesRejection(_) => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, format!("bad request body: {}", e.body_text()))
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        Self::new(StatusCode::FORBIDDEN, d.to_string())
    }
}

pub fn router<S: Store>(app: App<S>) -> Router {
    Router::new()
        .route("/api/v1/me", get(me::<S>))
        .route("/api/v1/decisions", post(preview::<S>))
        .route("/api/v1/messages", post(send::<S>).get(list::<S>))
        .route("/api/v1/messages/{id}", get(one::<S>))
        .route("/api/v1/messages/{id}/ack", post(ack::<S>))
        .route("/api/v1/hotlines", get(hotlines::<S>))
        .route("/api/v1/escalations", get(escalations::<S>))
        .route("/api/v1/agreements", get(agreements::<S>))
        .route("/metrics", get(metrics::<S>))
        .route("/healthz", get(healthz::<S>))
        .layer(DefaultBodyLimit::max(API_BODY_BYTES_MAX))
        .with_state(app)
}

async fn me<S: Store>(
    State(app): State<App<S>>,
    ApiCaller(p): ApiCaller,
) -> Json<serde_json::Value> {
    let set = app.node.agreements();
    Json(serde_json::json!({
        "name": p.name,
        "display_name": p.display_name,
        "roles": p.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "desks": p.desk_list(&set, app.node.party.as_str()),
        "clearance": match &p.clearance { crate::users::Clearance::Level(l) => Some(l.clone()), crate::users::Clearance::Unlimited => None },
        "language": p.language.code(),
        "time_zone": p.time_zone_name,
    }))
}

/// Authorises a send for `p`: one of their desks, within their clearance.
pub fn authorise_send<S: Store>(
    node: &Node<S>,
    p: &Principal,
    req: &SendRequest,
) -> Result<(), ApiError> {
    p.require(crate::users::Role::DutyOfficer)?;
    p.may_use_desk(req.from.trim())?;
    p.cleared_for(&node.agreements(), req.label.trim())?;
    Ok(())
}

fn send_error(e: SendError) -> ApiError {
    match e {
        SendError::BadRequest { field, message } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{field}: {message}"),
        ),
        SendError::Refused(d) => ApiError {
            status: StatusCode::FORBIDDEN,
            error: "refused by the release decision".into(),
            reasons: d.reasons.iter().map(ToString::to_string).collect(),
        },
        SendError::Unavailable(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not accepted: {e}"),
        ),
    }
}

/// The release decision for a message not yet sent: what would happen, and why.
async fn preview<S: Store>(
    State(app): State<App<S>>,
    ApiCaller(p): ApiCaller,
    body: Result<Json<SendRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(req) = body.map_err(json_rejection)?;
    authorise_send(&app.node, &p, &req)?;
    let prepared = app.node.prepare(&req).map_err(send_error)?;
    let d = prepared.decision;
    Ok(Json(serde_json::json!({
        "allowed": d.allowed(),
        "receiver_label": d.receiver_label.map(|l| l.to_string()),
        "agreement": d.agreement,
        "channel": d.channel,
        "reasons": d.reasons.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })))
}

async fn send<S: Store>(
    State(app): State<App<S>>,
    ApiCaller(p): ApiCaller,
    body: Result<Json<SendRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<crate::node::Accepted>), ApiError> {
    let Json(req) = body.map_err(json_rejection)?;
    authorise_send(&app.node, &p, &req)?;
    match app.node.send(req).await {
        Ok(a) => Ok((StatusCode::CREATED, Json(a))),
        Err(e) => Err(send_error(e)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    desk: String,
    #[serde(default)]
    r#box: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

/// A message as the API shows it.
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct MessageView {
    pub id: String,
    /// Store order: for an inbox, the order of arrival.
    pub seq: i64,
    pub direction: String,
    pub from: String,
    pub to: String,
    pub precedence: String,
    pub label: String,
    pub state: String,
    pub created_at: String,
    pub body: String,
    pub reasons: Vec<String>,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<String>,
    pub receipts: Vec<serde_json::Value>,
    pub agreement: String,
    pub channel: String,
}

fn ms(t: i64) -> String {
    jiff::Timestamp::from_millisecond(t)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

pub fn inbox_view(r: &InboxRow) -> MessageView {
    let env = Envelope::from_json(r.envelope_json.as_bytes()).ok();
    let prec = liaison_core::precedence::Precedence::from_rank(r.precedence)
        .map(|p| p.to_string())
        .unwrap_or_default();
    let mut receipts = Vec::new();
    if let Some(a) = r
        .ack_receipt_json
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok())
    {
        receipts.push(a);
    }
    MessageView {
        id: r.envelope_id.clone(),
        seq: r.seq,
        direction: "in".into(),
        from: r.from_desk.clone(),
        to: r.to_desk.clone(),
        precedence: prec,
        label: r.receiver_label.clone(),
        state: if r.acked_ms.is_some() {
            "acknowledged".into()
        } else if r.escalated_ms.is_some() {
            "escalated".into()
        } else {
            "received".into()
        },
        created_at: env
            .as_ref()
            .map(|e| e.header.created_at.to_string())
            .unwrap_or_else(|| ms(r.received_ms)),
        body: r.body.clone(),
        reasons: Vec::new(),
        acknowledged_by: r.acked_by.clone(),
        acknowledged_at: r.acked_ms.map(ms),
        receipts,
        agreement: env
            .as_ref()
            .map(|e| e.header.agreement.clone())
            .unwrap_or_default(),
        channel: env
            .as_ref()
            .map(|e| e.header.channel.clone())
            .unwrap_or_default(),
    }
}

pub fn outbox_view(r: &OutboxRow) -> MessageView {
    let env = Envelope::from_json(r.envelope_json.as_bytes()).ok();
    let prec = liaison_core::precedence::Precedence::from_rank(r.precedence)
        .map(|p| p.to_string())
        .unwrap_or_default();
    let receipt: Option<Receipt> = r
        .receipt_json
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok());
    let ack: Option<Receipt> = r
        .acked_receipt_json
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok());
    let state = match (r.state, &ack) {
        (_, Some(_)) => "acknowledged".to_owned(),
        (s, None) => s.as_str().to_owned(),
    };
    MessageView {
        id: r.envelope_id.clone(),
        seq: r.seq,
        direction: "out".into(),
        from: r.from_desk.clone(),
        to: r.to_desk.clone(),
        precedence: prec,
        label: env
            .as_ref()
            .map(|e| e.header.label.to_string())
            .unwrap_or_default(),
        state,
        created_at: ms(r.created_ms),
        body: env.as_ref().map(|e| e.body.clone()).unwrap_or_default(),
        reasons: r
            .bounce_reason
            .iter()
            .flat_map(|s| s.split("; ").map(str::to_owned))
            .collect(),
        acknowledged_by: ack.as_ref().and_then(|a| a.body.acknowledged_by.clone()),
        acknowledged_at: ack.as_ref().map(|a| a.body.at.to_string()),
        receipts: receipt
            .iter()
            .chain(ack.iter())
            .filter_map(|r| serde_json::to_value(r).ok())
            .collect(),
        agreement: env
            .as_ref()
            .map(|e| e.header.agreement.clone())
            .unwrap_or_default(),
        channel: env
            .as_ref()
            .map(|e| e.header.channel.clone())
            .unwrap_or_default(),
    }
}

async fn list<S: Store>(
    State(app): State<App<S>>,
    ApiCaller(p): ApiCaller,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<MessageView>>, ApiError> {
    let node = &app.node;
    let Query(q) = q.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("bad query: {}", e.body_text()),
        )
    })?;
    let desk = DeskId::new(&q.desk)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("desk: {e}")))?;
    if desk.party() != node.party || !node.agreements().knows_desk(desk.as_str()) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("desk: unknown desk `{desk}` on this node"),
        ));
    }
    p.may_use_desk(desk.as_str())?;
    let limit = q.limit.unwrap_or(100).clamp(1, LIST_LIMIT_MAX);
    let boxed = q.r#box.as_deref().unwrap_or("inbox");
    list_messages(node, &p, desk.as_str(), boxed, limit)
        .await
        .map(Json)
}

/// A desk's messages that `p` is cleared to see, newest first. Messages above the
/// clearance are left out entirely, as if they were in another room.
pub async fn list_messages<S: Store>(
    node: &Node<S>,
    p: &Principal,
    desk: &str,
    boxed: &str,
    limit: u32,
) -> Result<Vec<MessageView>, ApiError> {
    let set = node.agreements();
    let views: Vec<MessageView> = match boxed {
        "inbox" => node
            .store
            .inbox_list(desk, limit, None)
            .await?
            .iter()
            .map(inbox_view)
            .collect(),
        "outbox" => node
            .store
            .outbox_list(Some(desk), limit, None)
            .await?
            .iter()
            .map(outbox_view)
            .collect(),
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("box: `{other}` is not a box, expected `inbox` or `outbox`"),
            ));
        }
    };
    Ok(views
        .into_iter()
        .filter(|m| p.cleared_for(&set, &m.label).is_ok())
        .collect())
}

/// One message, if `p` acts for its desk here and is cleared for its label.
pub async fn message_for<S: Store>(
    node: &Node<S>,
    p: &Principal,
    id: &str,
) -> Result<MessageView, ApiError> {
    let id =
        EnvelopeId::parse(id).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let view = if let Some(r) = node.store.inbox_get(id.as_str()).await? {
        p.may_use_desk(&r.to_desk)?;
        inbox_view(&r)
    } else if let Some(r) = node.store.outbox_get(id.as_str()).await? {
        p.may_use_desk(&r.from_desk)?;
        outbox_view(&r)
    } else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no message `{id}`"),
        ));
    };
    p.cleared_for(&node.agreements(), &view.label)?;
    Ok(view)
}

async fn one<S: Store>(
    State(app): State<App<S>>,
    ApiCaller(p): ApiCaller,
    Path(id): Path<String>,
) -> Result<Json<MessageView>, ApiError> {
    message_for(&app.node, &p, &id).await.map(Json)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// Who acknowledges; only the operator's token names someone. A signed-in person
    /// acknowledges as themselves.
    #[serde(default)]
    pub by: Option<String>,
}

async fn ack<S: Store>(
    State(app): State<App<S>>,
    ApiCaller(p): ApiCaller,
    Path(id): Path<String>,
    body: Result<Json<AckRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(req) = body.map_err(json_rejection)?;
    acknowledge_as(&app.node, &p, &id, req.by.as_deref())
        .await
        .map(Json)
}

/// `p` acknowledges a message of one of their desks that they are cleared to read.
pub async fn acknowledge_as<S: Store>(
    node: &Node<S>,
    p: &Principal,
    id: &str,
    by: Option<&str>,
) -> Result<serde_json::Value, ApiError> {
    p.require(crate::users::Role::DutyOfficer)?;
    let m = message_for(node, p, id).await?;
    if m.direction != "in" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("`{id}` was sent from here; only its receiver acknowledges it"),
        ));
    }
    let who = match (&p.via, by) {
        (Via::Operator, Some(by)) => by.to_owned(),
        (Via::Operator, None) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "by: expected the name of the person acknowledging",
            ));
        }
        _ => format!("{} ({})", p.display_name, p.name),
    };
    acknowledge(node, id, &who).await
}

/// A person acknowledges a received message: recorded with a signed receipt that is
/// queued, in the same transaction, for delivery back to the sender.
pub async fn acknowledge<S: Store>(
    node: &Node<S>,
    id: &str,
    by: &str,
) -> Result<serde_json::Value, ApiError> {
    let by = by.trim();
    if by.is_empty() || by.len() > 128 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "by: expected the name of the person acknowledging (1 to 128 bytes)",
        ));
    }
    let id =
        EnvelopeId::parse(id).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let Some(row) = node.store.inbox_get(id.as_str()).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no received message `{id}`"),
        ));
    };
    let env = Envelope::from_json(row.envelope_json.as_bytes())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let now = node.now();
    let receipt = Receipt::sign(
        ReceiptBody {
            envelope_id: id.clone(),
            envelope_digest: env.digest(),
            receiver: node.party.clone(),
            kind: ReceiptKind::Acknowledged,
            at: now,
            receiver_label: row.receiver_label.parse().ok(),
            reasons: Vec::new(),
            acknowledged_by: Some(by.to_owned()),
            tree_head: node.latest_tree_head(),
        },
        &node.key,
    );
    let audit = node.audit(AuditEvent::Acknowledged {
        id: id.to_string(),
        by: by.to_owned(),
    });
    match node
        .store
        .inbox_ack(
            id.as_str(),
            by,
            now.as_millisecond(),
            &receipt.to_json(),
            &[audit],
        )
        .await?
    {
        AckOutcome::Acked => {
            node.ack_wake.notify_waiters();
            crate::events::publish(node, "inbox");
            Ok(serde_json::json!({ "id": id, "acknowledged_by": by, "at": now.to_string() }))
        }
        AckOutcome::AlreadyAcked {
            acked_ms, acked_by, ..
        } => Ok(
            serde_json::json!({ "id": id, "acknowledged_by": acked_by, "at": ms(acked_ms), "already": true }),
        ),
    }
}

#[derive(Debug, Serialize)]
pub struct HotlineView {
    pub agreement: String,
    pub channel: String,
    pub peer: String,
    pub my_desk: String,
    pub peer_desk: String,
    pub state: String,
    pub last_ok_at: Option<String>,
    pub rtt_ms: Option<i64>,
    pub failure: Option<String>,
    pub ack_deadline_ms: i64,
    pub history: Vec<(String, Option<i64>)>,
}

pub fn hotline_views<S: Store>(node: &Node<S>) -> Vec<HotlineView> {
    let now_ms = node.clock.now_ms();
    let Ok(h) = node.hotlines.lock() else {
        return Vec::new();
    };
    h.iter()
        .map(|((a, c, p), e)| HotlineView {
            agreement: a.clone(),
            channel: c.clone(),
            peer: p.clone(),
            my_desk: e.my_desk.clone(),
            peer_desk: e.peer_desk.clone(),
            state: e.monitor.state(now_ms).as_str().to_owned(),
            last_ok_at: e.monitor.last_ok_ms.map(ms),
            rtt_ms: e.monitor.last_rtt_ms,
            failure: e.monitor.failure.clone(),
            ack_deadline_ms: e.ack_deadline_ms,
            history: e
                .monitor
                .history
                .iter()
                .map(|(t, r)| (ms(*t), *r))
                .collect(),
        })
        .collect()
}

async fn hotlines<S: Store>(State(app): State<App<S>>, _: ApiCaller) -> Json<Vec<HotlineView>> {
    Json(hotline_views(&app.node))
}

async fn escalations<S: Store>(
    State(app): State<App<S>>,
    _: ApiCaller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let rows = app.node.store.escalation_list().await?;
    Ok(Json(serde_json::json!(rows.iter().map(|r| serde_json::json!({ "id": r.envelope_id, "raised_at": ms(r.raised_ms), "reason": r.reason })).collect::<Vec<_>>())))
}

async fn agreements<S: Store>(State(app): State<App<S>>, _: ApiCaller) -> Json<serde_json::Value> {
    let node = &app.node;
    let set = node.agreements();
    let now = node.now();
    Json(serde_json::json!(set
        .iter()
        .map(|c| {
            let a = &c.agreement;
            serde_json::json!({
                "id": a.id, "version": a.version, "title": a.title, "draft": a.draft,
                "parties": a.parties.iter().map(|p| {
                    let s = c.participation(&p.id, now);
                    serde_json::json!({ "id": p.id, "name": p.name, "state": s.name(), "explain": s.explain(&p.id, &c.zone), "participation": s })
                }).collect::<Vec<_>>(),
                "channels": a.channels, "obligations": a.obligations, "conditions": a.conditions,
            })
        })
        .collect::<Vec<_>>()))
}

async fn metrics<S: Store>(State(app): State<App<S>>) -> Response {
    let node = &app.node;
    let mut out = Exposition::default();
    node.metrics.render(&mut out);
    out.family(
        "liaison_outbox_queued",
        "gauge",
        "Messages waiting for a receipt, by peer and precedence",
    );
    if let Ok(depth) = node.store.outbox_depth().await {
        for d in depth {
            let prec = liaison_core::precedence::Precedence::from_rank(d.precedence)
                .map(|p| p.as_str())
                .unwrap_or("?");
            out.sample(
                "liaison_outbox_queued",
                &[("peer", &d.peer), ("precedence", prec)],
                d.count as f64,
            );
        }
    }
    out.family(
        "liaison_hotline_up",
        "gauge",
        "Hotline state: 1 up, 0.5 degraded, 0 down or unknown",
    );
    out.family(
        "liaison_hotline_rtt_ms",
        "gauge",
        "Last heartbeat round-trip time in milliseconds",
    );
    let now_ms = node.clock.now_ms();
    if let Ok(h) = node.hotlines.lock() {
        for ((_, c, p), e) in h.iter() {
            out.sample(
                "liaison_hotline_up",
                &[("channel", c), ("peer", p)],
                e.monitor.state(now_ms).gauge(),
            );
            if let Some(r) = e.monitor.last_rtt_ms {
                out.sample(
                    "liaison_hotline_rtt_ms",
                    &[("channel", c), ("peer", p)],
                    r as f64,
                );
            }
        }
    }
    let s = node.link_stats.snapshot();
    out.family(
        "liaison_link_handshakes_refused_total",
        "counter",
        "TLS handshakes refused: key not pinned by an agreement in force",
    );
    out.sample(
        "liaison_link_handshakes_refused_total",
        &[],
        s.handshakes_refused as f64,
    );
    out.family(
        "liaison_link_request_failures_total",
        "counter",
        "Federation requests that failed",
    );
    out.sample(
        "liaison_link_request_failures_total",
        &[],
        s.request_failures as f64,
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out.0).into_response()
}

async fn healthz<S: Store>(State(app): State<App<S>>) -> Response {
    match app.node.store.meta_get("healthz").await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}\n"),
        )
            .into_response(),
    }
}
