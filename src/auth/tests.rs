//! Unit tests of patterns, token verification, the access check and tickets.

use std::time::Instant;

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn token(alg: Algorithm, key: &[u8], claims: serde_json::Value) -> String {
    encode(&Header::new(alg), &claims, &EncodingKey::from_secret(key)).expect("sign")
}

fn topics(list: &str) -> TopicSet {
    TopicSet::parse_list(list).expect("topics")
}

#[test]
fn patterns_name_topics_or_prefixes() {
    let p = Patterns::parse_list("projects/*,notifications/ada").expect("patterns");
    assert!(p.matches("projects/42"));
    assert!(p.matches("projects/"));
    assert!(p.matches("notifications/ada"));
    assert!(!p.matches("notifications/adam"));
    assert!(!p.matches("notifications/grace"));
    assert!(Patterns::parse_list("*").expect("all").is_all());
    assert!(Patterns::parse_list("").expect("none").is_empty());
    for bad in ["a b", "*a", "pro*jects", "é*"] {
        assert!(Patterns::parse_list(bad).is_err(), "{bad:?}");
    }
    assert_eq!(p.to_string(), "notifications/ada,projects/*");
}

#[test]
fn tokens_verify_or_say_why_not() {
    let v = Verifier::hs256(SECRET, None, Some("switchyard"));
    let good = json!({"exp": now_s() + 600, "aud": "switchyard", "topics": ["notifications/ada"], "sub": "ada"});
    let grant = v
        .verify(&token(Algorithm::HS256, SECRET, good.clone()))
        .expect("valid");
    assert!(grant.topics.matches("notifications/ada"));
    assert_eq!(grant.sub.as_deref(), Some("ada"));
    let cases = [
        (
            token(
                Algorithm::HS256,
                b"another secret, also 32 bytes lo",
                good.clone(),
            ),
            "signature does not verify",
        ),
        (
            token(Algorithm::HS384, SECRET, good.clone()),
            "not signed with",
        ),
        (
            token(
                Algorithm::HS256,
                SECRET,
                json!({"exp": now_s() + 600, "aud": "other", "topics": []}),
            ),
            "aud",
        ),
        (
            token(
                Algorithm::HS256,
                SECRET,
                json!({"aud": "switchyard", "topics": []}),
            ),
            "\"exp\"",
        ),
        (
            token(
                Algorithm::HS256,
                SECRET,
                json!({"exp": now_s() + 600, "aud": "switchyard", "topics": ["a b"]}),
            ),
            "topics claim",
        ),
        ("not.a.jwt".to_owned(), "not a JWT"),
        ("x".repeat(MAX_TOKEN_LEN + 1), "longer than"),
    ];
    for (t, words) in cases {
        match v.verify(&t) {
            Err(AuthError::Invalid(message)) => {
                assert!(message.contains(words), "{message:?} should say {words:?}")
            }
            other => panic!("{words}: {other:?}"),
        }
    }
    let expired = token(
        Algorithm::HS256,
        SECRET,
        json!({"exp": now_s() - 120, "aud": "switchyard"}),
    );
    assert_eq!(v.verify(&expired).err(), Some(AuthError::Expired));
    // Within the leeway, a token just past its exp still verifies.
    let skewed = token(
        Algorithm::HS256,
        SECRET,
        json!({"exp": now_s() - 5, "aud": "switchyard"}),
    );
    assert!(v.verify(&skewed).is_ok());
}

#[test]
fn only_public_topics_open_without_a_grant() {
    let access = Access::new(
        Some(Verifier::hs256(SECRET, None, None)),
        Patterns::parse_list("projects").expect("public"),
    );
    assert_eq!(access.check(&topics("projects"), None), Ok(false));
    assert_eq!(
        access.check(&topics("projects,notifications/ada"), None),
        Err(AuthError::Required("notifications/ada".into()))
    );
    let grant = Grant {
        topics: Patterns::parse_list("notifications/ada").expect("p"),
        expires: SystemTime::now() + Duration::from_secs(60),
        sub: None,
    };
    assert_eq!(
        access.check(&topics("projects,notifications/ada"), Some(&grant)),
        Ok(true)
    );
    assert_eq!(
        access
            .check(&topics("notifications/grace"), Some(&grant))
            .map_err(|e| e.code()),
        Err("topic_forbidden")
    );
    let old = Grant {
        expires: SystemTime::now() - Duration::from_secs(120),
        ..grant
    };
    assert_eq!(
        access.check(&topics("notifications/ada"), Some(&old)),
        Err(AuthError::Expired)
    );
    // Within the leeway a token verifies, but a stream needs time left before its exp.
    let just_past = Grant {
        expires: SystemTime::now() - Duration::from_secs(5),
        ..old
    };
    assert_eq!(
        access.check(&topics("notifications/ada"), Some(&just_past)),
        Err(AuthError::Expired)
    );
}

#[test]
fn tickets_are_single_use_and_expire() {
    let store = Tickets::new();
    let grant = Grant {
        topics: Patterns::all(),
        expires: SystemTime::now() + Duration::from_secs(600),
        sub: None,
    };
    let now = Instant::now();
    let (a, ttl) = store.issue_at(grant.clone(), now).expect("issued");
    assert_eq!(ttl, TICKET_TTL);
    assert!(store.redeem_at(&a, now).is_some(), "first use");
    assert!(store.redeem_at(&a, now).is_none(), "second use");
    let (b, _) = store.issue_at(grant.clone(), now).expect("issued");
    assert!(
        store
            .redeem_at(&b, now + TICKET_TTL + Duration::from_millis(1))
            .is_none(),
        "expired"
    );
    assert!(store.redeem_at("nonsense", now).is_none());
    // A ticket never outlives its token.
    let short = Grant {
        expires: SystemTime::now() + Duration::from_secs(5),
        ..grant
    };
    let (_, ttl) = store.issue_at(short, now).expect("issued");
    assert!(ttl <= Duration::from_secs(5));
}

#[test]
fn tokens_come_from_bearer_or_cookie() {
    let mut h = axum::http::HeaderMap::new();
    assert_eq!(request_token(&h, true), Ok(None));
    h.insert(
        "cookie",
        "a=b; switchyard_token=t1; c=d".parse().expect("cookie"),
    );
    assert_eq!(request_token(&h, true), Ok(Some("t1")));
    assert_eq!(
        request_token(&h, false),
        Ok(None),
        "a cookie that does not count"
    );
    h.insert("authorization", "bearer t2".parse().expect("auth"));
    assert_eq!(request_token(&h, true), Ok(Some("t2")));
    h.insert("authorization", "Basic x".parse().expect("auth"));
    assert!(request_token(&h, true).is_err());
}
