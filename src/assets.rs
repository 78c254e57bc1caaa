//! The static files (the demo page and the browser client): embedded in the binary at
//! build time, so a copied binary serves them from anywhere, or served from
//! `SWITCHYARD_STATIC_DIR` when the operator names one (to change the page without a
//! rebuild).
//!
//! Embedded files are answered with their content type, a strong `ETag` (their SHA-256,
//! computed at build time), `Cache-Control: no-cache` (the client's path carries no
//! version, so a browser revalidates, and gets `304` while it has the current one) and
//! `X-Content-Type-Options: nosniff`.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;
use tower_http::services::ServeDir;

/// `static/` as it was when the binary was built (in debug builds too: `debug-embed`).
#[derive(RustEmbed)]
#[folder = "static/"]
#[exclude = "package.json"]
struct Embedded;

/// Where static files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The files embedded at build time.
    Embedded,
    /// A directory on disk (`SWITCHYARD_STATIC_DIR`), as resolved at start.
    Dir(PathBuf),
}

impl Source {
    /// The source for a configured directory: none → the embedded files. A relative
    /// path is looked up in the working directory first, then next to the crate's
    /// sources, so `cargo run` works from anywhere.
    pub fn new(dir: Option<&Path>) -> Source {
        let Some(dir) = dir else {
            return Source::Embedded;
        };
        if dir.is_absolute() || dir.is_dir() {
            return Source::Dir(dir.to_path_buf());
        }
        let beside_sources = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        if beside_sources.is_dir() {
            return Source::Dir(beside_sources);
        }
        Source::Dir(dir.to_path_buf())
    }

    /// For logs: `embedded`, or the directory.
    pub fn describe(&self) -> String {
        match self {
            Source::Embedded => "embedded".into(),
            Source::Dir(dir) => dir.display().to_string(),
        }
    }

    /// A problem worth a warning at start: a directory that does not exist.
    pub fn problem(&self) -> Option<String> {
        match self {
            Source::Dir(dir) if !dir.is_dir() => Some(format!(
                "SWITCHYARD_STATIC_DIR={} is not a directory; the demo page and client will 404",
                dir.display()
            )),
            _ => None,
        }
    }

    /// A router that serves every path from this source (as its fallback).
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        match self {
            Source::Embedded => Router::new().fallback(embedded),
            Source::Dir(dir) => Router::new().fallback_service(ServeDir::new(dir)),
        }
    }
}

/// Answers a `GET` or `HEAD` of an embedded file; `404` (empty) for any other path and
/// `405` for other methods, as the directory service does.
async fn embedded(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let path = uri.path().trim_start_matches('/');
    let path = if path.is_empty() || path.ends_with('/') {
        format!("{path}index.html")
    } else {
        path.to_owned()
    };
    let Some(file) = Embedded::get(&path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let hash = file.metadata.sha256_hash();
    let etag = format!("\"{}\"", hex::encode(&hash[..16]));
    let mut response = if if_none_match(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else if method == Method::HEAD {
        let mut r = Response::new(Body::empty());
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(file.data.len()));
        r
    } else {
        Response::new(Body::from(file.data.into_owned()))
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&content_type(&path, file.metadata.mimetype())) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The content type of `path`, from the type guessed by its extension at build time:
/// TypeScript declarations as `application/typescript` (the guess for `.ts` is MPEG
/// transport stream), and text types with `charset=utf-8`.
fn content_type(path: &str, guessed: &str) -> String {
    let base = if path.ends_with(".ts") {
        "application/typescript"
    } else {
        guessed
    };
    let text = base.starts_with("text/")
        || matches!(
            base,
            "application/javascript" | "application/json" | "application/typescript"
        );
    if text {
        format!("{base}; charset=utf-8")
    } else {
        base.to_owned()
    }
}

/// Whether `If-None-Match` names `etag` (or is `*`), weak comparison (RFC 9110 §13.1.2).
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_and_the_demo_are_embedded() {
        for path in ["index.html", "switchyard.js", "switchyard.d.ts"] {
            assert!(Embedded::get(path).is_some(), "{path} is embedded");
        }
        assert!(
            Embedded::get("package.json").is_none(),
            "the npm manifest is not served"
        );
    }

    #[test]
    fn content_types_are_right_for_what_is_shipped() {
        let of = |path: &str| {
            let file = Embedded::get(path).expect("embedded");
            content_type(path, file.metadata.mimetype())
        };
        assert_eq!(of("index.html"), "text/html; charset=utf-8");
        assert_eq!(of("switchyard.js"), "text/javascript; charset=utf-8");
        assert_eq!(
            of("switchyard.d.ts"),
            "application/typescript; charset=utf-8"
        );
        assert_eq!(of("demo.css"), "text/css; charset=utf-8");
    }

    #[test]
    fn if_none_match_takes_lists_weak_tags_and_star() {
        let tag = "\"abc\"";
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_static(v));
            if_none_match(&h, tag)
        };
        assert!(with("\"abc\""));
        assert!(with("\"x\", W/\"abc\""));
        assert!(with("*"));
        assert!(!with("\"abd\""));
        assert!(!if_none_match(&HeaderMap::new(), tag));
    }
}
