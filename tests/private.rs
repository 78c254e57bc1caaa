//! Private topics (SPEC §9): subscriber tokens on every transport, tickets, the cookie,
//! expiry mid-stream, and the WebSocket's in-band checks. Real server, real clients.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use switchyard::event::Patterns;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn sign(alg: Algorithm, secret: &str, claims: Value) -> String {
    encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// A token for `topics`, valid for `secs`.
fn token(topics: &[&str], secs: u64) -> String {
    sign(
        Algorithm::HS256,
        SECRET,
        json!({"exp": now_s() + secs, "aud": "switchyard", "sub": "ada", "topics": topics}),
    )
}

async fn private_app() -> TestApp {
    spawn_app(|c| {
        c.token_secret = Some(SECRET.into());
        c.token_audience = Some("switchyard".into());
        c.public_topics = Some(Patterns::parse_list("projects").expect("patterns"));
    })
    .await
}

/// `Ok` when a stream opened, else its status and error code.
type Opened = Result<(), (u16, String)>;

/// A refusal with `status` and `code`.
fn refused(status: u16, code: &str) -> Opened {
    Err((status, code.to_owned()))
}

/// How a stream open was answered: `Ok(())` when it opened (its first message is
/// `ready`), else the HTTP status and error code.
async fn open(app: &TestApp, transport: &str, topics: &str, auth: Option<(&str, &str)>) -> Opened {
    let headers: Vec<(&str, &str)> = auth.into_iter().collect();
    open_headers(app, transport, topics, &headers).await
}

