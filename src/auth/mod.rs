//! Who may follow which topics (SPEC §9): subscriber tokens, public topics, one-time
//! tickets.
//!
//! A token is a JWT with `exp` (required) and `topics`, a list of [`Patterns`]. The
//! application signs it (HS256 with `SWITCHYARD_TOKEN_SECRET`, or RS256 / ES256 / EdDSA
//! with the private half of `SWITCHYARD_TOKEN_PUBLIC_KEY_FILE`); switchyard only
//! verifies. [`Access`] decides, for a stream's topics and the [`Grant`] its token gave,
//! whether it may open; the admission path (`transport/admit.rs`) asks it for every
//! stream, the WebSocket session for every `subscribe`, and a long poll on every poll.

mod tickets;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::Config;
use crate::error::ApiError;
pub use crate::event::Patterns;
use crate::event::TopicSet;
pub use tickets::{MAX_TICKETS, RedisTickets, TICKET_TTL, TicketError, TicketStore, Tickets};

/// Clock skew tolerated on `exp` (and `nbf`), between the application that signs and
/// this server.
pub const LEEWAY: Duration = Duration::from_secs(30);
/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// The topics the demo's own key keeps private when no key is configured.
pub const DEMO_PRIVATE: &str = "notifications/*";
/// Name of the cookie that carries a token.
pub const COOKIE: &str = "switchyard_token";

/// What a verified token allows.
#[derive(Clone, Debug)]
pub struct Grant {
    /// The topics it may follow.
    pub topics: Patterns,
    /// When it expires.
    pub expires: SystemTime,
    /// Its `sub`, for logs only.
    pub sub: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    /// Required: checked by the validation (missing → "no exp claim").
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    topics: Vec<String>,
    #[serde(default)]
    sub: Option<String>,
}

/// Why a token or a topic was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A private topic was asked for without a token.
    #[error(
        "topic {0:?} is private: send a token (Authorization: Bearer, the switchyard_token cookie, or ?ticket= from POST /v1/tickets)"
    )]
    Required(String),
    /// The token (or ticket) cannot be used.
    #[error("{0}")]
    Invalid(String),
    /// The token's `exp` has passed.
    #[error("the token expired; fetch a new one and reconnect from your cursor")]
    Expired,
    /// The token does not name a topic asked for.
    #[error("the token does not allow topic {0:?} (its topics: {1})")]
    Forbidden(String, String),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        let message = e.to_string();
        let code = e.code();
        match e {
            AuthError::Forbidden(topic, _) => ApiError::TopicForbidden { topic, message },
            AuthError::Required(topic) => ApiError::Token {
                code,
                message,
                topic: Some(topic),
            },
            _ => ApiError::Token {
                code,
                message,
                topic: None,
            },
        }
    }
}

impl AuthError {
    /// The error code (as in HTTP errors and WebSocket `error` frames).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Required(_) => "token_required",
            AuthError::Invalid(_) => "token_invalid",
            AuthError::Expired => "token_expired",
            AuthError::Forbidden(..) => "topic_forbidden",
        }
    }

    /// The topic refused, when the error is about one.
    pub fn topic(&self) -> Option<&str> {
        match self {
            AuthError::Required(topic) | AuthError::Forbidden(topic, _) => Some(topic),
            AuthError::Invalid(_) | AuthError::Expired => None,
        }
    }
}

