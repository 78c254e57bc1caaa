//! The README's publishing examples (issue 17), run exactly as they appear there against
//! a live server: each publishes with the key and an idempotency key, a second run is
//! answered with the same ids, and the token it mints opens the user's private topic.

mod common;

use common::browser::TempDir;
use common::*;
use serde_json::Value;

const KEY: &str = "an-example-publish-key";
const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// The code block that follows `<!-- example: {name} -->` in the README.
fn example(name: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let marker = format!("<!-- example: {name} -->");
    let after = readme
        .split_once(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"))
        .1;
    let block = after
        .split_once("```")
        .and_then(|(_, rest)| rest.split_once('\n'))
        .expect("a code block after the marker")
        .1;
    block
        .split_once("\n```")
        .expect("the code block ends")
        .0
        .to_owned()
}

/// Runs `program file` with the example's environment (without blocking the server,
/// which runs on this test's runtime); what it printed, as JSON.
async fn run(program: &str, file: &std::path::Path, base: &str) -> Value {
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg(file)
        .env("SWITCHYARD_URL", base)
        .env("SWITCHYARD_PUBLISH_KEY", KEY)
        .env("SWITCHYARD_TOKEN_SECRET", SECRET)
        .kill_on_drop(true);
    let out = within(
        std::time::Duration::from_secs(60),
        "the example to finish",
        cmd.output(),
    )
    .await
    .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{program} {}: {stdout}{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("JSON ({e}): {stdout}"))
}

async fn check(program: &str, name: &str) {
    let dir = TempDir::new("example");
    let file = dir.0.join(name);
    std::fs::write(&file, example(name)).expect("write the example");
    let app = spawn_app(|c| {
        c.publish_key = Some(KEY.into());
        c.token_secret = Some(SECRET.into());
    })
    .await;
    let first = run(program, &file, &app.base).await;
    let ids = first["ids"].as_array().expect("ids").clone();
    assert_eq!(ids.len(), 1, "{first}");
    // Run again, as a retry would: the same ids, nothing stored.
    let again = run(program, &file, &app.base).await;
    assert_eq!(again["ids"], first["ids"], "the retry got the first ids");
    let status = app.status().await;
    assert_eq!(status["counters"]["published"], 1, "{status}");
    assert_eq!(status["counters"]["idempotent_replays"], 1, "{status}");
    // The minted token opens Ada's private topic, and her bell is there.
    let token = first["token"].as_str().expect("token");
    let epoch = status["epoch"].as_str().expect("epoch");
    let resp = app
        .client
        .get(app.url(&format!(
            "/v1/poll?topics=notifications/ada&cursor={epoch}-0&timeout=0"
        )))
        .bearer_auth(token)
        .send()
        .await
        .expect("poll");
    assert_eq!(resp.status(), 200, "the token is accepted");
    let polled: Value = resp.json().await.expect("JSON");
    assert_eq!(polled["events"][0]["id"], ids[0], "{polled}");
    assert_eq!(polled["events"][0]["type"], "bell", "{polled}");
    app.stop().await;
}

#[tokio::test]
async fn the_python_example_publishes_once_and_mints_a_working_token() {
    check("python3", "publish.py").await;
}

#[tokio::test]
async fn the_node_example_publishes_once_and_mints_a_working_token() {
    check("node", "publish.mjs").await;
}
