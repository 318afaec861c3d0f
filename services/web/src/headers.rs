//! The headers on every response: the security policy and how long a
//! response may be cached.
//!
//! The Content-Security-Policy lets the pages run only the scripts and
//! styles they load from this origin (no inline code: the build refuses
//! it), talk only to this origin and the External API, post forms only
//! here, and be framed by nobody (clickjacking a card form is the classic
//! attack). The same policy belongs on the CDN in front of a bucket.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderName, HeaderValue, StatusCode, header};

/// Where content-hashed files live: a new build gives them new names, so
/// they can be cached for good.
pub const HASHED_ASSETS_PATH: &str = "/assets/";
/// A year, what browsers and CDNs treat as "forever".
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Pages and small documents: cache, but ask every time (an ETag or
/// Last-Modified check), so a deployment is seen at once.
const REVALIDATE: &str = "no-cache";
/// Two years, with subdomains: the value HSTS preload lists ask for.
const HSTS: &str = "max-age=63072000; includeSubDomains";

#[derive(Debug)]
pub struct SecurityHeaders {
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl SecurityHeaders {
    /// `api_origin` is the External API's origin, the one other place the
    /// pages may connect to.
    pub fn new(api_origin: &str) -> anyhow::Result<SecurityHeaders> {
        let csp = format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self' {api_origin}; form-action 'self'; frame-ancestors 'none'; \
             base-uri 'none'"
        );
        let fixed = |value: &'static str| HeaderValue::from_static(value);
        Ok(SecurityHeaders {
            headers: vec![
                (
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_str(&csp)?,
                ),
                (header::STRICT_TRANSPORT_SECURITY, fixed(HSTS)),
                (header::X_CONTENT_TYPE_OPTIONS, fixed("nosniff")),
                (header::REFERRER_POLICY, fixed("no-referrer")),
                // For browsers that predate `frame-ancestors`.
                (header::X_FRAME_OPTIONS, fixed("DENY")),
                (
                    HeaderName::from_static("cross-origin-opener-policy"),
                    fixed("same-origin"),
                ),
                (
                    HeaderName::from_static("cross-origin-resource-policy"),
                    fixed("same-origin"),
                ),
                (
                    HeaderName::from_static("permissions-policy"),
                    fixed("camera=(), microphone=(), geolocation=(), payment=(), usb=()"),
                ),
            ],
        })
    }
}

pub async fn middleware(
    State(policy): State<Arc<SecurityHeaders>>,
    request: Request,
    next: Next,
) -> Response {
    let hashed = request.uri().path().starts_with(HASHED_ASSETS_PATH);
    let mut response = next.run(request).await;
    let found = matches!(
        response.status(),
        StatusCode::OK | StatusCode::NOT_MODIFIED | StatusCode::PARTIAL_CONTENT
    );
    let headers = response.headers_mut();
    for (name, value) in &policy.headers {
        headers.insert(name.clone(), value.clone());
    }
    if hashed && found {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    } else if !headers.contains_key(header::CACHE_CONTROL) {
        // A 404 for an asset is not cached for a year either: the file may
        // be on its way with a deployment.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(REVALIDATE));
    }
    if found {
        // Files are served precompressed by Accept-Encoding; caches must
        // not give a brotli copy to a client that did not ask for one.
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    response
}