/// Verifies tokens with one key.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    /// A verifier of HS256 tokens signed with `secret`.
    pub fn hs256(secret: &[u8], issuer: Option<&str>, audience: Option<&str>) -> Verifier {
        Verifier::new(
            DecodingKey::from_secret(secret),
            Algorithm::HS256,
            issuer,
            audience,
        )
    }

    /// A verifier of tokens signed with the private half of a PEM public key: RSA
    /// (RS256), P-256 (ES256) or Ed25519 (EdDSA), told apart by the key.
    pub fn from_pem(
        pem: &[u8],
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> Result<Verifier, String> {
        let (key, alg) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (key, Algorithm::RS256)
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            (key, Algorithm::ES256)
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (key, Algorithm::EdDSA)
        } else {
            return Err(
                "expected a PEM public key: RSA (RS256), P-256 (ES256) or Ed25519 (EdDSA)".into(),
            );
        };
        Ok(Verifier::new(key, alg, issuer, audience))
    }

    fn new(
        key: DecodingKey,
        alg: Algorithm,
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> Verifier {
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY.as_secs();
        let mut required = vec!["exp"];
        match issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Verifier { key, validation }
    }

    /// The grant of a token, or why it cannot be used.
    pub fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Invalid(format!(
                "the token is longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => {
                    AuthError::Invalid("the token's signature does not verify".into())
                }
                ErrorKind::InvalidAlgorithm => AuthError::Invalid(format!(
                    "the token is not signed with {:?}, the algorithm of the configured key",
                    self.validation
                        .algorithms
                        .first()
                        .copied()
                        .unwrap_or(Algorithm::HS256)
                )),
                ErrorKind::InvalidAudience => {
                    AuthError::Invalid("the token's aud is not SWITCHYARD_TOKEN_AUDIENCE".into())
                }
                ErrorKind::InvalidIssuer => {
                    AuthError::Invalid("the token's iss is not SWITCHYARD_TOKEN_ISSUER".into())
                }
                ErrorKind::MissingRequiredClaim(claim) => {
                    AuthError::Invalid(format!("the token has no {claim:?} claim"))
                }
                ErrorKind::ImmatureSignature => {
                    AuthError::Invalid("the token is not valid yet (nbf)".into())
                }
                _ => {
                    AuthError::Invalid(format!("the token is not a JWT this server can read ({e})"))
                }
            },
        )?;
        let topics = Patterns::parse(&data.claims.topics)
            .map_err(|e| AuthError::Invalid(format!("the token's topics claim: {e}")))?;
        Ok(Grant {
            topics,
            expires: UNIX_EPOCH
                + Duration::from_secs(
                    data.claims.exp.ok_or_else(|| {
                        AuthError::Invalid("the token has no \"exp\" claim".into())
                    })?,
                ),
            sub: data.claims.sub,
        })
    }
}

/// Who may follow what, and the tickets issued for it.
pub struct Access {
    verifier: Option<Verifier>,
    public: Patterns,
    /// Never public, whatever `public` says: `notifications/*` under the demo's key.
    private: Patterns,
    /// The key the server made for the demo, when the demo is on and no key is
    /// configured: the demo signs its editors' tokens with it.
    demo_key: Option<jsonwebtoken::EncodingKey>,
    /// One-time tickets (`POST /v1/tickets`).
    pub tickets: Arc<dyn TicketStore>,
}

impl Access {
    /// The access rules of a configuration: with no token key every topic is public,
    /// with one only `SWITCHYARD_PUBLIC_TOPICS` are.
    pub fn from_config(config: &Config) -> Result<Access, String> {
        let issuer = config.token_issuer.as_deref();
        let audience = config.token_audience.as_deref();
        let verifier = match (&config.token_secret, &config.token_public_key_file) {
            (Some(_), Some(_)) => {
                return Err(
                    "set SWITCHYARD_TOKEN_SECRET or SWITCHYARD_TOKEN_PUBLIC_KEY_FILE, not both"
                        .into(),
                );
            }
            (Some(secret), None) => Some(Verifier::hs256(secret.as_bytes(), issuer, audience)),
            (None, Some(path)) => Some(read_key(path, issuer, audience)?),
            (None, None) => None,
        };
        if verifier.is_none() && config.demo_on() {
            // SPEC §9: the demo signs per-user tokens with a key of its own, made now and
            // never stored, and keeps `notifications/*` private with it; other topics stay
            // public (on loopback: the curl recipes keep working).
            let secret: [u8; 32] = rand::random();
            let mut access = Access::new(
                Some(Verifier::hs256(&secret, None, None)),
                config.public_topics.clone().unwrap_or_else(Patterns::all),
            );
            access.private = Patterns::parse([DEMO_PRIVATE])?;
            access.demo_key = Some(jsonwebtoken::EncodingKey::from_secret(&secret));
            return Ok(access);
        }
        let public = match (&config.public_topics, &verifier) {
            (Some(public), _) => public.clone(),
            (None, None) => Patterns::all(),
            (None, Some(_)) => Patterns::default(),
        };
        Ok(Access::new(verifier, public))
    }