/// [`open`] with any headers.
async fn open_headers(
    app: &TestApp,
    transport: &str,
    topics: &str,
    headers: &[(&str, &str)],
) -> Opened {
    let path = match transport {
        "ws" => format!("/v1/ws?topics={topics}"),
        "sse" => format!("/v1/sse?topics={topics}"),
        "poll" => format!("/v1/poll?topics={topics}&timeout=0"),
        _ => format!("/v1/stream?topics={topics}"),
    };
    if transport == "ws" {
        let mut req = app.ws_url(&path).into_client_request().expect("request");
        for (name, value) in headers {
            let name = axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name");
            req.headers_mut()
                .insert(name, value.parse().expect("header"));
        }
        return match tokio_tungstenite::connect_async(req).await {
            Ok((stream, _)) => {
                let mut ws = Ws { stream };
                assert_eq!(ws.next().await["op"], "ready");
                Ok(())
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let body: Value =
                    serde_json::from_slice(resp.body().as_deref().unwrap_or_default())
                        .unwrap_or(Value::Null);
                Err((
                    resp.status().as_u16(),
                    body["error"]["code"].as_str().unwrap_or("?").to_owned(),
                ))
            }
            Err(e) => panic!("WebSocket connect: {e}"),
        };
    }
    let mut req = app.client.get(app.url(&path));
    if transport != "poll" {
        req = req.header("accept", "text/event-stream");
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = within(Duration::from_secs(10), "a stream's answer", req.send())
        .await
        .expect("GET");
    let status = resp.status().as_u16();
    if status == 200 {
        return Ok(());
    }
    let body: Value = resp.json().await.expect("JSON error");
    Err((
        status,
        body["error"]["code"].as_str().unwrap_or("?").to_owned(),
    ))
}

#[tokio::test]
async fn every_transport_checks_the_token_of_every_topic() {
    let app = private_app().await;
    let mut witness = Ws::connect(&app.ws_url("/v1/ws?topics=projects")).await;
    assert_eq!(witness.next().await["op"], "ready");
    let bearer = |t: &str| format!("Bearer {t}");
    let good = token(&["notifications/ada"], 600);
    let pattern = token(&["notifications/*"], 600);
    let bad_signature = sign(
        Algorithm::HS256,
        "another secret of 32 bytes, or so",
        json!({"exp": now_s() + 600, "aud": "switchyard", "topics": ["*"]}),
    );
    let wrong_alg = sign(
        Algorithm::HS512,
        SECRET,
        json!({"exp": now_s() + 600, "aud": "switchyard", "topics": ["*"]}),
    );
    let expired = sign(
        Algorithm::HS256,
        SECRET,
        json!({"exp": now_s() - 300, "aud": "switchyard", "topics": ["*"]}),
    );
    let wrong_aud = sign(
        Algorithm::HS256,
        SECRET,
        json!({"exp": now_s() + 600, "aud": "another", "topics": ["*"]}),
    );
    let ada = "notifications/ada";
    let cases: Vec<(&str, Option<String>, Opened)> = vec![
        (ada, None, refused(401, "token_required")),
        (ada, Some(bad_signature), refused(401, "token_invalid")),
        (ada, Some(wrong_alg), refused(401, "token_invalid")),
        (ada, Some(expired), refused(401, "token_expired")),
        (ada, Some(wrong_aud), refused(401, "token_invalid")),
        (
            "notifications/grace",
            Some(good.clone()),
            refused(403, "topic_forbidden"),
        ),
        (
            "projects,notifications/grace",
            Some(good.clone()),
            refused(403, "topic_forbidden"),
        ),
        ("notifications/ada,projects", Some(good.clone()), Ok(())),
        ("notifications/grace", Some(pattern), Ok(())),
        ("projects", None, Ok(())),
    ];
    for transport in ["ws", "sse", "poll", "stream"] {
        for (topics, tok, want) in &cases {
            let auth = tok.as_ref().map(|t| bearer(t));
            let got = open(
                &app,
                transport,
                topics,
                auth.as_deref().map(|a| ("authorization", a)),
            )
            .await;
            assert_eq!(&got, want, "{transport} {topics} with {tok:?}");
        }
    }
    // A refusal touches nothing else: the witness still gets what is published.
    let want = app.publish_n("projects", 0..1).await;
    assert_eq!(ids(&witness.events(1).await), want);
    let refused = &app.status().await["counters"]["refused"];
    assert_eq!(refused["token_required"], 4, "{refused}");
    assert_eq!(refused["topic_forbidden"], 8, "{refused}");
    let metrics = app.text("/metrics").await;
    for reason in [
        "token_required",
        "token_invalid",
        "token_expired",
        "topic_forbidden",
    ] {
        assert!(
            metrics.contains(&format!(
                "switchyard_refused_streams_total{{reason=\"{reason}\"}}"
            )),
            "{reason}: {metrics}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn tickets_open_one_stream_each_and_the_cookie_carries_a_token() {
    let app = private_app().await;
    let good = token(&["notifications/ada"], 600);
    let ticket = |auth: Option<String>| {
        let mut req = app.client.post(app.url("/v1/tickets"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        async move {
            let resp = req.send().await.expect("POST /v1/tickets");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.expect("JSON"))
        }
    };
    let (status, v) = ticket(None).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("token_required")),
        "{v}"
    );
    let (status, v) = ticket(Some("Bearer nonsense".into())).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("token_invalid")),
        "{v}"
    );
    for transport in ["sse", "ws"] {
        let (status, v) = ticket(Some(format!("Bearer {good}"))).await;
        assert_eq!(status, 201, "{v}");
        let t = v["ticket"].as_str().expect("ticket").to_owned();
        assert!(v["expires_in_ms"].as_u64().expect("ms") <= 30_000, "{v}");
        let topics = format!("notifications/ada&ticket={t}");
        assert_eq!(
            open(&app, transport, &topics, None).await,
            Ok(()),
            "{transport}: first use"
        );
        assert_eq!(
            open(&app, transport, &topics, None).await,
            Err((401, "token_invalid".into())),
            "{transport}: second use"
        );
        // A ticket grants what its token grants, no more.
        let (_, v) = ticket(Some(format!("Bearer {good}"))).await;
        let other = format!(
            "notifications/grace&ticket={}",
            v["ticket"].as_str().expect("ticket")
        );
        assert_eq!(
            open(&app, transport, &other, None).await,
            Err((403, "topic_forbidden".into()))
        );
    }
    let cookie = format!("theme=dark; switchyard_token={good}");
    for transport in ["ws", "sse", "poll"] {
        assert_eq!(
            open(
                &app,
                transport,
                "notifications/ada",
                Some(("cookie", &cookie))
            )
            .await,
            Ok(()),
            "{transport} with the cookie"
        );
    }
    app.stop().await;
}

