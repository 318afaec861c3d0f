//! The HTTP hygiene every Snakepay API shares, as one wrapper around a router:
//! [`stripe_edge`].
//!
//! From the outside in, a request meets:
//! 1. request stamping: a fresh `Request-Id` (also given to handlers as
//!    [`RequestIdExt`]), `Stripe-Version`, `Cache-Control: no-store` on the way out;
//! 2. envelope enforcement: any bare 4xx/5xx (axum's own 404, 405, 413,
//!    extractor rejections) is rewritten into the Stripe error envelope;
//! 3. panic catching: a panicking handler becomes a logged, generic 500;
//! 4. load shedding: beyond the instance's in-flight limit a request is
//!    answered 503 `api_error` with `Stripe-Should-Retry: true` at once
//!    (health probes are exempt), so an overload costs clients a retry, not
//!    a queue that grows the service's memory and everyone's latency;
//! 5. the request timeout: 503 `api_error` with `Stripe-Should-Retry: true`;
//! 6. path canonicalisation (`//v1/x` → `/v1/x`, configured prefix stripped)
//!    and the body size limit, then routing into the wrapped router.
//!
//! Path rewriting must happen before routing, which `Router::layer` alone cannot
//! do (it wraps routes that are already chosen), so the wrapped router becomes
//! the fallback service of an outer router that carries these layers.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, StatusCode, Uri, header};
use http_body_util::Limited;
use snakepay_domain::ids::{IdParts, RegionNumber, RequestId, ShardNumber};

use crate::error::ApiError;

/// The API version we speak, sent back in every response's `Stripe-Version`.
pub const API_VERSION: &str = "2024-06-20";
pub const REQUEST_ID_HEADER: &str = "request-id";
pub const STRIPE_VERSION_HEADER: &str = "stripe-version";
/// Our largest legitimate request (an intent with 50 metadata entries of 500
/// characters) is about 30 KiB; 1 MiB leaves room without inviting abuse.
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 1024 * 1024;
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests one instance works on at once before it sheds load. A payment
/// holds a database connection for a few milliseconds and waits for its
/// outcome for up to seconds; far more than the pool's connections can be
/// in flight, but an unbounded number only queues (docs/performance.md).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Paths never shed: a busy instance is alive, and the load balancer's
/// readiness probe must still get an answer.
const UNSHED_PATHS: &[&str] = &["/livez", "/readyz"];
/// How much of a bare error body is kept as the envelope's message.
const BARE_ERROR_MESSAGE_MAX_BYTES: usize = 1024;

/// This request's ID (`req_…`), as sent in the `Request-Id` header. Handlers
/// take it as an extractor (or from the request extensions) to log it and to
/// store it as an idempotent response's `Original-Request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestIdExt(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestIdExt {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Outside `stripe_edge` (a bare router in a unit test) there is no
        // stamped ID; a fresh one is still a valid, unique ID.
        Ok(parts
            .extensions
            .get::<RequestIdExt>()
            .cloned()
            .unwrap_or_else(|| RequestIdExt(new_request_id())))
    }
}

/// The body limit in force, for extractors that read bodies themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit(pub usize);

