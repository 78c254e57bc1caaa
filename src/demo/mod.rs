//! The demo app's API (`SWITCHYARD_DEMO=on`): a small CMS with a **Projects** area and a
//! **Notifications** area, the use-case switchyard grew from.
//!
//! State lives in memory. Every change goes through this HTTP API: under the demo's
//! (async) lock it is checked, published through the server's one publish path
//! ([`AppState::publish`]), and applied only once the log has stored its events. A
//! snapshot (`GET /demo/api/state`) takes the same lock, so no change is between its
//! publish and its application while the snapshot reads the data and the log's head:
//! a page that loads the snapshot and subscribes from its `cursor` sees every later
//! change exactly once, and a change whose publish fails is not applied at all.
//!
//! Topics: `projects` (every project, item and comment change) and
//! `notifications/<user>` (one user's bell), private: each editor signs in
//! ([`session`]) and follows them with a token the demo signs for exactly those two.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Mutex, MutexGuard};

use crate::error::ApiError;
use crate::event::NewEvent;
use crate::state::AppState;

pub mod session;

use session::Sessions;

/// The editors of the demo (no accounts: pick one in the page).
pub const USERS: &[&str] = &["ada", "grace", "linus"];
/// Most projects.
const MAX_PROJECTS: usize = 50;
/// Most items per project.
const MAX_ITEMS: usize = 200;
/// Most comments per item.
const MAX_COMMENTS: usize = 100;
/// Notifications kept per user (oldest dropped).
const MAX_NOTIFICATIONS: usize = 100;
/// Longest project name or item title, in characters.
const MAX_TITLE: usize = 120;
/// Longest comment, in characters.
const MAX_TEXT: usize = 1000;

/// The demo's in-memory data, and the server it publishes to.
pub struct Demo {
    app: Arc<AppState>,
    state: Mutex<Data>,
    sessions: Sessions,
}

#[derive(Default, Serialize)]
struct Data {
    projects: Vec<Project>,
    #[serde(skip)]
    notifications: BTreeMap<String, VecDeque<Notification>>,
    #[serde(skip)]
    next_id: u64,
}

#[derive(Clone, Serialize)]
struct Project {
    id: u64,
    name: String,
    items: Vec<Item>,
}

#[derive(Clone, Serialize)]
struct Item {
    id: u64,
    project_id: u64,
    title: String,
    done: bool,
    updated_by: String,
    comments: Vec<Comment>,
}

#[derive(Clone, Serialize)]
struct Comment {
    id: u64,
    item_id: u64,
    author: String,
    text: String,
    ts: String,
}

#[derive(Clone, Serialize)]
struct Notification {
    id: u64,
    text: String,
    project_id: u64,
    item_id: u64,
    read: bool,
    ts: String,
}

impl Demo {
    /// A demo with two sample projects, publishing to `app`.
    pub fn seeded(app: Arc<AppState>) -> Demo {
        let mut d = Data::default();
        {
            for (name, items) in [
                (
                    "Website relaunch",
                    &["Draft the spec", "Pick fonts", "Migrate blog posts"][..],
                ),
                (
                    "Annual report",
                    &["Collect figures", "Write the foreword"][..],
                ),
            ] {
                let id = d.id();
                let items = items
                    .iter()
                    .map(|title| Item {
                        id: d.id(),
                        project_id: id,
                        title: (*title).to_owned(),
                        done: false,
                        updated_by: "ada".to_owned(),
                        comments: Vec::new(),
                    })
                    .collect();
                d.projects.push(Project {
                    id,
                    name: name.to_owned(),
                    items,
                });
            }
        }
        Demo {
            app,
            state: Mutex::new(d),
            sessions: Sessions::generate(),
        }
    }

    async fn lock(&self) -> MutexGuard<'_, Data> {
        self.state.lock().await
    }

    /// The signed-in editor of a request. A `user` the request names besides (a body
    /// field, a path or query parameter) must be that editor: Ada cannot act as Grace.
    fn actor(&self, headers: &HeaderMap, named: Option<&str>) -> Result<String, ApiError> {
        let signed_in = self.sessions.user(headers)?;
        match named {
            Some(name) if name != signed_in => Err(ApiError::Status {
                status: StatusCode::FORBIDDEN,
                code: "demo_wrong_user",
                message: format!(
                    "signed in as {signed_in}, not {:?}",
                    name.chars().take(20).collect::<String>()
                ),
            }),
            _ => user(&signed_in),
        }
    }
}