/// A token that expires while events flow: the stream ends with `reconnect`
/// (`token_expired`) after the events it delivered; a reconnect with a new token from
/// the last id gets every later event once, in order.
#[tokio::test]
async fn a_token_expiring_mid_stream_loses_nothing() {
    let app = private_app().await;
    let publisher = {
        let (client, base) = (app.client.clone(), app.base.clone());
        // A steady publisher, 20 events a second, while tokens expire.
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(50));
            for n in 0..u64::MAX {
                every.tick().await;
                publish_at(
                    &client,
                    &base,
                    json!({"topic": "notifications/ada", "type": "n", "data": n}),
                )
                .await;
            }
        })
    };
    for transport in ["sse", "ws", "poll"] {
        let short = token(&["notifications/ada"], 2);
        let mut seen: Vec<u64> = Vec::new();
        let auth = format!("Bearer {short}");
        match transport {
            "sse" => {
                let mut sse = sse_with(
                    &app,
                    "/v1/sse?topics=notifications/ada",
                    &[("authorization", &auth)],
                )
                .await;
                loop {
                    let e = sse.next().await;
                    match e.event.as_str() {
                        "message" => seen.push(seq(&e.id)),
                        "reconnect" => {
                            let v: Value = serde_json::from_str(&e.data).expect("json");
                            assert_eq!(v["reason"], "token_expired", "{v}");
                            assert_eq!(
                                seq(&e.id),
                                *seen.last().expect("events first"),
                                "the reconnect's id is the last event's"
                            );
                            break;
                        }
                        _ => {}
                    }
                }
            }
            "ws" => {
                let mut req = app
                    .ws_url("/v1/ws?topics=notifications/ada")
                    .into_client_request()
                    .expect("req");
                req.headers_mut()
                    .insert("authorization", auth.parse().expect("header"));
                let (stream, _) = tokio_tungstenite::connect_async(req).await.expect("ws");
                let mut ws = Ws { stream };
                loop {
                    let v = ws.next().await;
                    match v["op"].as_str() {
                        Some("event") => seen.push(seq(v["id"].as_str().expect("id"))),
                        Some("reconnect") => {
                            assert_eq!(v["reason"], "token_expired", "{v}");
                            break;
                        }
                        _ => {}
                    }
                }
            }
            _ => {
                let mut cursor = app.status().await["cursor"]
                    .as_str()
                    .expect("cursor")
                    .to_owned();
                loop {
                    let resp = app
                        .client
                        .get(app.url(&format!(
                            "/v1/poll?topics=notifications/ada&cursor={cursor}&timeout=5"
                        )))
                        .header("authorization", &auth)
                        .send()
                        .await
                        .expect("poll");
                    if resp.status() == 401 {
                        let v: Value = resp.json().await.expect("json");
                        assert_eq!(v["error"]["code"], "token_expired", "{v}");
                        break;
                    }
                    let v: Value = resp.json().await.expect("json");
                    seen.extend(ns_of(&v["events"]));
                    cursor = v["cursor"].as_str().expect("cursor").to_owned();
                    if v["reconnect"]["reason"] == "token_expired" {
                        break;
                    }
                }
            }
        }
        assert!(
            seen.len() >= 3,
            "{transport}: events before the expiry: {seen:?}"
        );
        assert_contiguous(transport, &seen);
        // Resume with a new token from the last event: the next one follows on.
        let last = *seen.last().expect("last");
        let fresh = format!("Bearer {}", token(&["notifications/ada"], 600));
        let resumed = app
            .poll_with(
                &format!(
                    "topics=notifications/ada&cursor={}&timeout=5",
                    cursor_of(&app, last).await
                ),
                &fresh,
            )
            .await;
        let next = ns_of(&resumed["events"]);
        assert_eq!(
            next.first().copied(),
            Some(last + 1),
            "{transport}: resumes right after {last}: {resumed}"
        );
        assert_contiguous(transport, &next);
    }
    publisher.abort();
    app.stop().await;
}

