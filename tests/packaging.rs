//! Packaging (issue 17): the shipped proxy configurations, the systemd unit and the
//! Dockerfile pass their own tools' checks, and the browser client is an npm package
//! that a bundled front end can depend on and run in Chromium.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::browser::{Browser, SERIAL, TempDir};
use common::*;
use serde_json::json;

/// The repository's root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `program` with `args` in `dir`; its exit status and what it printed (both
/// streams).
fn run_in(dir: &Path, program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run {program} (scripts/test.sh installs it): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_haproxy_and_caddy_configurations_are_valid() {
    let (ok, out) = run_in(&root(), "haproxy", &["-c", "-f", "deploy/haproxy.cfg"]);
    assert!(ok, "haproxy -c: {out}");
    let (ok, out) = run_in(
        &root(),
        "caddy",
        &[
            "validate",
            "--config",
            "deploy/Caddyfile",
            "--adapter",
            "caddyfile",
        ],
    );
    assert!(ok, "caddy validate: {out}");
    assert!(out.contains("Valid configuration"), "{out}");
}

#[test]
fn the_systemd_unit_verifies() {
    let dir = TempDir::new("unit");
    let unit = std::fs::read_to_string(root().join("deploy/switchyard.service")).expect("unit");
    assert!(unit.contains("DynamicUser=yes") && unit.contains("NoNewPrivileges=yes"));
    assert!(unit.contains("LimitNOFILE="));
    // The unit as shipped, with the binary where this build put it.
    let unit = unit.replace(
        "ExecStart=/usr/local/bin/switchyard",
        &format!("ExecStart={}", env!("CARGO_BIN_EXE_switchyard")),
    );
    let path = dir.0.join("switchyard.service");
    std::fs::write(&path, unit).expect("write unit");
    let (ok, out) = run_in(
        &dir.0,
        "systemd-analyze",
        &["verify", path.to_str().expect("path")],
    );
    // Other units of this machine may draw remarks; ours must draw none.
    let ours: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("switchyard.service"))
        .collect();
    assert!(ok && ours.is_empty(), "systemd-analyze verify: {out}");
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let hadolint = std::env::var("HADOLINT").unwrap_or_else(|_| "hadolint".into());
    let (ok, out) = run_in(&root(), &hadolint, &["Dockerfile"]);
    assert!(ok && out.trim().is_empty(), "hadolint Dockerfile: {out}");
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    for needed in ["USER 10001", "HEALTHCHECK", "/readyz", "AS build"] {
        assert!(dockerfile.contains(needed), "the Dockerfile has {needed}");
    }
}

#[tokio::test]
async fn the_binary_copied_to_an_empty_folder_serves_its_static_files() {
    let dir = TempDir::new("copied");
    let bin = dir.0.join("switchyard");
    std::fs::copy(env!("CARGO_BIN_EXE_switchyard"), &bin).expect("copy the binary");
    let server = spawn_program_in(
        bin.to_str().expect("path"),
        &[],
        dir.0.to_str().expect("path"),
    )
    .await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    for (path, file, content_type) in [
        ("/", "index.html", "text/html; charset=utf-8"),
        (
            "/switchyard.js",
            "switchyard.js",
            "text/javascript; charset=utf-8",
        ),
        (
            "/switchyard.d.ts",
            "switchyard.d.ts",
            "application/typescript; charset=utf-8",
        ),
    ] {
        let url = format!("{}{path}", server.base());
        let resp = client.get(&url).send().await.expect("GET");
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers().clone();
        assert_eq!(h["content-type"], content_type, "{path}");
        assert_eq!(h["cache-control"], "no-cache", "{path}");
        let etag = h["etag"].to_str().expect("etag").to_owned();
        assert!(etag.starts_with('"') && etag.len() == 34, "{path}: {etag}");
        let body = resp.bytes().await.expect("body");
        let shipped = std::fs::read(root().join("static").join(file)).expect("static file");
        assert_eq!(
            body.as_ref(),
            shipped.as_slice(),
            "{path} is the shipped file"
        );
        // Revalidation: the same ETag is a 304 with no body.
        let again = client
            .get(&url)
            .header("if-none-match", &etag)
            .send()
            .await
            .expect("GET");
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(again.headers()["etag"], etag.as_str());
        assert!(again.bytes().await.expect("body").is_empty());
    }
    let missing = client
        .get(format!("{}/nothing-here.js", server.base()))
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);
    let manifest = client
        .get(format!("{}/package.json", server.base()))
        .send()
        .await
        .expect("GET");
    assert_eq!(manifest.status(), 404, "the npm manifest is not served");
    assert!(
        server
            .stderr
            .iter()
            .any(|l| l.contains("static_files=embedded")),
        "{:?}",
        server.stderr
    );
    server.terminate();
}