/// What [`stripe_edge`] enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeLimits {
    pub body_limit_bytes: usize,
    /// Time for the whole handler. A handler cut off here is dropped at an
    /// `.await`; handlers that change state must be safe to stop anywhere
    /// (the idempotency phases guarantee that for payments).
    pub request_timeout: Duration,
    /// A base path such as `/api` in front of `/v1/...`, stripped when present.
    /// Requests without it still route, so health checks and direct calls work.
    pub path_prefix: Option<String>,
    /// Requests handled at once; more are shed (503, retryable).
    pub max_in_flight: usize,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        EdgeLimits {
            body_limit_bytes: DEFAULT_BODY_LIMIT_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            path_prefix: None,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

#[derive(Debug)]
struct Edge {
    body_limit_bytes: usize,
    request_timeout: Duration,
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Normalised: leading `/`, no trailing `/`, never just `/`.
    path_prefix: Option<String>,
}

/// Wraps `router` with everything in this module's header. Serve the result
/// with [`crate::serve`]; handlers inside see canonical paths.
pub fn stripe_edge(router: Router, limits: EdgeLimits) -> Router {
    let edge = Arc::new(Edge {
        body_limit_bytes: limits.body_limit_bytes,
        request_timeout: limits.request_timeout,
        in_flight: Arc::new(tokio::sync::Semaphore::new(limits.max_in_flight)),
        path_prefix: limits.path_prefix.as_deref().and_then(normalize_prefix),
    });
    Router::new()
        .fallback_service(router)
        // axum's own body extractors (Json, Bytes, Form) honour the same limit.
        .layer(DefaultBodyLimit::max(limits.body_limit_bytes))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&edge),
            canonicalize_and_limit,
        ))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&edge),
            time_limit,
        ))
        .layer(middleware::from_fn_with_state(Arc::clone(&edge), shed_load))
        .layer(middleware::from_fn(catch_panic))
        .layer(middleware::from_fn_with_state(edge, envelope_bare_errors))
        .layer(middleware::from_fn(stamp))
}

fn normalize_prefix(prefix: &str) -> Option<String> {
    let trimmed = prefix.trim().trim_matches('/');
    if trimmed.is_empty() {
        None
    } else {
        Some(format!("/{trimmed}"))
    }
}

/// A new `req_…` ID. Should the OS random source fail, the ID is still unique
/// (time plus a process counter): a request ID needs uniqueness, not secrecy.
pub fn new_request_id() -> String {
    static FALLBACK_COUNTER: AtomicU64 = AtomicU64::new(0);
    match RequestId::generate(RegionNumber(0), ShardNumber(0)) {
        Ok(id) => id.to_string(),
        Err(_) => {
            let counter = FALLBACK_COUNTER
                .fetch_add(1, Ordering::Relaxed)
                .to_be_bytes();
            let unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0);
            let mut random: [u8; 10] = Default::default();
            for (slot, byte) in random.iter_mut().rev().zip(counter.iter().rev()) {
                *slot = *byte;
            }
            RequestId::from_parts(IdParts {
                unix_ms,
                region: RegionNumber(0),
                shard: ShardNumber(0),
                random,
            })
            .to_string()
        }
    }
}

async fn stamp(mut request: Request, next: Next) -> Response {
    let id = new_request_id();
    request.extensions_mut().insert(RequestIdExt(id.clone()));
    let method = request.method().clone();
    // The path only: query strings may carry client secrets.
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    headers.insert(STRIPE_VERSION_HEADER, HeaderValue::from_static(API_VERSION));
    // Responses hold payment data; no shared cache may keep them.
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache, no-store"));
    headers
        .entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    tracing::debug!(
        request.id = %id,
        http.method = %method,
        http.path = %path,
        http.status = response.status().as_u16(),
        http.latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "request"
    );
    response
}

async fn envelope_bare_errors(
    State(edge): State<Arc<Edge>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::not_found_route(&method, &path),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::method_not_allowed(&method, &path),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::payload_too_large(edge.body_limit_bytes),
        _ if status.is_server_error() => {
            // Whatever produced a bare 5xx may have put internals in its body.
            let mut error = ApiError::unavailable("An unexpected error occurred on our side.");
            error.status = status;
            error.should_retry = None;
            error
        }
        _ => {
            let mut error =
                ApiError::invalid_request(None, None, bare_message(response, status).await);
            error.status = status;
            error
        }
    };
    let mut enveloped = error.into_response();
    if let Some(allow) = allow {
        enveloped.headers_mut().insert(header::ALLOW, allow);
    }
    enveloped
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        })
}

/// The text of a bare error (axum's rejections explain themselves), or the
/// status's reason phrase.
async fn bare_message(response: Response, status: StatusCode) -> String {
    let fallback = status
        .canonical_reason()
        .unwrap_or("Request failed")
        .to_owned();
    match axum::body::to_bytes(response.into_body(), BARE_ERROR_MESSAGE_MAX_BYTES).await {
        Ok(bytes) => match String::from_utf8(bytes.to_vec()) {
            Ok(text) if !text.trim().is_empty() => text.trim().to_owned(),
            _ => fallback,
        },
        Err(_) => fallback,
    }
}