/// The WebSocket checks every `subscribe`, and takes a new token in band.
#[tokio::test]
async fn websocket_subscribe_and_auth_are_checked_in_band() {
    let app = private_app().await;
    let mut req = app
        .ws_url("/v1/ws?topics=projects")
        .into_client_request()
        .expect("req");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token(&["notifications/ada"], 2))
            .parse()
            .expect("h"),
    );
    let (stream, _) = tokio_tungstenite::connect_async(req).await.expect("ws");
    let mut ws = Ws { stream };
    assert_eq!(ws.next().await["op"], "ready");
    expect_error(
        &mut ws,
        r#"{"op":"subscribe","topics":["notifications/grace"]}"#,
        "topic_forbidden",
    )
    .await;
    ws.send_text(r#"{"op":"subscribe","topics":["notifications/ada"]}"#)
        .await;
    assert_eq!(ws.next().await["op"], "subscribed");
    expect_error(
        &mut ws,
        r#"{"op":"auth","token":"garbage"}"#,
        "token_invalid",
    )
    .await;
    // A token that no longer covers a followed topic is refused, and changes nothing.
    let narrow = token(&["notifications/bob"], 600);
    expect_error(
        &mut ws,
        &format!(r#"{{"op":"auth","token":"{narrow}"}}"#),
        "topic_forbidden",
    )
    .await;
    let fresh = token(&["notifications/*"], 600);
    ws.send_text(&format!(r#"{{"op":"auth","token":"{fresh}"}}"#))
        .await;
    let v = ws.next().await;
    assert_eq!(v["op"], "authorized", "{v}");
    // Past the first token's expiry the session goes on.
    let exp = now_s() + 4;
    wait_until(
        Duration::from_secs(10),
        "the first token to expire",
        || async { (now_s() > exp).then_some(()) },
    )
    .await;
    let want = app.publish_n("notifications/ada", 0..2).await;
    assert_eq!(ids(&ws.events(2).await), want);
    app.stop().await;
}

#[tokio::test]
async fn topics_are_public_by_default_only_on_loopback() {
    let (code, _, stderr) = run_binary(
        &[
            ("SWITCHYARD_ADDR", "0.0.0.0:0"),
            ("SWITCHYARD_PUBLISH_KEY", "0123456789abcdef"),
        ],
        &[],
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("no token key is set: anyone could read every topic"),
        "{stderr}"
    );
    let (code, _, stderr) = run_binary(&[("SWITCHYARD_TOKEN_SECRET", "short")], &[]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("invalid SWITCHYARD_TOKEN_SECRET=\"<hidden>\": the secret is 5 bytes"),
        "{stderr}"
    );
    let (code, _, stderr) = run_binary(
        &[("SWITCHYARD_TOKEN_PUBLIC_KEY_FILE", "/nonexistent.pem")],
        &[],
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("cannot read SWITCHYARD_TOKEN_PUBLIC_KEY_FILE=/nonexistent.pem"),
        "{stderr}"
    );
}

/// Negotiate checks the topics the way a stream open would, so a browser (which cannot
/// read a refused upgrade or EventSource) learns why, and which topic.
#[tokio::test]
async fn negotiate_says_which_topic_is_refused() {
    let app = private_app().await;
    let ask = |topics: &str, auth: Option<String>| {
        let mut req = app
            .client
            .get(app.url(&format!("/v1/negotiate?topics={topics}")));
        if let Some(t) = auth {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req
    };
    let answer = |req: reqwest::RequestBuilder| async move {
        let resp = req.send().await.expect("negotiate");
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().await.expect("JSON"))
    };
    let (status, v) = answer(ask("projects,notifications/ada", None)).await;
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["error"]["code"], "token_required");
    assert_eq!(v["error"]["topic"], "notifications/ada");
    let ada = token(&["notifications/ada"], 600);
    let (status, v) = answer(ask(
        "notifications/ada,notifications/grace",
        Some(ada.clone()),
    ))
    .await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"]["code"], "topic_forbidden");
    assert_eq!(v["error"]["topic"], "notifications/grace");
    let (status, v) = answer(ask("notifications/ada,projects", Some(ada.clone()))).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["transports"].is_array(), "{v}");
    // How long the token has left, by the server's clock: at most the 600 s it was
    // signed for, and not much less (whole seconds, so up to 1 s of rounding).
    let left = v["token_expires_in_ms"]
        .as_u64()
        .expect("token_expires_in_ms");
    assert!((590_000..=600_000).contains(&left), "{v}");
    // Public topics need no token, so nothing expires for them.
    let (status, v) = answer(ask("projects", Some(ada))).await;
    assert_eq!(status, 200, "{v}");
    assert!(v.get("token_expires_in_ms").is_none(), "{v}");
    // A WebSocket subscribe that is refused names the topic too.
    let t = token(&["notifications/ada"], 600);
    let mut req = app
        .ws_url("/v1/ws?topics=projects")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {t}").parse().expect("header"),
    );
    let (stream, _) = tokio_tungstenite::connect_async(req).await.expect("ws");
    let mut ws = Ws { stream };
    assert_eq!(ws.next().await["op"], "ready");
    ws.send_text(r#"{"op":"subscribe","topics":["notifications/grace"]}"#)
        .await;
    let v = ws.next().await;
    assert_eq!(v["op"], "error", "{v}");
    assert_eq!(v["code"], "topic_forbidden", "{v}");
    assert_eq!(v["topic"], "notifications/grace", "{v}");
    app.stop().await;
}

/// The demo (on by default on loopback) keeps `notifications/*` private with a key it
/// makes at start, signs each editor a token for their own topics only, and serves its
/// data only to a signed-in editor.
#[tokio::test]
async fn the_demo_signs_each_editor_a_token_for_their_own_topics() {
    let app = spawn_app(|_| {}).await;
    // Anonymous: the bell's topic and the demo's data are closed, projects are public.
    assert_eq!(
        open(&app, "sse", "notifications/ada", None).await,
        refused(401, "token_required")
    );
    assert_eq!(open(&app, "ws", "projects", None).await, Ok(()));
    let (status, v) = app.get_json("/demo/api/state?user=ada").await;
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["error"]["code"], "demo_login_required");
    let (status, v) = app.get_json("/demo/api/token").await;
    assert_eq!(status, 401, "{v}");

    let ada = demo_login(&app, "ada").await;
    let as_ada = |path: &str| {
        app.client
            .get(app.url(path))
            .header("authorization", format!("Bearer {ada}"))
    };
    let json = |req: reqwest::RequestBuilder| async move {
        let resp = req.send().await.expect("demo request");
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().await.expect("JSON"))
    };
    let (status, v) = json(as_ada("/demo/api/state")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["user"], "ada");
    assert_eq!(v["topics"], json!(["projects", "notifications/ada"]));
    let (status, v) = json(as_ada("/demo/api/state?user=grace")).await;
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (403, json!("demo_wrong_user"))
    );
    for bad in ["ttl_s=1", "ttl_s=601", "ttl_s=x", "other=1"] {
        let (status, v) = json(as_ada(&format!("/demo/api/token?{bad}"))).await;
        assert_eq!(
            (status, v["error"]["code"].clone()),
            (400, json!("invalid_query")),
            "{bad}: {v}"
        );
    }
    let (status, v) = json(as_ada("/demo/api/token")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["topics"], json!(["projects", "notifications/ada"]));
    let token = v["token"].as_str().expect("token").to_owned();
    let bearer = format!("Bearer {token}");
    for transport in ["ws", "sse", "poll", "stream"] {
        let auth = Some(("authorization", bearer.as_str()));
        assert_eq!(
            open(&app, transport, "projects,notifications/ada", auth).await,
            Ok(()),
            "{transport}"
        );
        assert_eq!(
            open(&app, transport, "notifications/grace", auth).await,
            refused(403, "topic_forbidden"),
            "{transport}: Ada's token does not open Grace's bell"
        );
    }
    // Ada cannot act as Grace.
    let resp = app
        .client
        .post(app.url("/demo/api/notifications/grace/read"))
        .header("authorization", format!("Bearer {ada}"))
        .json(&json!({}))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 403);
    // A session of another server (or before a restart) is refused by name.
    let (status, v) = json(
        app.client
            .get(app.url("/demo/api/state"))
            .header("authorization", format!("Bearer {token}")),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (401, json!("demo_session_invalid")),
        "a subscriber token is not a session: {v}"
    );

    // Ada's bell is live: Grace adds an item, Ada's stream gets its notification.
    let mut bell = sse_with(
        &app,
        "/v1/sse?topics=notifications/ada",
        &[("authorization", &bearer)],
    )
    .await;
    let ready = bell.next().await;
    assert_eq!(ready.event, "ready");
    let grace = demo_login(&app, "grace").await;
    let resp = app
        .client
        .post(app.url("/demo/api/projects/1/items"))
        .header("authorization", format!("Bearer {grace}"))
        .json(&json!({"title": "Proofread"}))
        .send()
        .await
        .expect("POST item");
    assert_eq!(resp.status(), 201);
    let got = bell.events(1).await;
    assert_eq!(got[0]["topic"], "notifications/ada", "{got:?}");
    assert_eq!(got[0]["type"], "notification.created", "{got:?}");
    assert!(
        got[0]["data"]["text"]
            .as_str()
            .unwrap_or("")
            .starts_with("grace added"),
        "{got:?}"
    );
    app.stop().await;

    // With the operator's key, the demo signs nothing with it.
    let app = private_app().await;
    let ada = demo_login(&app, "ada").await;
    let (status, v) = json(
        app.client
            .get(app.url("/demo/api/token"))
            .header("authorization", format!("Bearer {ada}")),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (409, json!("demo_tokens_off")),
        "{v}"
    );
    app.stop().await;
}

