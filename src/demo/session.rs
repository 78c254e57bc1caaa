//! Who is using the demo, and the subscriber tokens it signs for them (SPEC §9).
//!
//! The demo's editors have no passwords: picking a name in the page is the sign-in
//! (`POST /demo/api/login`). The answer is a **session**, an HS256 JWT signed with a key
//! the demo makes at start and never stores, which the page keeps in `sessionStorage`
//! (one tab, one editor) and sends as `Authorization: Bearer` on every demo request. No
//! cookie: another site's page cannot make the browser send it, and cannot read it.
//!
//! With a session, `GET /demo/api/token` signs a **subscriber token** for that editor's
//! topics (`projects` and `notifications/<user>`, nothing else) with the key the server
//! made for the demo ([`Access::demo_key`]). That is the part a real application copies:
//! its backend, after its own sign-in, signs a short-lived token for exactly the topics the
//! user may follow, and the browser client asks for a new one before each connect.
//!
//! When the operator configures a token key, the server makes none for the demo and the
//! demo signs no subscriber tokens (`409 demo_tokens_off`): the operator's key would let
//! anyone who reaches the demo read the notifications of real users of the same names.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::auth::Access;
use crate::error::ApiError;

/// How long a demo session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long a subscriber token signed by the demo lasts, unless the page asks for less.
pub const TOKEN_TTL: Duration = Duration::from_secs(600);
/// The shortest token lifetime a page may ask for (`?ttl_s=`), to watch a refresh.
pub const MIN_TOKEN_TTL: Duration = Duration::from_secs(2);
/// `aud` of a demo session: a session is not a subscriber token, and back.
const SESSION_AUDIENCE: &str = "switchyard-demo-session";

/// Signs and checks demo sessions.
pub struct Sessions {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

#[derive(Serialize, Deserialize)]
struct SessionClaims {
    sub: String,
    aud: String,
    exp: u64,
}

#[derive(Serialize)]
struct TokenClaims<'a> {
    sub: &'a str,
    topics: &'a [String],
    exp: u64,
}

/// A subscriber token, as `GET /demo/api/token` answers it.
#[derive(Serialize)]
pub struct Token {
    /// The JWT.
    pub token: String,
    /// How long it is good for.
    pub expires_in_ms: u64,
    /// The topics it allows.
    pub topics: Vec<String>,
}

fn seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Sessions {
    /// Sessions signed with a key made now.
    pub fn generate() -> Sessions {
        let secret: [u8; 32] = rand::random();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[SESSION_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation.leeway = 0;
        Sessions {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            validation,
        }
    }

    /// A session for `user` (a name of [`super::USERS`]).
    pub fn sign_in(&self, user: &str) -> Result<String, ApiError> {
        let claims = SessionClaims {
            sub: user.to_owned(),
            aud: SESSION_AUDIENCE.to_owned(),
            exp: seconds(SystemTime::now() + SESSION_TTL),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::Internal(format!("demo session: {e}")))
    }

    /// The editor a request's session names: `401 demo_login_required` without a
    /// session, `401 demo_session_invalid` for one this server did not sign (or signed
    /// before a restart) or that expired.
    pub fn user(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        let session = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, s)| s.trim())
            .ok_or_else(|| ApiError::Status {
                status: StatusCode::UNAUTHORIZED,
                code: "demo_login_required",
                message: "sign in first: POST /demo/api/login {\"user\":\"ada\"}, then send the session as `Authorization: Bearer <session>`".into(),
            })?;
        jsonwebtoken::decode::<SessionClaims>(session, &self.decoding, &self.validation)
            .map(|data| data.claims.sub)
            .map_err(|e| ApiError::Status {
                status: StatusCode::UNAUTHORIZED,
                code: "demo_session_invalid",
                message: format!(
                    "the demo session cannot be used ({e}); sign in again (sessions end after 12 h and when the server restarts)"
                ),
            })
    }
}

/// A subscriber token for `user`'s topics, good for `ttl`, signed with the key the
/// server made for the demo.
pub fn token(access: &Access, user: &str, ttl: Duration) -> Result<Token, ApiError> {
    let key = access.demo_key().ok_or_else(|| ApiError::Status {
        status: StatusCode::CONFLICT,
        code: "demo_tokens_off",
        message: "a token key is configured (SWITCHYARD_TOKEN_SECRET or SWITCHYARD_TOKEN_PUBLIC_KEY_FILE): the demo does not sign with it, so its pages follow public topics only".into(),
    })?;
    let topics = vec!["projects".to_owned(), format!("notifications/{user}")];
    let claims = TokenClaims {
        sub: user,
        topics: &topics,
        exp: seconds(SystemTime::now() + ttl),
    };
    let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
        .map_err(|e| ApiError::Internal(format!("demo token: {e}")))?;
    Ok(Token {
        token,
        expires_in_ms: ttl.as_millis() as u64,
        topics,
    })
}
