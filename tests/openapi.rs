//! `/v1/openapi.json` (issue 17) describes every endpoint the router serves; that every
//! answer matches it is `scripts/schemathesis.sh`'s job (in `.ci/run`).

mod common;

use common::*;
use serde_json::Value;

#[tokio::test]
async fn the_document_describes_every_endpoint() {
    let app = spawn_app(|_| {}).await;
    let resp = app
        .client
        .get(app.url("/v1/openapi.json"))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let doc: Value = resp.json().await.expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    for (path, method) in [
        ("/v1/events", "post"),
        ("/v1/reports", "post"),
        ("/v1/tickets", "post"),
        ("/v1/negotiate", "get"),
        ("/v1/status", "get"),
        ("/v1/openapi.json", "get"),
        ("/v1/stream", "get"),
        ("/v1/sse", "get"),
        ("/v1/ws", "get"),
        ("/v1/poll", "get"),
        ("/metrics", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    let publish = &doc["paths"]["/v1/events"]["post"];
    let params: Vec<&str> = publish["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(params.contains(&"Idempotency-Key"), "{params:?}");
    for status in ["201", "400", "401", "409", "413", "415", "429", "503"] {
        assert!(publish["responses"][status].is_object(), "publish {status}");
    }
    assert!(
        publish["responses"]["201"]["headers"]["Idempotent-Replayed"].is_object(),
        "{publish}"
    );
    let schemas = &doc["components"]["schemas"];
    for name in [
        "PublishBody",
        "ErrorBody",
        "PollAnswer",
        "Envelope",
        "Negotiated",
    ] {
        assert!(schemas[name].is_object(), "schema {name}");
    }
    assert!(doc["components"]["securitySchemes"]["publish_key"].is_object());
    app.stop().await;
}
