//! Idempotent publishing (issue 17): `Idempotency-Key` on `POST /v1/events`, in one
//! process and across two nodes on one Redis.

mod common;

use common::redis::Redis;
use common::*;
use serde_json::{Value, json};

/// Posts `body` to `base` with `key` (if any); the status, the replay header and the
/// JSON answer.
async fn post(
    client: &reqwest::Client,
    base: &str,
    key: Option<&str>,
    body: &Value,
) -> (u16, bool, Value) {
    let mut req = client.post(format!("{base}/v1/events")).json(body);
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    let resp = req.send().await.expect("publish");
    let status = resp.status().as_u16();
    let replayed = resp
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    (status, replayed, resp.json().await.expect("JSON"))
}

fn event(n: u64) -> Value {
    json!({"topic": "bell", "type": "notification", "data": {"n": n}})
}

#[tokio::test]
async fn a_retry_with_the_same_key_returns_the_first_ids_and_stores_nothing() {
    let app = spawn_app(|_| {}).await;
    let (c, base) = (&app.client, app.base.as_str());
    let key = "0b5e1c1a-3a5e-4d7f-9c1e-2f6a7b8c9d0e";
    let batch = json!([event(1), event(2)]);
    let (status, replayed, first) = post(c, base, Some(key), &batch).await;
    assert_eq!((status, replayed), (201, false), "{first}");
    for _ in 0..3 {
        let (status, replayed, again) = post(c, base, Some(key), &batch).await;
        assert_eq!((status, replayed), (201, true), "{again}");
        assert_eq!(again["ids"], first["ids"], "the same ids, in order");
    }
    // Another body under the same key is refused; nothing is stored.
    let (status, _, reused) = post(c, base, Some(key), &json!(event(3))).await;
    assert_eq!(status, 409, "{reused}");
    assert_eq!(reused["error"]["code"], "idempotency_key_reused");
    // Without a key, or with another, a publish is a new one.
    let (status, _, other) = post(c, base, Some("another-key"), &batch).await;
    assert_eq!(status, 201);
    assert_ne!(other["ids"], first["ids"]);
    let (status, _, plain) = post(c, base, None, &batch).await;
    assert_eq!(status, 201);
    assert_ne!(plain["ids"], first["ids"]);
    let status = app.status().await;
    assert_eq!(status["counters"]["published"], 6, "{status}");
    assert_eq!(status["counters"]["idempotent_replays"], 3, "{status}");
    // The subscriber from the start sees each stored event once.
    let from = first["ids"][0].as_str().expect("id");
    let events = poll_events(
        &app,
        "bell",
        format!("{}-0", from.split('-').next().expect("epoch")),
        6,
    )
    .await;
    assert_eq!(events.len(), 6, "{events:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_bad_idempotency_key_is_a_clear_400_and_stores_nothing() {
    let app = spawn_app(|_| {}).await;
    let (c, base) = (&app.client, app.base.as_str());
    let long = "k".repeat(256);
    for (key, says) in [
        ("", "1 to 255"),
        (long.as_str(), "1 to 255"),
        ("has space", "visible ASCII"),
    ] {
        let (status, _, v) = post(c, base, Some(key), &event(1)).await;
        assert_eq!(status, 400, "{key:?}: {v}");
        assert_eq!(v["error"]["code"], "invalid_idempotency_key", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(says)),
            "{v}"
        );
    }
    let resp = c
        .post(app.url("/v1/events"))
        .header("idempotency-key", "a")
        .header("idempotency-key", "b")
        .json(&event(1))
        .send()
        .await
        .expect("publish");
    assert_eq!(resp.status(), 400);
    // A body that is not an event is refused before the key is claimed: the key stays
    // free for the corrected retry.
    let resp = c
        .post(app.url("/v1/events"))
        .header("idempotency-key", "fix-me")
        .json(&json!({"topic": "bell"}))
        .send()
        .await
        .expect("publish");
    assert_eq!(resp.status(), 400);
    let (status, replayed, _) = post(c, base, Some("fix-me"), &event(1)).await;
    assert_eq!((status, replayed), (201, false));
    assert_eq!(app.status().await["counters"]["published"], 1);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_sends_of_one_key_publish_once() {
    let app = spawn_app(|_| {}).await;
    let body = event(7);
    let sends = (0..8).map(|_| post(&app.client, &app.base, Some("same"), &body));
    let answers = futures::future::join_all(sends).await;
    let mut ids = None;
    for (status, _, v) in &answers {
        match status {
            201 => {
                let got = v["ids"].clone();
                assert!(ids.get_or_insert(got.clone()) == &got, "{answers:?}");
            }
            409 => assert_eq!(v["error"]["code"], "idempotency_key_in_use", "{v}"),
            _ => panic!("unexpected answer {status}: {v}"),
        }
    }
    assert!(ids.is_some(), "one of them published: {answers:?}");
    assert_eq!(app.status().await["counters"]["published"], 1);
    app.stop().await;
}

#[tokio::test]
async fn a_retry_sent_to_another_node_on_the_same_redis_is_answered_from_the_first() {
    let redis = Redis::start("idempotency").await;
    let url = redis.url();
    let env = [("SWITCHYARD_REDIS_URL", url.as_str())];
    let (a, b) = (spawn_binary(&env).await, spawn_binary(&env).await);
    let client = reqwest::Client::new();
    let key = "cms-save-42";
    let (status, replayed, first) = post(&client, &a.base(), Some(key), &event(1)).await;
    assert_eq!((status, replayed), (201, false), "{first}");
    let (status, replayed, again) = post(&client, &b.base(), Some(key), &event(1)).await;
    assert_eq!((status, replayed), (201, true), "{again}");
    assert_eq!(again["ids"], first["ids"]);
    let (status, _, reused) = post(&client, &b.base(), Some(key), &event(2)).await;
    assert_eq!(status, 409, "{reused}");
    // One event in the shared log: the head did not move for the retry.
    let status_b: Value = client
        .get(format!("{}/v1/status", b.base()))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("JSON");
    assert_eq!(status_b["cursor"], first["ids"][0], "{status_b}");
    a.terminate();
    b.terminate();
}
