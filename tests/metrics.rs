//! `/metrics` follows Prometheus conventions (issue 17): every label set exists at zero
//! from the start, `build_info`, process metrics, the histograms and gauges; and
//! `promtool check metrics` (Debian's prometheus package) accepts it.

mod common;

use std::process::Stdio;

use common::*;
use serde_json::json;
use tokio::io::AsyncWriteExt;

async fn scrape(app: &TestApp) -> String {
    let resp = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    resp.text().await.expect("text")
}

/// The value of the sample `series` (name and labels exactly as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// What promtool says of `text`: its exit status and output.
async fn promtool(text: &str) -> (bool, String) {
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(text.as_bytes()).await.expect("write");
    drop(stdin);
    let out = within(WAIT, "promtool to finish", child.wait_with_output())
        .await
        .expect("promtool");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn metrics_exist_at_zero_and_promtool_accepts_them() {
    let app = spawn_app(|_| {}).await;
    let text = scrape(&app).await;
    for series in [
        "switchyard_refused_streams_total{reason=\"origin\"}",
        "switchyard_refused_streams_total{reason=\"per_client\"}",
        "switchyard_client_fallbacks_total{from=\"websocket\",to=\"sse\",reason=\"upgrade_failed\"}",
        "switchyard_client_fallbacks_total{from=\"sse\",to=\"none\",reason=\"no_ready\"}",
        "switchyard_delivered_events_total{transport=\"longpoll\"}",
        "switchyard_open_streams{transport=\"websocket\"}",
        "switchyard_log_catchups_total",
        "switchyard_idempotent_replays_total",
        "switchyard_publish_to_first_write_seconds_count",
        "switchyard_stream_duration_seconds_count{transport=\"sse\"}",
        "switchyard_log_retained_events",
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series} at 0:\n{text}");
    }
    assert_eq!(
        sample(
            &text,
            &format!(
                "switchyard_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0)
    );
    assert!(sample(&text, "switchyard_max_connections").is_some_and(|n| n > 0.0));
    assert!(sample(&text, "process_resident_memory_bytes").is_some_and(|n| n > 0.0));
    assert!(sample(&text, "process_open_fds").is_some_and(|n| n > 0.0));
    assert!(sample(&text, "process_cpu_seconds_total").is_some());
    assert!(sample(&text, "process_start_time_seconds").is_some_and(|n| n > 1.0e9));
    assert!(
        !text.contains("lagged_subscribers"),
        "renamed: it counts catch-ups"
    );
    let (ok, out) = promtool(&text).await;
    assert!(ok, "promtool check metrics:\n{out}");
    // Prometheus itself asks for OpenMetrics, and gets it.
    let resp = app
        .client
        .get(app.url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .expect("GET /metrics");
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        resp.headers()
    );
    let open = resp.text().await.expect("text");
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(
        open.contains("# TYPE process_cpu_seconds counter"),
        "{open}"
    );

    // A live SSE stream gets an event: the first write is timed, the log gauges follow,
    // and a closed stream's duration is observed.
    let mut sse = Sse::connect(&app, "/v1/sse?topics=m", None).await;
    assert_eq!(sse.next().await.event, "ready");
    // The stream parks in the fan-out once it has caught up (within moments, but
    // nothing outside says when): publish until the fan-out has timed a first write,
    // each event arriving in order on the way.
    let published: u32 = within(WAIT, "the fan-out to time a first write", async {
        let mut published = 0;
        loop {
            published += 1;
            let sent = app
                .publish(json!({"topic": "m", "type": "t", "data": {}}))
                .await;
            assert_eq!(ids(&sse.events(1).await), sent, "the next event, exactly");
            let text = scrape(&app).await;
            if sample(&text, "switchyard_publish_to_first_write_seconds_count")
                .is_some_and(|n| n >= 1.0)
            {
                break published;
            }
        }
    })
    .await;
    drop(sse);
    let text = wait_until(WAIT, "the closed stream to be counted", || async {
        let text = scrape(&app).await;
        (sample(
            &text,
            "switchyard_stream_duration_seconds_count{transport=\"sse\"}",
        ) == Some(1.0))
        .then_some(text)
    })
    .await;
    assert_eq!(
        sample(&text, "switchyard_log_retained_events"),
        Some(f64::from(published))
    );
    assert!(sample(&text, "switchyard_log_retained_bytes").is_some_and(|b| b > 0.0));
    let first_writes =
        sample(&text, "switchyard_publish_to_first_write_seconds_count").expect("first writes");
    assert!(
        (1.0..=f64::from(published)).contains(&first_writes),
        "at most one observation per append: {first_writes} for {published}"
    );
    let (ok, out) = promtool(&text).await;
    assert!(ok, "promtool check metrics:\n{out}");
    app.stop().await;
}