impl Project {
    fn item(&mut self, id: u64) -> Result<&mut Item, ApiError> {
        let project = self.id;
        self.items
            .iter_mut()
            .find(|i| i.id == id)
            .ok_or_else(|| not_found(format!("no item {id} in project {project}")))
    }
}

impl Data {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn project(&mut self, id: u64) -> Result<&mut Project, ApiError> {
        self.projects
            .iter_mut()
            .find(|p| p.id == id)
            .ok_or_else(|| not_found(format!("no project {id}")))
    }
}

/// The demo routes, mounted under `/demo/api`, with the demo's own state.
pub(crate) fn routes<S>(app: Arc<AppState>) -> Router<S> {
    Router::new()
        .route("/demo/api/login", post(login))
        .route("/demo/api/token", get(token))
        .route("/demo/api/state", get(state))
        .route("/demo/api/projects", post(create_project))
        .route("/demo/api/projects/{pid}/items", post(create_item))
        .route("/demo/api/projects/{pid}/items/{iid}", patch(update_item))
        .route(
            "/demo/api/projects/{pid}/items/{iid}/comments",
            post(create_comment),
        )
        .route("/demo/api/notifications/{user}/read", post(mark_read))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            same_site_only,
        ))
        .with_state(Arc::new(Demo::seeded(app)))
}

/// Refuses a change that another site could make in the user's name (CSRF): a
/// state-changing request must be JSON (a cross-site form cannot send it without a
/// preflight) and, from a browser, same-origin (`Origin`, or `Sec-Fetch-Site`).
/// Requests without either header (curl, a backend) are not a browser's.
async fn same_site_only(
    State(app): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if request.method() == axum::http::Method::GET {
        return next.run(request).await;
    }
    let headers = request.headers();
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
    };
    let media = text(axum::http::header::CONTENT_TYPE.as_str())
        .and_then(|c| c.split(';').next())
        .map(str::trim);
    if !media.is_some_and(|m| m.eq_ignore_ascii_case("application/json")) {
        let got = text(axum::http::header::CONTENT_TYPE.as_str()).unwrap_or("missing");
        return ApiError::UnsupportedMediaType(got.chars().take(60).collect()).into_response();
    }
    let peer = request
        .extensions()
        .get::<crate::headers::Peer>()
        .copied()
        .unwrap_or_default();
    let authority = crate::headers::authority(&app.config.trusted_proxies, peer, headers);
    let cross_site = match (text("origin"), text("sec-fetch-site")) {
        (Some(origin), _) => !crate::headers::same_origin(origin, &authority),
        (None, Some(site)) => site != "same-origin" && site != "none",
        (None, None) => false,
    };
    if cross_site {
        let origin = text("origin").or(text("sec-fetch-site")).unwrap_or("");
        app.refuse(crate::metrics::RefusedReason::origin, || {
            format!(
                "a demo change from {origin:?}: only this server's own pages may change demo data"
            )
        });
        return ApiError::OriginNotAllowed(origin.chars().take(100).collect()).into_response();
    }
    next.run(request).await
}

fn not_found(message: String) -> ApiError {
    ApiError::NotFound(message)
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn user(name: &str) -> Result<String, ApiError> {
    USERS
        .iter()
        .find(|u| **u == name)
        .map(|u| (*u).to_owned())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_user",
                format!(
                    "user {:?} is not one of {}",
                    name.chars().take(20).collect::<String>(),
                    USERS.join(", ")
                ),
            )
        })
}

fn text(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > max {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("{field} must be 1 to {max} characters"),
        ));
    }
    Ok(value.to_owned())
}

fn body<T: for<'de> Deserialize<'de>>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("body: {e}")))
}

/// Publishes `events` through the server's publish path while the caller holds the demo
/// lock, before it applies the change (see module doc).
async fn publish(app: &AppState, events: Vec<(String, &str, Value)>) -> Result<(), ApiError> {
    let events = events
        .into_iter()
        .map(|(topic, kind, data)| NewEvent::new(&topic, kind, data))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Internal(format!("demo event: {}", e.0)))?;
    app.publish(events).await.map(drop)
}