/// Under `SWITCHYARD_ALLOWED_ORIGINS=*` the token cookie does not count for another
/// site's request: a browser sends the cookie with any site's WebSocket, so it would let
/// every site read its user's private topics. A listed origin may use it.
#[tokio::test]
async fn the_cookie_counts_only_for_origins_allowed_by_name() {
    let cookie = format!("switchyard_token={}", token(&["notifications/ada"], 600));
    let app = spawn_app(|c| {
        c.token_secret = Some(SECRET.into());
        c.token_audience = Some("switchyard".into());
        c.allowed_origins = switchyard::config::AllowedOrigins::Any;
    })
    .await;
    let own = format!("http://127.0.0.1:{}", app.addr.port());
    for transport in ["ws", "sse", "poll"] {
        let topics = "notifications/ada";
        for (origin, want) in [
            (None, Ok(())),
            (Some(own.as_str()), Ok(())),
            (Some("https://evil.example"), refused(401, "token_required")),
        ] {
            let got = open_with(&app, transport, topics, &[("cookie", &cookie)], origin).await;
            assert_eq!(got, want, "{transport} from {origin:?}");
        }
        // A bearer token is the page's own choice: it counts from any allowed origin.
        let bearer = format!("Bearer {}", token(&["notifications/ada"], 600));
        let got = open_with(
            &app,
            transport,
            topics,
            &[("authorization", &bearer)],
            Some("https://other.example"),
        )
        .await;
        assert_eq!(got, Ok(()), "{transport} bearer from another origin");
    }
    app.stop().await;

    let app = spawn_app(|c| {
        c.token_secret = Some(SECRET.into());
        c.token_audience = Some("switchyard".into());
        c.allowed_origins =
            switchyard::config::AllowedOrigins::List(vec!["https://app.example".into()]);
    })
    .await;
    let got = open_with(
        &app,
        "sse",
        "notifications/ada",
        &[("cookie", &cookie)],
        Some("https://app.example"),
    )
    .await;
    assert_eq!(got, Ok(()), "a listed origin");
    let resp = app
        .client
        .get(app.url("/v1/negotiate?topics=projects"))
        .header("origin", "https://app.example")
        .send()
        .await
        .expect("negotiate");
    assert_eq!(
        resp.headers()
            .get("access-control-allow-credentials")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..]),
        "a listed origin may send cookies (withCredentials)"
    );
    app.stop().await;
}