/// The page of the bundled test app: it records the client's mode and events.
const APP: &str = r#"import { connect, TRANSPORTS } from '@switchyard/client';
window.app = { mode: null, transport: null, ids: [], transports: TRANSPORTS };
const conn = connect({ topics: ['pkg'], share: false });
conn.on('mode', (m) => { window.app.mode = m.mode; window.app.transport = m.transport; });
conn.on('event', (e) => window.app.ids.push(e.id));
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_package_installs_bundles_and_runs_in_chromium() {
    let work = TempDir::new("npm");
    let (ok, out) = run_in(
        &root().join("static"),
        "npm",
        &[
            "pack",
            "--json",
            "--pack-destination",
            work.0.to_str().expect("path"),
        ],
    );
    assert!(ok, "npm pack: {out}");
    let packed: serde_json::Value = serde_json::from_str(&out).expect("npm pack --json");
    let mut files: Vec<&str> = packed[0]["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    files.sort_unstable();
    assert_eq!(
        files,
        ["package.json", "switchyard.d.ts", "switchyard.js"],
        "the package holds the client and its types only"
    );
    let tarball = packed[0]["filename"].as_str().expect("filename");

    // A front end that bundles its code: it depends on the package and esbuild
    // resolves it through the package's `exports`.
    let app = work.0.join("app");
    std::fs::create_dir_all(app.join("public")).expect("app dir");
    std::fs::write(
        app.join("package.json"),
        r#"{"name":"app","private":true,"type":"module"}"#,
    )
    .expect("package.json");
    std::fs::write(app.join("main.js"), APP).expect("main.js");
    std::fs::write(
        app.join("public/index.html"),
        "<!doctype html><title>app</title><script type=\"module\" src=\"/app.js\"></script>",
    )
    .expect("index.html");
    let (ok, out) = run_in(
        &app,
        "npm",
        &[
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            &format!("../{tarball}"),
            "esbuild@0.25",
        ],
    );
    assert!(ok, "npm install: {out}");
    let installed = std::fs::read(app.join("node_modules/@switchyard/client/switchyard.js"))
        .expect("the installed client");
    let served = std::fs::read(root().join("static/switchyard.js")).expect("static client");
    assert_eq!(
        installed, served,
        "the package is the file the server serves"
    );
    let (ok, out) = run_in(
        &app,
        "node_modules/.bin/esbuild",
        &[
            "main.js",
            "--bundle",
            "--format=esm",
            "--outfile=public/app.js",
        ],
    );
    assert!(ok, "esbuild: {out}");
    let bundle = std::fs::read_to_string(app.join("public/app.js")).expect("bundle");
    assert!(
        !bundle.contains("from \"@switchyard/client\"")
            && !bundle.contains("from '@switchyard/client'")
            && bundle.contains("switchyard:failed:"),
        "the client is inside the bundle, no import of the package left"
    );

    // The bundled page, served by switchyard itself, is live and gets a published event.
    let _serial = SERIAL.lock().await;
    let public = app.join("public");
    let server = spawn_app(move |c| c.static_dir = Some(public)).await;
    let b = Browser::start().await;
    b.open_tab(&server.url("/index.html")).await;
    b.wait_for(
        "window.app && window.app.mode === 'live' && window.app.transport",
        Duration::from_secs(10),
        "the bundled client to be live",
    )
    .await;
    let ids = server
        .publish(json!({"topic": "pkg", "type": "t", "data": {}}))
        .await;
    let expr = format!("window.app.ids.join(',') === '{}'", ids.join(","));
    b.wait_for(
        &expr,
        Duration::from_secs(10),
        "the event to reach the page",
    )
    .await;
    assert_eq!(b.eval("window.app.transport").await, "websocket");
    b.quit().await;
    server.stop().await;
}