    /// The key the server made for the demo (see [`Access::from_config`]), if it did.
    pub fn demo_key(&self) -> Option<&jsonwebtoken::EncodingKey> {
        self.demo_key.as_ref()
    }

    /// Access with `verifier` (if any) and `public` topics.
    pub fn new(verifier: Option<Verifier>, public: Patterns) -> Access {
        Access {
            verifier,
            public,
            private: Patterns::default(),
            demo_key: None,
            tickets: Arc::new(Tickets::new()),
        }
    }

    /// Whether tokens are verified at all.
    pub fn has_key(&self) -> bool {
        self.verifier.is_some()
    }

    /// Verifies a token.
    pub fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        match &self.verifier {
            Some(v) => v.verify(token),
            None => Err(AuthError::Invalid(
                "this server verifies no tokens (neither SWITCHYARD_TOKEN_SECRET nor SWITCHYARD_TOKEN_PUBLIC_KEY_FILE is set)".into(),
            )),
        }
    }

    /// The grant of a request's token (`Authorization: Bearer`, else the cookie when
    /// `cookies`); `None` without a token, or when the server verifies none.
    pub fn request_grant(
        &self,
        headers: &axum::http::HeaderMap,
        cookies: bool,
    ) -> Result<Option<Grant>, AuthError> {
        if !self.has_key() {
            return Ok(None);
        }
        request_token(headers, cookies)?
            .map(|token| self.verify(token))
            .transpose()
    }

    /// Whether a stream with `grant` may follow every topic of `topics`; returns whether
    /// it needs the grant (some topic is not public), so the stream ends when the grant
    /// expires.
    pub fn check(&self, topics: &TopicSet, grant: Option<&Grant>) -> Result<bool, AuthError> {
        let mut needed = false;
        for topic in topics.iter() {
            let topic = topic.as_str();
            if self.public.matches(topic) && !self.private.matches(topic) {
                continue;
            }
            needed = true;
            let Some(grant) = grant else {
                return Err(AuthError::Required(topic.to_owned()));
            };
            // A stream ends at `exp`, so it opens only before: a token that verified
            // within the leeway but is past `exp` would end its stream at once, and the
            // client would reconnect with it again and again.
            if grant.expires <= SystemTime::now() {
                return Err(AuthError::Expired);
            }
            if !grant.topics.matches(topic) {
                return Err(AuthError::Forbidden(
                    topic.to_owned(),
                    grant.topics.to_string(),
                ));
            }
        }
        Ok(needed)
    }
}

fn read_key(path: &Path, issuer: Option<&str>, audience: Option<&str>) -> Result<Verifier, String> {
    let pem = std::fs::read(path).map_err(|e| {
        format!(
            "cannot read SWITCHYARD_TOKEN_PUBLIC_KEY_FILE={}: {e}",
            path.display()
        )
    })?;
    Verifier::from_pem(&pem, issuer, audience)
        .map_err(|e| format!("SWITCHYARD_TOKEN_PUBLIC_KEY_FILE={}: {e}", path.display()))
}

/// The token a request carries: `Authorization: Bearer`, else the `switchyard_token`
/// cookie when `cookies` (see [`crate::headers::cookies_count`]). `Err` for an
/// `Authorization` header that is not a bearer token.
pub fn request_token(
    headers: &axum::http::HeaderMap,
    cookies: bool,
) -> Result<Option<&str>, AuthError> {
    use axum::http::header;
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(|| {
                AuthError::Invalid("the Authorization header must be `Bearer <token>`".into())
            })?;
        return Ok(Some(token));
    }
    if !cookies {
        return Ok(None);
    }
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            if let Some((name, token)) = pair.trim().split_once('=')
                && name == COOKIE
            {
                return Ok(Some(token.trim()));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