/// [`open`] with several headers and an `Origin`.
async fn open_with(
    app: &TestApp,
    transport: &str,
    topics: &str,
    headers: &[(&str, &str)],
    origin: Option<&str>,
) -> Opened {
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if let Some(o) = origin {
        all.push(("origin", o));
    }
    open_headers(app, transport, topics, &all).await
}

// --- helpers ---

/// Sends a client frame and expects an `error` frame with `code` (the session goes on).
async fn expect_error(ws: &mut Ws, frame: &str, code: &str) {
    ws.send_text(frame).await;
    let v = ws.next().await;
    assert_eq!(
        (v["op"].as_str(), v["code"].as_str()),
        (Some("error"), Some(code)),
        "{frame}: {v}"
    );
}

async fn sse_with(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Sse {
    use eventsource_stream::Eventsource;
    use futures::StreamExt;
    let mut req = app
        .client
        .get(app.url(path))
        .header("accept", "text/event-stream");
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let resp = req.send().await.expect("SSE");
    assert_eq!(resp.status(), 200);
    Sse {
        raw: Vec::new(),
        events: Box::pin(
            resp.bytes_stream()
                .eventsource()
                .map(|e| e.expect("SSE parse")),
        ),
    }
}

fn ns_of(events: &Value) -> Vec<u64> {
    events
        .as_array()
        .expect("events")
        .iter()
        .map(|e| seq(e["id"].as_str().expect("id")))
        .collect()
}

fn assert_contiguous(what: &str, seqs: &[u64]) {
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0] + 1, "{what}: a gap or a repeat in {seqs:?}");
    }
}

