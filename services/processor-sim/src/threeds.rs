//! The 3-D Secure challenge: a small HTML page per pending authorization with
//! two plain forms, and the form handler that settles the authorization.
//!
//! No JavaScript and no external assets, so it works in any browser and in
//! tests that only speak HTTP. Every value shown is HTML-escaped: the
//! reference comes from the caller.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::{Router, routing};
use bytes::Bytes;

use crate::app::SharedApp;
use crate::engine::Command;
use crate::model::{Authorization, AuthorizationStatus};

pub fn router() -> Router<SharedApp> {
    Router::new().route("/3ds/{id}", routing::get(challenge).post(answer))
}

/// Escapes text for HTML element content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} — Snakepay processor simulator</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 32rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.5; color: #111; }}
button {{ font: inherit; padding: 0.6rem 1.2rem; margin: 0.25rem 0; border: 2px solid #111; border-radius: 4px; background: #fff; cursor: pointer; }}
button:focus {{ outline: 3px solid #2563eb; outline-offset: 2px; }}
.complete {{ background: #14532d; color: #fff; border-color: #14532d; }}
dl {{ display: grid; grid-template-columns: max-content 1fr; gap: 0.25rem 1rem; }}
dt {{ font-weight: 600; }}
</style>
</head>
<body>
<main>
<h1>{title}</h1>
{body}
</main>
</body>
</html>
"#,
        title = escape(title),
    );
    let mut response = (status, Html(html)).into_response();
    // The page has no scripts, styles from elsewhere or frames.
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action *; frame-ancestors 'none'",
        ),
    );
    response
}

fn details(authorization: &Authorization) -> String {
    format!(
        "<dl>\n<dt>Amount</dt><dd>{amount} {currency} (minor units)</dd>\n<dt>Card</dt><dd>{brand} ending in {last4}</dd>\n<dt>Reference</dt><dd>{reference}</dd>\n</dl>",
        amount = authorization.amount,
        currency = escape(&authorization.currency.to_uppercase()),
        brand = escape(authorization.card_brand.as_deref().unwrap_or("card")),
        last4 = escape(authorization.card_last4.as_deref().unwrap_or("????")),
        reference = escape(&authorization.reference),
    )
}

fn not_found() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Unknown authentication",
        "<p>There is no authorization with this ID.</p>",
    )
}

async fn challenge(State(app): State<SharedApp>, Path(id): Path<String>) -> Response {
    let Some(authorization) = app.ledger.lock().await.authorization(&id).cloned() else {
        return not_found();
    };
    if authorization.status != AuthorizationStatus::RequiresAction {
        return done_page(&authorization);
    }
    let action = format!("/3ds/{}", escape(&authorization.id));
    let body = format!(
        r#"<p>Your bank asks you to confirm this payment.</p>
{details}
<form method="post" action="{action}">
<input type="hidden" name="result" value="complete">
<button type="submit" class="complete">Complete authentication</button>
</form>
<form method="post" action="{action}">
<input type="hidden" name="result" value="fail">
<button type="submit">Fail authentication</button>
</form>"#,
        details = details(&authorization),
    );
    page(StatusCode::OK, "Confirm your payment", &body)
}

fn done_page(authorization: &Authorization) -> Response {
    let outcome = match authorization.status {
        AuthorizationStatus::Approved | AuthorizationStatus::Captured => {
            "Authentication completed. The payment was authorized."
        }
        AuthorizationStatus::Declined => "Authentication failed. The payment was declined.",
        AuthorizationStatus::Voided => "This payment was cancelled.",
        AuthorizationStatus::RequiresAction => "Authentication is still pending.",
    };
    let body = format!(
        "<p role=\"status\">{outcome}</p>\n{details}\n<p>You can close this page.</p>",
        details = details(authorization),
    );
    page(StatusCode::OK, "Authentication finished", &body)
}

async fn answer(State(app): State<SharedApp>, Path(id): Path<String>, body: Bytes) -> Response {
    let result = form_urlencoded::parse(&body)
        .find(|(name, _)| name == "result")
        .map(|(_, value)| value.into_owned());
    let success = match result.as_deref() {
        Some("complete") => true,
        Some("fail") => false,
        _ => {
            return page(
                StatusCode::BAD_REQUEST,
                "Invalid answer",
                "<p>Choose “Complete authentication” or “Fail authentication”.</p>",
            );
        }
    };
    if app.ledger.lock().await.authorization(&id).is_none() {
        return not_found();
    }
    let command = Command::Authenticate {
        authorization_id: id.clone(),
        success,
    };
    if let Err(error) = app.commit(command, None, None).await {
        tracing::error!(error = format!("{error:#}"), authorization.id = %id, "cannot record the authentication");
        return page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "<p>The answer could not be recorded. Please try again.</p>",
        );
    }
    // Settled now, or earlier by another submission: either way, show the
    // authorization as it stands.
    let Some(authorization) = app.ledger.lock().await.authorization(&id).cloned() else {
        return not_found();
    };
    match authorization
        .return_url
        .as_deref()
        .and_then(|url| url::Url::parse(url).ok())
    {
        Some(mut url) => {
            url.query_pairs_mut()
                .append_pair("authorization", &authorization.id);
            (StatusCode::SEE_OTHER, [(header::LOCATION, url.to_string())]).into_response()
        }
        None => done_page(&authorization),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(
            super::escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
