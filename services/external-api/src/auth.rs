//! API-key authentication as an extractor: every merchant route takes
//! [`Auth`], so no route can forget it.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use http::request::Parts;
use snakepay_http::{ApiError, require_api_key};
use snakepay_store::merchants::{self, AuthContext, AuthError, CachedKey, KeyKind};

use crate::rate_limit::{EndpointClass, retry_after_seconds};
use crate::state::AppState;

/// An authenticated request.
#[derive(Debug, Clone)]
pub struct Auth(pub AuthContext);

impl Auth {
    /// Every operation but confirming and reading an intent with its client
    /// secret needs a secret key.
    pub fn require_secret(&self) -> Result<(), ApiError> {
        match self.0.kind {
            KeyKind::Secret => Ok(()),
            KeyKind::Publishable => Err(ApiError::forbidden(
                "This API call cannot be made with a publishable API key. Please use a secret API key.",
            )),
        }
    }

    pub fn is_publishable(&self) -> bool {
        self.0.kind == KeyKind::Publishable
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = match require_api_key(&parts.headers) {
            Ok(key) => key,
            Err(error) => return Err(throttle_failure(parts, state, error, "missing", None).await),
        };
        match authenticate(state, &key).await {
            Ok(context) => {
                if let Some(slot) = parts.extensions.get::<crate::request_log::LogSlot>() {
                    let _ = slot.0.set((context.merchant_id, context.livemode));
                }
                // Authenticate, then rate-limit, then parse (API.md): a
                // limited request is refused before any work.
                state
                    .rate_limits
                    .check(&context, EndpointClass::of(&parts.method))
                    .await
                    .map_err(|wait| {
                        ApiError::rate_limited().with_retry_after(retry_after_seconds(wait))
                    })?;
                Ok(Auth(context))
            }
            Err(error @ (AuthError::Invalid | AuthError::Revoked)) => {
                let reason = if matches!(error, AuthError::Revoked) {
                    "revoked"
                } else {
                    "invalid"
                };
                Err(throttle_failure(parts, state, refusal(&key, &error), reason, Some(&key)).await)
            }
            Err(AuthError::OtherRegion(region)) => Err(ApiError::unauthorized(format!(
                "This API key belongs to {}.",
                state.describe_region(region)
            ))),
            Err(AuthError::NotVerified) => Err(ApiError::forbidden(
                "Live mode is not active for this account yet: its verification (KYC) is not complete. Use your test keys until then.",
            )),
            Err(AuthError::Database(error)) => {
                tracing::error!(error = %error, "api key lookup failed");
                Err(ApiError::unavailable(format!(
                    "Authentication is temporarily unavailable ({}); please retry.",
                    sanitized_kind(&error)
                )))
            }
        }
    }
}

/// Counts a failed authentication against the client's address: within
/// the allowance the refusal stands (401) and is audited; beyond it the
/// client is told to slow down (429 with `Retry-After`), so keys cannot be
/// guessed at speed. Throttled refusals are logged, not audited one by one:
/// the throttle is what bounds the audit rows a client can cause.
async fn throttle_failure(
    parts: &Parts,
    state: &AppState,
    refusal: ApiError,
    reason: &str,
    key: Option<&str>,
) -> ApiError {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    let throttled = match peer {
        Some(ip) => state.rate_limits.check_auth_failure(ip).await.err(),
        None => None,
    };
    if throttled.is_none() {
        state.audit.record(snakepay_store::audit::Event {
            actor: snakepay_store::audit::Actor {
                subject: "anonymous".into(),
                role: "api_key".into(),
            },
            action: "api_key.authenticate".into(),
            // What the client sent, as the refusal shows it (never whole).
            resource: key.map(redact),
            outcome: "unauthenticated".into(),
            origin: peer.map(|ip| ip.to_string()),
            details: serde_json::json!({
                "reason": reason,
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
            }),
        });
    }
    match throttled {
        None => refusal,
        Some(wait) => {
            if let Some(ip) = peer {
                tracing::warn!(client.address = %ip, "failed authentications throttled");
            }
            ApiError::rate_limited().with_retry_after(retry_after_seconds(wait))
        }
    }
}

/// The 401 for a key that is unknown, wrong or revoked.
fn refusal(key: &str, error: &AuthError) -> ApiError {
    match error {
        AuthError::Revoked => ApiError::unauthorized("This API key has been revoked."),
        _ => ApiError::unauthorized(format!("Invalid API Key provided: {}", redact(key))),
    }
}

/// Checks a key: from the API-key cache when it holds the key (written only
/// for keys that authenticated, forgotten on revocation or a KYC change),
/// else against the control database, caching what authenticated.
async fn authenticate(state: &AppState, key: &str) -> Result<AuthContext, AuthError> {
    let cache = state.caches.as_ref().map(|caches| &caches.api_keys);
    let cache_id = merchants::cache_id(key);
    if let (Some(cache), Some(id)) = (cache, &cache_id)
        && let Some((_, bytes)) = cache.get(id).await
        && let Ok(cached) = serde_json::from_slice::<CachedKey>(&bytes)
        && let Some(context) =
            merchants::authenticate_cached(&state.hasher, state.region, key, &cached)
    {
        return Ok(context);
    }
    let (context, cached) =
        merchants::authenticate_for_cache(state.store.control(), &state.hasher, state.region, key)
            .await?;
    if let (Some(cache), Some(id), Ok(bytes)) = (cache, &cache_id, serde_json::to_vec(&cached)) {
        // Version 1: a key's cached state never changes, it is only
        // forgotten (a tombstone no populate can pass).
        cache.populate(id, 1, &bytes).await;
    }
    Ok(context)
}

/// Stripe shows the key's beginning and end; never the whole key.
fn redact(key: &str) -> String {
    let prefix: String = key.chars().take(8).collect();
    let suffix: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!(
        "{prefix}{}{suffix}",
        "*".repeat(key.chars().count().saturating_sub(12).min(24))
    )
}

fn sanitized_kind(error: &sqlx::Error) -> &'static str {
    match error {
        sqlx::Error::PoolTimedOut => "database busy",
        _ => "database error",
    }
}
