//! Extractors and header readers for the Stripe wire format: the request's
//! parameters ([`StripeParams`]), the API key ([`api_key`]) and the
//! `Idempotency-Key` ([`idempotency_key`]).

use axum::extract::{FromRequest, Request};
use base64::Engine;
use http::{HeaderMap, header};

use crate::error::ApiError;
use crate::layers::{BodyLimit, DEFAULT_BODY_LIMIT_BYTES, is_query_method};
use crate::params::Params;

/// Stripe's idempotency keys are at most 255 characters.
pub const IDEMPOTENCY_KEY_MAX_CHARS: usize = 255;
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// API keys are short tokens; anything longer is not one of ours.
const API_KEY_MAX_CHARS: usize = 255;

/// The request's parameters: the query string for GET and HEAD; for other
/// methods (POST, and DELETE, whose parameters Stripe's SDKs put in the query
/// string) the query string plus the body per `Content-Type` (form when
/// absent). A name in both is refused as a duplicate, never silently dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeParams(pub Params);

impl<S: Send + Sync> FromRequest<S> for StripeParams {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let mut params = Params::from_query(request.uri().query().unwrap_or_default())?;
        if is_query_method(request.method()) {
            return Ok(StripeParams(params));
        }
        let body_kind = body_kind(request.headers())?;
        let limit = request
            .extensions()
            .get::<BodyLimit>()
            .map_or(DEFAULT_BODY_LIMIT_BYTES, |l| l.0);
        let body = axum::body::to_bytes(request.into_body(), limit)
            .await
            .map_err(|e| {
                if is_length_limit(&e) {
                    ApiError::payload_too_large(limit)
                } else {
                    ApiError::invalid_request(None, None, "The request body could not be read.")
                }
            })?;
        let from_body = match body_kind {
            BodyKind::Form => Params::from_form(&body)?,
            BodyKind::Json => Params::from_json(&body)?,
        };
        params.merge(from_body)?;
        Ok(StripeParams(params))
    }
}

enum BodyKind {
    Form,
    Json,
}

fn body_kind(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(BodyKind::Form);
    };
    let unsupported = || {
        ApiError::invalid_request(
            None,
            None,
            "Invalid Content-Type: send application/x-www-form-urlencoded or application/json.",
        )
    };
    let text = value.to_str().map_err(|_| unsupported())?;
    let mime = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "" | "application/x-www-form-urlencoded" => Ok(BodyKind::Form),
        "application/json" => Ok(BodyKind::Json),
        _ => Err(unsupported()),
    }
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}

fn malformed_authorization() -> ApiError {
    ApiError::unauthorized(
        "Invalid Authorization header. Send your API key as 'Authorization: Bearer <key>', \
         or with HTTP Basic auth as the user name and an empty password.",
    )
}

/// The API key from `Authorization: Bearer <key>` or HTTP Basic (`<key>:`).
/// No header gives `None`; a header that is there but malformed is a 401.
/// The key is never echoed in errors.
pub fn api_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(malformed_authorization());
    }
    let text = value
        .to_str()
        .map_err(|_| malformed_authorization())?
        .trim();
    let (scheme, credentials) = text.split_once(' ').ok_or_else(malformed_authorization)?;
    let credentials = credentials.trim();
    let key = if scheme.eq_ignore_ascii_case("bearer") {
        credentials.to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .map_err(|_| malformed_authorization())?;
        let decoded = String::from_utf8(decoded).map_err(|_| malformed_authorization())?;
        let (user, password) = decoded.split_once(':').unwrap_or((decoded.as_str(), ""));
        if !password.is_empty() {
            return Err(malformed_authorization());
        }
        user.to_owned()
    } else {
        return Err(malformed_authorization());
    };
    let plausible = !key.is_empty()
        && key.len() <= API_KEY_MAX_CHARS
        && key.bytes().all(|b| b.is_ascii_graphic());
    if plausible {
        Ok(Some(key))
    } else {
        Err(malformed_authorization())
    }
}

/// Like [`api_key`], with a missing key a 401 as Stripe words it.
pub fn require_api_key(headers: &HeaderMap) -> Result<String, ApiError> {
    api_key(headers)?.ok_or_else(|| {
        ApiError::unauthorized(
            "You did not provide an API key. You need to provide your API key in the Authorization header, \
             using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
        )
    })
}

/// The `Idempotency-Key` header: 1–255 printable ASCII characters, else 400.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let invalid = |why: &str| {
        ApiError::invalid_request(
            None,
            None,
            format!(
                "Invalid Idempotency-Key header: {why}. Keys are 1 to {IDEMPOTENCY_KEY_MAX_CHARS} printable ASCII characters."
            ),
        )
    };
    let mut values = headers.get_all(IDEMPOTENCY_KEY_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(invalid("it was sent more than once"));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        return Err(invalid("it is empty"));
    }
    if bytes.len() > IDEMPOTENCY_KEY_MAX_CHARS {
        return Err(invalid("it is too long"));
    }
    if !bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(invalid(
            "it contains characters that are not printable ASCII",
        ));
    }
    // Checked above: printable ASCII is UTF-8.
    String::from_utf8(bytes.to_vec())
        .map(Some)
        .map_err(|_| invalid("it is not text"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn bearer_and_basic_give_the_key() {
        assert_eq!(
            api_key(&auth("Bearer sk_test_1")).unwrap().as_deref(),
            Some("sk_test_1")
        );
        assert_eq!(
            api_key(&auth("bearer  sk_test_1 ")).unwrap().as_deref(),
            Some("sk_test_1")
        );
        // base64("sk_test_1:")
        assert_eq!(
            api_key(&auth("Basic c2tfdGVzdF8xOg==")).unwrap().as_deref(),
            Some("sk_test_1")
        );
        assert_eq!(api_key(&HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn malformed_authorization_is_401() {
        // base64("sk_test_1:secret") has a password; base64(":sk") has no user.
        for bad in [
            "Bearer",
            "Bearer ",
            "Token sk_test_1",
            "Basic !!!",
            "Basic c2tfdGVzdF8xOnNlY3JldA==",
            "Basic OnNr",
            "sk_test_1",
        ] {
            let err = api_key(&auth(bad)).unwrap_err();
            assert_eq!(err.status, http::StatusCode::UNAUTHORIZED, "{bad}");
        }
    }
}
