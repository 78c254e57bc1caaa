//! The headers every response gets from the router's layers, and the same for a
//! response written on the socket itself (`serve.rs`).

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::AllowedOrigins;

/// The CORS layer of the router.
pub fn cors(allowed: &AllowedOrigins) -> CorsLayer {
    let base = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
        ])
        .max_age(Duration::from_secs(3600));
    match allowed {
        // Same-origin pages need no CORS headers at all.
        AllowedOrigins::SameOrigin => CorsLayer::new(),
        AllowedOrigins::Any => base.allow_origin(AllowOrigin::any()),
        AllowedOrigins::List(list) => base.allow_origin(AllowOrigin::list(
            list.iter().filter_map(|o| o.parse().ok()),
        )),
    }
}

/// The CORS and request-id headers the router's layers give every response, for a
/// response written on the socket itself (`serve.rs`): the same policy as [`cors`]
/// (checked against it in the tests).
pub fn response_headers(
    allowed: &AllowedOrigins,
    request: &HeaderMap,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::with_capacity(3);
    let origin = request.get(header::ORIGIN);
    let allow = match allowed {
        AllowedOrigins::SameOrigin => None,
        AllowedOrigins::Any => Some(HeaderValue::from_static("*")),
        AllowedOrigins::List(list) => origin
            .filter(|o| list.iter().any(|l| l.as_bytes() == o.as_bytes()))
            .cloned(),
    };
    if let Some(allow) = allow {
        out.push((header::ACCESS_CONTROL_ALLOW_ORIGIN, allow));
    }
    // The answer depends on the `Origin` unless every origin gets `*`.
    if !matches!(allowed, AllowedOrigins::Any) {
        out.push((header::VARY, HeaderValue::from_static("origin")));
    }
    let id = request.get("x-request-id").cloned().unwrap_or_else(|| {
        let n: u128 = rand::random();
        let hex = format!("{n:032x}");
        let uuid = format!(
            "{}-{}-4{}-a{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[13..16],
            &hex[17..20],
            &hex[20..]
        );
        HeaderValue::try_from(uuid).unwrap_or(HeaderValue::from_static("-"))
    });
    out.push((HeaderName::from_static("x-request-id"), id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, Response};
    use tower::{Layer, ServiceExt};

    /// The headers written on the socket are the ones the router's CORS layer gives.
    #[tokio::test]
    async fn the_direct_path_answers_cors_as_the_router_does() {
        let list = AllowedOrigins::List(vec!["https://app.example.com".into()]);
        for allowed in [AllowedOrigins::SameOrigin, AllowedOrigins::Any, list] {
            for origin in [
                None,
                Some("https://app.example.com"),
                Some("https://evil.example"),
            ] {
                let mut request = Request::get("/v1/sse?topics=a");
                if let Some(origin) = origin {
                    request = request.header(header::ORIGIN, origin);
                }
                let request = request.body(Body::empty()).expect("request");
                let ours = response_headers(&allowed, request.headers());
                let service = cors(&allowed).layer(tower::service_fn(|_: Request<Body>| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
                }));
                let theirs = service.oneshot(request).await.expect("response");
                for name in [header::ACCESS_CONTROL_ALLOW_ORIGIN, header::VARY] {
                    let ours: Vec<&HeaderValue> = ours
                        .iter()
                        .filter(|(n, _)| *n == name)
                        .map(|(_, v)| v)
                        .collect();
                    let theirs: Vec<&HeaderValue> =
                        theirs.headers().get_all(&name).iter().collect();
                    assert_eq!(ours, theirs, "{name} for {allowed:?} from {origin:?}");
                }
                assert!(ours.iter().any(|(n, _)| n == "x-request-id"));
            }
        }
    }
}
