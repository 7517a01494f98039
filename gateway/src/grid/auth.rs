//! Bearer tokens of two kinds: operator tokens (grid writes) and API keys (completions),
//! configured as SHA-256 hashes so the config file holds no secret. A token of the wrong kind
//! is refused with 403, a missing or unknown one with 401.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::api::{ApiError, AppState};
use crate::engine::Priority;

pub type TokenHash = [u8; 32];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Operator,
    ApiKey,
}

impl TokenKind {
    fn name(self) -> &'static str {
        match self {
            TokenKind::Operator => "operator token",
            TokenKind::ApiKey => "API key",
        }
    }
}

/// The accepted token hashes of each kind.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    operator: Vec<TokenHash>,
    api_keys: Vec<TokenHash>,
    /// The priority tier of requests made with an API key that do not name one.
    api_key_tiers: Vec<(TokenHash, Priority)>,
}

/// A request extension: the tier its API key defaults to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyTier(pub Priority);

// Hashes are not secrets, but there is no reason to spray them into logs either.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("operator", &self.operator.len())
            .field("api_keys", &self.api_keys.len())
            .finish()
    }
}

impl Credentials {
    pub fn new(operator: Vec<TokenHash>, api_keys: Vec<TokenHash>) -> Self {
        Self {
            operator,
            api_keys,
            api_key_tiers: Vec::new(),
        }
    }

    /// Sets the default tier of requests made with these API keys.
    pub fn with_api_key_tiers(mut self, tiers: Vec<(TokenHash, Priority)>) -> Self {
        self.api_key_tiers = tiers;
        self
    }

    /// The default tier of `token`'s requests, if it is an API key that has one.
    pub fn tier_of(&self, token: &str) -> Option<Priority> {
        let hash = sha256(token);
        // Every entry is compared, as in `is`.
        self.api_key_tiers.iter().fold(
            None,
            |found, (h, tier)| if ct_eq(h, &hash) { Some(*tier) } else { found },
        )
    }

    /// Adds a plain token (hashed here; the plain text is not kept).
    pub fn add_token(&mut self, kind: TokenKind, token: &str) {
        let list = match kind {
            TokenKind::Operator => &mut self.operator,
            TokenKind::ApiKey => &mut self.api_keys,
        };
        list.push(sha256(token));
    }

    /// Adds `GRIDSERVE_OPERATOR_TOKEN` and `GRIDSERVE_API_KEY` when set and not empty.
    pub fn with_env(mut self) -> Self {
        for (var, kind) in [
            ("GRIDSERVE_OPERATOR_TOKEN", TokenKind::Operator),
            ("GRIDSERVE_API_KEY", TokenKind::ApiKey),
        ] {
            if let Some(token) = std::env::var(var).ok().filter(|t| !t.is_empty()) {
                self.add_token(kind, &token);
            }
        }
        self
    }

    /// With no API key configured, completions stay open.
    pub fn api_keys_required(&self) -> bool {
        !self.api_keys.is_empty()
    }

    pub fn is(&self, kind: TokenKind, token: &str) -> bool {
        let list = match kind {
            TokenKind::Operator => &self.operator,
            TokenKind::ApiKey => &self.api_keys,
        };
        let hash = sha256(token);
        // Visit every entry: how long this takes must not tell which one matched.
        list.iter().fold(false, |found, h| found | ct_eq(h, &hash))
    }

    /// Ok if `headers` carry a token of `kind`; else the 401 or 403 to answer.
    pub fn check(&self, headers: &HeaderMap, kind: TokenKind) -> Result<String, ApiError> {
        let Some(token) = bearer(headers) else {
            let message = format!(
                "This endpoint needs an {} (`Authorization: Bearer …`)",
                kind.name()
            );
            return Err(ApiError::unauthorized(message));
        };
        if self.is(kind, token) {
            return Ok(actor(kind, token));
        }
        let other = match kind {
            TokenKind::Operator => TokenKind::ApiKey,
            TokenKind::ApiKey => TokenKind::Operator,
        };
        if self.is(other, token) {
            let message = format!(
                "An {} cannot be used here; this endpoint needs an {}",
                other.name(),
                kind.name()
            );
            return Err(ApiError::forbidden(message));
        }
        Err(ApiError::unauthorized(format!(
            "Incorrect {} provided",
            kind.name()
        )))
    }
}

pub fn sha256(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Parses 64 hex digits (either case) into a hash.
pub fn parse_sha256_hex(text: &str) -> Option<TokenHash> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn ct_eq(a: &TokenHash, b: &TokenHash) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who did it, for the audit log: the kind and a short fingerprint of the token's hash, which
/// tells operators apart without storing anything that would let one log in.
fn actor(kind: TokenKind, token: &str) -> String {
    let h = sha256(token);
    let prefix = match kind {
        TokenKind::Operator => "operator",
        TokenKind::ApiKey => "api_key",
    };
    format!("{prefix}:{:02x}{:02x}{:02x}{:02x}", h[0], h[1], h[2], h[3])
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Extractor for grid writes: the request carried an operator token. Holds the audit actor.
pub struct Operator(pub String);

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state
            .credentials()
            .check(&parts.headers, TokenKind::Operator)
            .map(Operator)
    }
}

/// Middleware for the completion routes: an API key when any is configured.
/// The key's default tier, if any, travels with the request as a `KeyTier` extension.
pub async fn require_api_key(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let creds = state.credentials();
    if creds.api_keys_required() {
        if let Err(e) = creds.check(req.headers(), TokenKind::ApiKey) {
            return e.into_response();
        }
        if let Some(tier) = bearer(req.headers()).and_then(|t| creds.tier_of(t)) {
            req.extensions_mut().insert(KeyTier(tier));
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn hex_hashes_parse_and_match_the_plain_token() {
        // sha256("secret")
        let hex = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
        assert_eq!(parse_sha256_hex(hex), Some(sha256("secret")));
        assert_eq!(
            parse_sha256_hex(&hex.to_uppercase()),
            Some(sha256("secret"))
        );
        assert_eq!(parse_sha256_hex(&hex[1..]), None);
        assert_eq!(parse_sha256_hex(&format!("{}zz", &hex[2..])), None);
    }

    #[test]
    fn kinds_are_kept_apart() {
        let c = Credentials::new(vec![sha256("op")], vec![sha256("key")]);
        let status = |auth: Option<&str>, kind| {
            let h = auth.map(headers).unwrap_or_default();
            c.check(&h, kind).map_err(|e| e.status.as_u16())
        };
        assert_eq!(
            status(Some("Bearer op"), TokenKind::Operator).map(|a| a.starts_with("operator:")),
            Ok(true)
        );
        assert_eq!(
            status(Some("bearer  key "), TokenKind::ApiKey).map(|a| a.starts_with("api_key:")),
            Ok(true)
        );
        assert_eq!(status(Some("Bearer key"), TokenKind::Operator), Err(403));
        assert_eq!(status(Some("Bearer op"), TokenKind::ApiKey), Err(403));
        assert_eq!(status(Some("Bearer nope"), TokenKind::Operator), Err(401));
        assert_eq!(status(Some("Basic op"), TokenKind::Operator), Err(401));
        assert_eq!(status(None, TokenKind::Operator), Err(401));
        assert!(!Credentials::default().api_keys_required());
    }
}
