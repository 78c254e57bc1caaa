//! The wire types of the API as OpenAPI schemas (`utoipa`): what the handlers take and
//! answer, for `/v1/openapi.json` (see [`crate::openapi`]).

use serde_json::Value;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use crate::protocol::{REPORT_REASONS, Transport};

/// One event to publish.
#[derive(ToSchema, serde::Deserialize)]
#[allow(dead_code)]
pub struct NewEventBody {
    /// 1–200 characters: `A-Z a-z 0-9 . _ - : /`.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[A-Za-z0-9._:/-]{1,200}$",
        example = "projects/42"
    )]
    topic: String,
    /// What happened, for the subscriber (1–100 bytes).
    #[schema(min_length = 1, max_length = 100, example = "item.updated")]
    r#type: String,
    /// Any JSON; `null` when left out.
    #[schema(required = false)]
    data: Option<Value>,
}

/// A publish body: one event, or 1 to 1000 of them in order.
#[derive(ToSchema, serde::Deserialize)]
#[allow(dead_code)]
#[serde(untagged)]
pub enum PublishBody {
    /// One event.
    One(NewEventBody),
    /// Several (1 to 1000), stored in order with contiguous ids.
    Many(Vec<NewEventBody>),
}

/// The cursors of the stored events, in order.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Published {
    /// Event ids (cursors), e.g. `k7Qm2x-1`.
    pub ids: Vec<String>,
}

/// Every API error.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// Machine-readable code (docs/protocol.md §7 lists them).
    #[schema(example = "invalid_cursor")]
    pub code: String,
    /// What is wrong and what to do, in words.
    pub message: String,
    /// Transports that are enabled (`503` of a switched-off transport, `426`).
    #[schema(nullable = false)]
    pub enabled: Option<Vec<String>>,
    /// The topic a token refusal is about.
    #[schema(nullable = false)]
    pub topic: Option<String>,
}

/// A client's report of a fallback.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ReportBody {
    /// The transport it left.
    #[schema(example = "websocket")]
    from: ReportTransport,
    /// The transport it moved to (`none` when it had nowhere to go).
    #[schema(example = "sse")]
    to: ReportTransport,
    /// Why.
    #[schema(example = "upgrade_failed")]
    reason: ReportReason,
}

/// A transport (`websocket`, `sse`, `longpoll`), or `none`: from the transport table.
pub struct ReportTransport;

impl PartialSchema for ReportTransport {
    fn schema() -> RefOr<Schema> {
        let names = Transport::ALL.map(Transport::name);
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("A transport, or `none`"))
            .enum_values(Some(names.into_iter().chain(["none"])))
            .into()
    }
}

impl ToSchema for ReportTransport {}

/// Why a client fell back: [`REPORT_REASONS`], the list the handler checks.
pub struct ReportReason;

impl PartialSchema for ReportReason {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("Why a client fell back"))
            .enum_values(Some(REPORT_REASONS.iter().copied()))
            .into()
    }
}

impl ToSchema for ReportReason {}

/// A one-time ticket for a stream.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Ticket {
    /// Pass as `?ticket=` when opening the stream, once.
    pub ticket: String,
    /// How long it waits for its stream.
    pub expires_in_ms: u64,
}

/// A transport on offer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OfferedTransport {
    /// `websocket`, `sse` or `longpoll`.
    name: String,
    /// Its path.
    url: String,
}

/// A transport switched off, and why.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DisabledTransport {
    /// `websocket`, `sse` or `longpoll`.
    name: String,
    /// Why (`disabled`).
    reason: String,
}

/// What a client needs to connect.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Negotiated {
    /// Transports to try, in the operator's order.
    transports: Vec<OfferedTransport>,
    /// Transports switched off.
    disabled: Vec<DisabledTransport>,
    /// `live`, `degraded` or `off`, from the first transport on offer.
    mode: String,
    /// The head of the log.
    cursor: String,
    /// The heartbeat interval.
    heartbeat_ms: u64,
    /// The long-poll time-out.
    poll_timeout_ms: u64,
    /// How long the request's token has left, when `topics` were given with one.
    #[schema(nullable = false)]
    token_expires_in_ms: Option<u64>,
}

/// Readiness.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Ready {
    /// Whether this node can serve.
    pub ready: bool,
    /// Why not (`draining`, or why the log cannot serve).
    pub reason: Option<String>,
    /// The log backend: `memory`, `data_dir` or `redis`.
    pub log: String,
}

/// An event as subscribers receive it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Envelope {
    /// Its cursor.
    id: String,
    /// Its topic.
    topic: String,
    /// Its type.
    r#type: String,
    /// Its data.
    data: Value,
    /// When it was published (RFC 3339).
    ts: String,
}

/// A long-poll answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PollAnswer {
    /// The events after the cursor, in order.
    events: Vec<Envelope>,
    /// Where the next poll continues.
    cursor: String,
    /// The cursor could not be resumed: refetch state (`reason`, `cursor`).
    #[schema(required = false)]
    reset: Option<Value>,
    /// The server asks the client to reconnect (`reason`, `after_ms`).
    #[schema(required = false)]
    reconnect: Option<Value>,
}

/// The query of every stream.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct StreamParams {
    /// Comma-separated topics, 1–100 (required).
    #[param(
        example = "projects/42,notifications/user-7",
        pattern = r"^[A-Za-z0-9._:/-]{1,200}(,[A-Za-z0-9._:/-]{1,200}){0,99}$"
    )]
    topics: Option<String>,
    /// Resume after this cursor (an event id, or `<epoch>-0` for everything retained).
    cursor: Option<String>,
    /// Long polling: seconds to wait for an event (0 – the poll time-out).
    timeout: Option<u64>,
    /// A one-time ticket from `POST /v1/tickets`.
    ticket: Option<String>,
}

/// The query of negotiation.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct NegotiateParams {
    /// Topics the client will follow: a refusal for them is answered here, readably.
    #[param(pattern = r"^[A-Za-z0-9._:/-]{1,200}(,[A-Za-z0-9._:/-]{1,200}){0,99}$")]
    topics: Option<String>,
}