/// The cursor string of sequence `n` in `app`'s log.
async fn cursor_of(app: &TestApp, n: u64) -> String {
    let head = app.status().await["cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let epoch = head.rsplit_once('-').expect("epoch").0.to_owned();
    format!("{epoch}-{n}")
}

trait PollWith {
    async fn poll_with(&self, query: &str, auth: &str) -> Value;
}

impl PollWith for TestApp {
    async fn poll_with(&self, query: &str, auth: &str) -> Value {
        let resp = self
            .client
            .get(self.url(&format!("/v1/poll?{query}")))
            .header("authorization", auth)
            .send()
            .await
            .expect("poll");
        assert_eq!(resp.status(), 200, "poll {query}");
        resp.json().await.expect("json")
    }
}

/// A public key file verifies EdDSA tokens (RS256 and ES256 are told apart the same
/// way); a token signed otherwise is refused. The key pair is a test fixture only.
#[tokio::test]
async fn a_public_key_file_verifies_eddsa_tokens() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let app = spawn_app(|c| {
        c.token_public_key_file = Some(format!("{dir}/token-ed25519.pub.pem").into());
    })
    .await;
    let private = std::fs::read(format!("{dir}/token-ed25519.pem")).expect("fixture");
    let claims = json!({"exp": now_s() + 600, "topics": ["notifications/ada"]});
    let eddsa = encode(
        &Header::new(Algorithm::EdDSA),
        &claims,
        &EncodingKey::from_ed_pem(&private).expect("key"),
    )
    .expect("sign");
    let auth = format!("Bearer {eddsa}");
    assert_eq!(
        open(
            &app,
            "sse",
            "notifications/ada",
            Some(("authorization", &auth))
        )
        .await,
        Ok(())
    );
    let hs = format!("Bearer {}", sign(Algorithm::HS256, SECRET, claims));
    assert_eq!(
        open(
            &app,
            "sse",
            "notifications/ada",
            Some(("authorization", &hs))
        )
        .await,
        Err((401, "token_invalid".into()))
    );
    // With a key and no SWITCHYARD_PUBLIC_TOPICS, no topic is public.
    assert_eq!(
        open(&app, "poll", "projects", None).await,
        Err((401, "token_required".into()))
    );
    app.stop().await;
}
