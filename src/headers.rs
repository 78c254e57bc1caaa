//! The headers every response gets from the router's layers, and the same for a
//! response written on the socket itself (`serve.rs`).

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::{AllowedOrigins, TrustedProxies};

/// The peer address of a request's connection (an extension the server adds).
#[derive(Clone, Copy, Debug, Default)]
pub struct Peer(pub Option<std::net::IpAddr>);

/// The host name and scheme a request was made to, as its client saw them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// Host name without port, lower-case; `None` when the request named none.
    pub host: Option<String>,
    /// The scheme, when a trusted proxy said which (`http`, `https`).
    pub scheme: Option<String>,
    /// Where the host came from (`Host`, `X-Forwarded-Host`, `Forwarded`), for logs.
    pub source: &'static str,
}

/// The client's address: the last `X-Forwarded-For` entry (the one the proxy added)
/// when the peer is a trusted proxy, else the peer's own. `None` when neither is known.
pub fn client_ip(
    trusted: &TrustedProxies,
    peer: Peer,
    headers: &HeaderMap,
) -> Option<std::net::IpAddr> {
    limited_client(trusted, peer, headers).or(peer.0)
}

/// The client that per-client limits count a request against: the peer, or the address
/// a trusted proxy forwards (the last `X-Forwarded-For` entry). `None` for a trusted
/// proxy's own requests (no forwarded address): it speaks for many clients, or is local
/// tooling.
pub fn limited_client(
    trusted: &TrustedProxies,
    peer: Peer,
    headers: &HeaderMap,
) -> Option<std::net::IpAddr> {
    let ip = peer.0?;
    if !trusted.contains(ip) {
        return Some(ip);
    }
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse().ok())
}

/// The authority of a request: from `Forwarded`, else `X-Forwarded-Host` and
/// `X-Forwarded-Proto`, when the peer is a trusted proxy; else from `Host`.
pub fn authority(trusted: &TrustedProxies, peer: Peer, headers: &HeaderMap) -> Authority {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            // The client's end of a chain of proxies comes first.
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if peer.0.is_some_and(|ip| trusted.contains(ip)) {
        if let Some(forwarded) = text("forwarded") {
            let pair = |key: &str| {
                forwarded.split(';').find_map(|kv| {
                    let (k, v) = kv.trim().split_once('=')?;
                    k.eq_ignore_ascii_case(key).then(|| v.trim_matches('"'))
                })
            };
            if let Some(host) = pair("host") {
                return Authority {
                    host: Some(host_name(host).to_ascii_lowercase()),
                    scheme: pair("proto").map(str::to_ascii_lowercase),
                    source: "Forwarded",
                };
            }
        }
        if let Some(host) = text("x-forwarded-host") {
            return Authority {
                host: Some(host_name(host).to_ascii_lowercase()),
                scheme: text("x-forwarded-proto").map(str::to_ascii_lowercase),
                source: "X-Forwarded-Host",
            };
        }
    }
    let scheme = peer
        .0
        .filter(|ip| trusted.contains(*ip))
        .and(text("x-forwarded-proto"))
        .map(str::to_ascii_lowercase);
    Authority {
        host: text("host").map(|h| host_name(h).to_ascii_lowercase()),
        scheme,
        source: "Host",
    }
}

/// The host name of `host[:port]` (`[v6]:port` gives the address without brackets).
pub fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !host.contains(':') => {
            host
        }
        _ => authority,
    }
}

/// Whether `origin` (`scheme://host[:port]`) is the request's own: an `http` or `https`
/// origin with the request's host name, and its scheme when a trusted proxy said which.
/// The port is not compared: proxies rewrite `Host` without it.
pub fn same_origin(origin: &str, request: &Authority) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return false;
    }
    if request.scheme.as_deref().is_some_and(|s| s != scheme) {
        return false;
    }
    let host = host_name(rest.split('/').next().unwrap_or(rest));
    request
        .host
        .as_deref()
        .is_some_and(|h| h.eq_ignore_ascii_case(host))
}

/// Whether a request's `switchyard_token` cookie counts: not for a browser request from
/// another site that only `SWITCHYARD_ALLOWED_ORIGINS=*` lets in. A browser sends the
/// cookie with any site's WebSocket (no CORS there), so under `*` a cookie would let every
/// site read its user's private topics; a listed origin, the server's own, or a request
/// with no `Origin` (not a browser's cross-site request) may use it.
pub fn cookies_count(allowed: &AllowedOrigins, request: &Authority, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    match allowed {
        AllowedOrigins::List(list) if list.iter().any(|o| o.eq_ignore_ascii_case(origin)) => true,
        _ => same_origin(origin, request),
    }
}

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
        // A listed origin may send cookies (`withCredentials`), for the token cookie.
        AllowedOrigins::List(list) => base
            .allow_origin(AllowOrigin::list(
                list.iter().filter_map(|o| o.parse().ok()),
            ))
            .allow_credentials(true),
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
        let listed = matches!(allowed, AllowedOrigins::List(_));
        out.push((header::ACCESS_CONTROL_ALLOW_ORIGIN, allow));
        if listed {
            out.push((
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
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

    fn hm(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, v.parse().expect("value"));
        }
        h
    }

    #[test]
    fn the_authority_comes_from_trusted_proxies_only() {
        let trusted = TrustedProxies(vec!["127.0.0.0/8".parse().expect("cidr")]);
        let local = Peer(Some("127.0.0.1".parse().expect("ip")));
        let remote = Peer(Some("203.0.113.9".parse().expect("ip")));
        let h = hm(&[
            ("host", "127.0.0.1:3000"),
            ("x-forwarded-host", "cms.example, inner"),
            ("x-forwarded-proto", "https"),
        ]);
        let a = authority(&trusted, local, &h);
        assert_eq!(
            (a.host.as_deref(), a.scheme.as_deref(), a.source),
            (Some("cms.example"), Some("https"), "X-Forwarded-Host")
        );
        let a = authority(&trusted, remote, &h);
        assert_eq!(
            (a.host.as_deref(), a.scheme.as_deref(), a.source),
            (Some("127.0.0.1"), None, "Host")
        );
        let f = hm(&[
            ("host", "x"),
            (
                "forwarded",
                "for=1.2.3.4;host=\"CMS.example:8443\";proto=https",
            ),
        ]);
        let a = authority(&trusted, local, &f);
        assert_eq!(
            (a.host.as_deref(), a.scheme.as_deref()),
            (Some("cms.example"), Some("https"))
        );
        assert_eq!(host_name("[::1]:3000"), "::1");
        assert_eq!(host_name("::1"), "::1");
        assert_eq!(host_name("example.com:80"), "example.com");
    }

    #[test]
    fn same_origin_compares_scheme_and_host_name() {
        let direct = Authority {
            host: Some("localhost".into()),
            scheme: None,
            source: "Host",
        };
        assert!(same_origin("http://localhost:3000", &direct));
        assert!(
            same_origin("https://localhost", &direct),
            "the scheme is unknown without a proxy"
        );
        assert!(!same_origin("ftp://localhost:3000", &direct));
        assert!(!same_origin("http://evil.example", &direct));
        assert!(!same_origin("null", &direct));
        let proxied = Authority {
            host: Some("cms.example".into()),
            scheme: Some("https".into()),
            source: "X-Forwarded-Host",
        };
        assert!(same_origin("https://cms.example", &proxied));
        assert!(!same_origin("http://cms.example", &proxied));
    }
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