async fn catch_panic(request: Request, next: Next) -> Response {
    match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            ApiError::internal(&anyhow::anyhow!("handler panicked: {what}")).into_response()
        }
    }
}

async fn shed_load(State(edge): State<Arc<Edge>>, request: Request, next: Next) -> Response {
    if UNSHED_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    // Held until the handler's response is ready.
    let Ok(_permit) = Arc::clone(&edge.in_flight).try_acquire_owned() else {
        tracing::debug!("request shed: too many requests in flight");
        return ApiError::unavailable(
            "This server is handling too many requests right now. Please retry shortly.",
        )
        .into_response();
    };
    next.run(request).await
}

async fn time_limit(State(edge): State<Arc<Edge>>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(edge.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(
                http.timeout_ms =
                    u64::try_from(edge.request_timeout.as_millis()).unwrap_or(u64::MAX),
                "request timed out"
            );
            ApiError::unavailable("The request took too long to complete. Please retry it.")
                .into_response()
        }
    }
}

async fn canonicalize_and_limit(
    State(edge): State<Arc<Edge>>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(uri) = canonical_uri(request.uri(), edge.path_prefix.as_deref()) {
        *request.uri_mut() = uri;
    }
    let declared_length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let limit = edge.body_limit_bytes;
    if declared_length.is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX)) {
        return ApiError::payload_too_large(limit).into_response();
    }
    request.extensions_mut().insert(BodyLimit(limit));
    // Chunked bodies have no declared length: the limit is enforced as they stream.
    let request = request.map(|body| Body::new(Limited::new(body, limit)));
    next.run(request).await
}

/// The URI to route by, if it differs: leading slashes collapsed, the prefix stripped.
fn canonical_uri(uri: &Uri, prefix: Option<&str>) -> Option<Uri> {
    let original = uri.path();
    let mut path = collapse_leading_slashes(original);
    if let Some(prefix) = prefix {
        if path == prefix {
            path = "/";
        } else if let Some(rest) = path.strip_prefix(prefix)
            && rest.starts_with('/')
        {
            path = collapse_leading_slashes(rest);
        }
    }
    if path == original {
        return None;
    }
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).ok()?);
    Uri::from_parts(parts).ok()
}

fn collapse_leading_slashes(path: &str) -> &str {
    let trimmed = path.trim_start_matches('/');
    // Keep exactly one of the slashes that were removed.
    let removed = path.len() - trimmed.len();
    if removed > 1 {
        path.get(removed - 1..).unwrap_or(path)
    } else {
        path
    }
}

/// Whether `method` has no body to read (its parameters are in the query string).
pub(crate) fn is_query_method(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_slashes_and_prefix_are_removed() {
        let uri: Uri = "//v1/x?a=1".parse().unwrap();
        assert_eq!(canonical_uri(&uri, None).unwrap(), "/v1/x?a=1");
        let uri: Uri = "/api/v1/x".parse().unwrap();
        assert_eq!(canonical_uri(&uri, Some("/api")).unwrap(), "/v1/x");
        let uri: Uri = "/api//v1/x".parse().unwrap();
        assert_eq!(canonical_uri(&uri, Some("/api")).unwrap(), "/v1/x");
        let uri: Uri = "/apiv1/x".parse().unwrap();
        assert!(canonical_uri(&uri, Some("/api")).is_none());
        let uri: Uri = "/v1/x".parse().unwrap();
        assert!(canonical_uri(&uri, Some("/api")).is_none());
    }

    #[test]
    fn prefixes_are_normalised() {
        assert_eq!(normalize_prefix("api/"), Some("/api".to_owned()));
        assert_eq!(normalize_prefix("/"), None);
        assert_eq!(normalize_prefix(""), None);
    }

    #[test]
    fn request_ids_look_like_stripes() {
        let id = new_request_id();
        assert!(id.starts_with("req_"), "{id}");
        assert_ne!(id, new_request_id());
    }
}