/// The notifications of a change for every editor except `actor`, not yet applied.
struct Notify(Vec<(&'static str, Notification)>);

impl Notify {
    fn new(d: &mut Data, actor: &str, text: String, project_id: u64, item_id: u64) -> Notify {
        let mut out = Vec::new();
        for u in USERS.iter().filter(|u| **u != actor) {
            out.push((
                *u,
                Notification {
                    id: d.id(),
                    text: text.clone(),
                    project_id,
                    item_id,
                    read: false,
                    ts: now(),
                },
            ));
        }
        Notify(out)
    }

    fn events(&self) -> impl Iterator<Item = (String, &'static str, Value)> + '_ {
        self.0.iter().map(|(u, n)| {
            (
                format!("notifications/{u}"),
                "notification.created",
                json!(n),
            )
        })
    }

    fn apply(self, d: &mut Data) {
        for (u, n) in self.0 {
            let list = d.notifications.entry(u.to_owned()).or_default();
            list.push_front(n);
            list.truncate(MAX_NOTIFICATIONS);
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    user: String,
}

/// `POST /demo/api/login {"user":"ada"}`: picking a name is the sign-in (the demo has no
/// passwords); the answer's `session` goes in `Authorization: Bearer` from then on.
async fn login(
    State(demo): State<Arc<Demo>>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: Login = body(b)?;
    let user = user(&req.user)?;
    let session = demo.sessions.sign_in(&user)?;
    Ok(Json(json!({
        "user": user,
        "session": session,
        "expires_in_ms": session::SESSION_TTL.as_millis() as u64,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenQuery {
    ttl_s: Option<u64>,
}

/// `GET /demo/api/token[?ttl_s=N]`: a subscriber token for the signed-in editor's topics,
/// what the page's `getToken` fetches before each connect.
async fn token(
    State(demo): State<Arc<Demo>>,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let user = demo.actor(&headers, None)?;
    let ttl = match q.ttl_s {
        None => session::TOKEN_TTL,
        Some(s) => {
            let ttl = std::time::Duration::from_secs(s);
            if !(session::MIN_TOKEN_TTL..=session::TOKEN_TTL).contains(&ttl) {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!(
                        "ttl_s must be {} to {} seconds",
                        session::MIN_TOKEN_TTL.as_secs(),
                        session::TOKEN_TTL.as_secs()
                    ),
                ));
            }
            ttl
        }
    };
    let token = session::token(&demo.app.access, &user, ttl)?;
    Ok((
        [(
            axum::http::header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-store"),
        )],
        Json(token),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateQuery {
    user: Option<String>,
}

async fn state(
    State(demo): State<Arc<Demo>>,
    headers: HeaderMap,
    query: Result<Query<StateQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let user = demo.actor(&headers, q.user.as_deref())?;
    let d = demo.lock().await;
    // Read under the demo lock: no demo change is published but not applied.
    let cursor = demo.app.log.stats().head;
    let notifications: Vec<&Notification> = d
        .notifications
        .get(&user)
        .map(|l| l.iter().collect())
        .unwrap_or_default();
    let unread = notifications.iter().filter(|n| !n.read).count();
    Ok(Json(json!({
        "user": user,
        "users": USERS,
        "projects": d.projects,
        "notifications": notifications,
        "unread": unread,
        "cursor": cursor,
        "topics": ["projects", format!("notifications/{user}")],
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewProject {
    name: String,
    user: Option<String>,
}

async fn create_project(
    State(demo): State<Arc<Demo>>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: NewProject = body(b)?;
    let actor = demo.actor(&headers, req.user.as_deref())?;
    let name = text("name", &req.name, MAX_TITLE)?;
    let mut d = demo.lock().await;
    if d.projects.len() >= MAX_PROJECTS {
        return Err(ApiError::bad_request(
            "limit",
            format!("the demo holds at most {MAX_PROJECTS} projects"),
        ));
    }
    let project = Project {
        id: d.id(),
        name,
        items: Vec::new(),
    };
    let data = json!({"project": project, "by": actor});
    publish(
        &demo.app,
        vec![("projects".into(), "project.created", data.clone())],
    )
    .await?;
    d.projects.push(project);
    Ok((StatusCode::CREATED, Json(data)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewItem {
    title: String,
    user: Option<String>,
}

async fn create_item(
    State(demo): State<Arc<Demo>>,
    headers: HeaderMap,
    Path(pid): Path<u64>,
    b: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: NewItem = body(b)?;
    let actor = demo.actor(&headers, req.user.as_deref())?;
    let title = text("title", &req.title, MAX_TITLE)?;
    let mut guard = demo.lock().await;
    let d = &mut *guard;
    let id = d.id();
    let project = d.project(pid)?;
    if project.items.len() >= MAX_ITEMS {
        return Err(ApiError::bad_request(
            "limit",
            format!("a project holds at most {MAX_ITEMS} items"),
        ));
    }
    let item = Item {
        id,
        project_id: pid,
        title,
        done: false,
        updated_by: actor.clone(),
        comments: Vec::new(),
    };
    let note = format!("{actor} added “{}” to {}", item.title, project.name);
    let data = json!({"item": item, "by": actor});
    let notify = Notify::new(d, &actor, note, pid, id);
    let mut events = vec![("projects".into(), "item.created", data.clone())];
    events.extend(notify.events());
    publish(&demo.app, events).await?;
    d.project(pid)?.items.push(item);
    notify.apply(d);
    Ok((StatusCode::CREATED, Json(data)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemChange {
    user: Option<String>,
    title: Option<String>,
    done: Option<bool>,
}

async fn update_item(
    State(demo): State<Arc<Demo>>,
    headers: HeaderMap,
    Path((pid, iid)): Path<(u64, u64)>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: ItemChange = body(b)?;
    let actor = demo.actor(&headers, req.user.as_deref())?;
    let title = req
        .title
        .as_deref()
        .map(|t| text("title", t, MAX_TITLE))
        .transpose()?;
    let mut guard = demo.lock().await;
    let d = &mut *guard;
    let project = d.project(pid)?;
    let project_name = project.name.clone();
    let mut item = project.item(iid)?.clone();
    if let Some(t) = title {
        item.title = t;
    }
    if let Some(done) = req.done {
        item.done = done;
    }
    item.updated_by = actor.clone();
    let verb = if req.done == Some(true) {
        "completed"
    } else {
        "updated"
    };
    let note = format!("{actor} {verb} “{}” in {project_name}", item.title);
    let data = json!({"item": item, "by": actor});
    let notify = Notify::new(d, &actor, note, pid, iid);
    let mut events = vec![("projects".into(), "item.updated", data.clone())];
    events.extend(notify.events());
    publish(&demo.app, events).await?;
    *d.project(pid)?.item(iid)? = item;
    notify.apply(d);
    Ok(Json(data))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewComment {
    text: String,
    user: Option<String>,
}

async fn create_comment(
    State(demo): State<Arc<Demo>>,
    headers: HeaderMap,
    Path((pid, iid)): Path<(u64, u64)>,
    b: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: NewComment = body(b)?;
    let actor = demo.actor(&headers, req.user.as_deref())?;
    let body_text = text("text", &req.text, MAX_TEXT)?;
    let mut guard = demo.lock().await;
    let d = &mut *guard;
    let id = d.id();
    let project = d.project(pid)?;
    let item = project.item(iid)?;
    if item.comments.len() >= MAX_COMMENTS {
        return Err(ApiError::bad_request(
            "limit",
            format!("an item holds at most {MAX_COMMENTS} comments"),
        ));
    }
    let comment = Comment {
        id,
        item_id: iid,
        author: actor.clone(),
        text: body_text,
        ts: now(),
    };
    let note = format!("{actor} commented on “{}”", item.title);
    let data = json!({"comment": comment, "project_id": pid, "by": actor});
    let notify = Notify::new(d, &actor, note, pid, iid);
    let mut events = vec![("projects".into(), "comment.created", data.clone())];
    events.extend(notify.events());
    publish(&demo.app, events).await?;
    d.project(pid)?.item(iid)?.comments.push(comment);
    notify.apply(d);
    Ok((StatusCode::CREATED, Json(data)))
}

async fn mark_read(
    State(demo): State<Arc<Demo>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let u = demo.actor(&headers, Some(&name))?;
    let mut d = demo.lock().await;
    let data = json!({"user": u, "unread": 0});
    publish(
        &demo.app,
        vec![(
            format!("notifications/{u}"),
            "notification.read",
            data.clone(),
        )],
    )
    .await?;
    if let Some(list) = d.notifications.get_mut(&u) {
        list.iter_mut().for_each(|n| n.read = true);
    }
    Ok(Json(data))
}
