//! Who may connect from where (SPEC §9, "Origin"): the `Host` allow-list against DNS
//! rebinding, the same-origin check by scheme and host name, and forwarding headers
//! believed from trusted proxies only — directly and through a real nginx.

mod common;

use common::browser::Nginx;
use common::*;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Opens a WebSocket to `url` with extra headers; the status of the answer.
async fn ws_status(url: &str, headers: &[(&'static str, &str)]) -> u16 {
    let mut req = url.into_client_request().expect("request");
    for (name, value) in headers {
        req.headers_mut()
            .insert(*name, value.parse().expect("value"));
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((mut stream, response)) => {
            use futures::StreamExt;
            let first = within(std::time::Duration::from_secs(10), "ready", stream.next()).await;
            assert!(matches!(first, Some(Ok(_))), "{first:?}");
            response.status().as_u16()
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("WebSocket to {url}: {e}"),
    }
}

async fn status_of(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = within(std::time::Duration::from_secs(10), "an answer", req.send())
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A page on a rebinding domain reaches the server by its address with its own name in
/// `Host`: every endpoint answers 421 and nothing else is touched.
#[tokio::test]
async fn a_rebinding_host_is_refused_everywhere() {
    let app = spawn_app(|_| {}).await;
    let mut witness = Ws::connect(&app.ws_url("/v1/ws?topics=ok")).await;
    assert_eq!(witness.next().await["op"], "ready");
    let evil = [("host", "evil.example"), ("origin", "http://evil.example")];
    assert_eq!(ws_status(&app.ws_url("/v1/ws?topics=a"), &evil).await, 421);
    let get = |path: &str| {
        let mut req = app.client.get(app.url(path));
        for (n, v) in evil {
            req = req.header(n, v);
        }
        req
    };
    for path in [
        "/v1/sse?topics=a",
        "/v1/poll?topics=a&timeout=0",
        "/v1/status",
        "/demo/api/state?user=ada",
        "/",
    ] {
        let (status, v) = status_of(get(path).header("accept", "text/event-stream")).await;
        assert_eq!(status, 421, "{path}: {v}");
        if path != "/" {
            assert_eq!(v["error"]["code"], "host_not_allowed", "{path}: {v}");
        }
    }
    let mut publish = app
        .client
        .post(app.url("/v1/events"))
        .header("content-type", "application/json");
    for (n, v) in evil {
        publish = publish.header(n, v);
    }
    let (status, v) = status_of(publish.body(r#"{"topic":"a","type":"x"}"#)).await;
    assert_eq!(status, 421, "a keyless publish from a rebinding page: {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("evil.example"),
        "{v}"
    );
    // The names of the loopback address all work.
    for host in ["localhost", "127.0.0.1"] {
        let port = app.addr.port();
        let h = format!("{host}:{port}");
        assert_eq!(
            ws_status(
                &app.ws_url("/v1/ws?topics=a"),
                &[("host", &h), ("origin", &format!("http://{h}"))]
            )
            .await,
            101
        );
    }
    let status = app.status().await;
    assert_eq!(status["counters"]["published"], 0, "nothing was published");
    assert!(
        status["counters"]["refused"]["host"]
            .as_u64()
            .expect("host")
            >= 7,
        "{status}"
    );
    let want = app.publish_n("ok", 0..1).await;
    assert_eq!(
        ids(&witness.events(1).await),
        want,
        "the witness is undisturbed"
    );
    app.stop().await;
}

/// The same-origin check compares scheme and host name, not the port.
#[tokio::test]
async fn same_origin_is_scheme_and_host_name() {
    let app = spawn_app(|_| {}).await;
    let url = app.ws_url("/v1/ws?topics=a");
    let port = app.addr.port();
    assert_eq!(
        ws_status(&url, &[("origin", &format!("http://127.0.0.1:{port}"))]).await,
        101
    );
    assert_eq!(
        ws_status(&url, &[("origin", "http://127.0.0.1:9999")]).await,
        101,
        "another port of the host"
    );
    assert_eq!(
        ws_status(&url, &[("origin", &format!("ftp://127.0.0.1:{port}"))]).await,
        403,
        "not http(s)"
    );
    assert_eq!(
        ws_status(&url, &[("origin", "http://localhost")]).await,
        403,
        "another name"
    );
    assert_eq!(app.status().await["counters"]["refused"]["origin"], 2);
    app.stop().await;
}

/// Behind nginx configured the common way (`proxy_set_header Host $host`: the port is
/// dropped), a page served through nginx opens a WebSocket and SSE with the defaults.
/// With the host rewritten and `X-Forwarded-Host` set, the forwarded name counts from a
/// trusted proxy only.
#[tokio::test]
async fn through_nginx_rewriting_host() {
    let app = spawn_app(|_| {}).await;
    let conf = r#"
        map $http_upgrade $c { default upgrade; '' ''; }
        server {
            listen 127.0.0.1:{{PORT}};
            location / {
                proxy_pass http://{{UPSTREAM}};
                proxy_http_version 1.1;
                proxy_set_header Upgrade $http_upgrade;
                proxy_set_header Connection $c;
                proxy_set_header Host $host;
                proxy_buffering off;
            }
        }"#;
    let nginx = Nginx::start(conf, &app.addr.to_string()).await;
    let page = nginx.base();
    let ws = format!("ws://127.0.0.1:{}/v1/ws?topics=a", nginx.port);
    assert_eq!(
        ws_status(&ws, &[("origin", &page)]).await,
        101,
        "WebSocket through nginx with Host $host"
    );
    let (status, _) = status_of(
        app.client
            .get(format!("{page}/v1/poll?topics=a&timeout=0"))
            .header("origin", &page),
    )
    .await;
    assert_eq!(status, 200);
    drop(nginx);

    // nginx names the upstream in Host and the page's host in X-Forwarded-Host.
    let forwarding = conf.replace(
        "proxy_set_header Host $host;",
        "proxy_set_header Host upstream.internal; proxy_set_header X-Forwarded-Host $host;",
    );
    let nginx = Nginx::start(&forwarding, &app.addr.to_string()).await;
    let ws = format!("ws://127.0.0.1:{}/v1/ws?topics=a", nginx.port);
    assert_eq!(
        ws_status(&ws, &[("origin", &nginx.base())]).await,
        101,
        "a trusted proxy's X-Forwarded-Host counts"
    );
    drop(nginx);
    app.stop().await;

    // Not trusted: its X-Forwarded-Host is ignored, and Host names no allowed host.
    let app = spawn_app(|c| c.trusted_proxies = switchyard::config::TrustedProxies(vec![])).await;
    let nginx = Nginx::start(&forwarding, &app.addr.to_string()).await;
    let ws = format!("ws://127.0.0.1:{}/v1/ws?topics=a", nginx.port);
    assert_eq!(ws_status(&ws, &[("origin", &nginx.base())]).await, 421);
    drop(nginx);
    app.stop().await;
}

/// A cross-site page cannot change demo data in the user's name (CSRF): changes must be
/// JSON and, from a browser, same-origin.
#[tokio::test]
async fn demo_changes_refuse_other_sites() {
    let app = spawn_app(|_| {}).await;
    let own = format!("http://127.0.0.1:{}", app.addr.port());
    let session = demo_login(&app, "ada").await;
    let bearer = format!("Bearer {session}");
    let post = |path: &str, content_type: &str, extra: &[(&'static str, &str)]| {
        let mut req = app
            .client
            .post(app.url(path))
            .header("content-type", content_type)
            .header("authorization", &bearer)
            .body(r#"{"name":"Hijacked","user":"ada"}"#);
        for (n, v) in extra {
            req = req.header(*n, *v);
        }
        req
    };
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            post(
                "/demo/api/projects",
                "text/plain",
                &[("origin", "http://evil.example")],
            ),
            415,
            "a cross-site form",
        ),
        (
            post(
                "/demo/api/notifications/ada/read",
                "application/x-www-form-urlencoded",
                &[],
            ),
            415,
            "a form without Origin",
        ),
        (
            post(
                "/demo/api/projects",
                "application/json",
                &[("origin", "http://evil.example")],
            ),
            403,
            "JSON from another origin",
        ),
        (
            post(
                "/demo/api/projects",
                "application/json",
                &[("sec-fetch-site", "cross-site")],
            ),
            403,
            "JSON cross-site",
        ),
        (
            post(
                "/demo/api/projects",
                "application/json",
                &[("origin", &own), ("sec-fetch-site", "same-origin")],
            ),
            201,
            "the demo's own page",
        ),
        (
            post("/demo/api/projects", "application/json", &[]),
            201,
            "curl",
        ),
    ];
    for (req, want, what) in cases {
        let (status, v) = status_of(req).await;
        assert_eq!(status, want, "{what}: {v}");
    }
    assert_eq!(
        app.status().await["counters"]["published"],
        2,
        "only the two allowed changes were published"
    );
    app.stop().await;
}

#[test]
fn the_demo_is_on_by_default_only_on_loopback() {
    let mut c = switchyard::config::Config::defaults();
    assert!(switchyard::demo_on(&c));
    c.addr = "0.0.0.0:3000".parse().expect("addr");
    assert!(!switchyard::demo_on(&c));
    c.demo = Some(true);
    assert!(switchyard::demo_on(&c));
}
