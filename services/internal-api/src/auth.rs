//! Staff authentication, roles and the audit of every request.
//!
//! [`authenticate_and_audit`] wraps every API route: it verifies the bearer
//! token (once), hands the result to the handler through the request's
//! extensions, runs the handler, and appends one audit row — who, what
//! (method and route template), on what (the path), the outcome (from the
//! status: `allowed`, `denied` for 403, `unauthenticated` for 401,
//! `rejected` for other 4xx, `failed` for 5xx), the client's address, and
//! details the handler attached ([`AuditNote`]).
//!
//! Handlers take [`Authed`] and call [`Authed::require`] with the
//! [`Permission`] they need: 401 without a valid token, 403 when the role
//! is too low or the operation needs a multi-factor login that the token
//! does not record.
//!
//! When the audit row cannot be written, reads answer 503 (nothing is shown
//! unaudited); a change has already committed by then, so its answer stands
//! and the failure is logged as an error.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use snakepay_http::{ApiError, RequestIdExt};
use snakepay_store::audit::{self, Actor, NewEntry};

use crate::state::AppState;
use crate::tokens::{Role, Staff, TokenError};

/// What an operation needs. The role order is viewer < operator < admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Reading merchants, payments, the ledger, refunds and reconciliation.
    Read,
    /// Creating and updating merchants, KYC decisions.
    ManageMerchants,
    /// Listing, creating, rolling and revoking API keys (multi-factor).
    ManageKeys,
    /// Requesting and approving refunds.
    Refund,
    /// Dead letters: their content may include card data (multi-factor).
    DeadLetters,
    /// Reading and verifying the audit trail.
    Audit,
}

impl Permission {
    pub fn min_role(self) -> Role {
        match self {
            Permission::Read => Role::Viewer,
            Permission::ManageMerchants
            | Permission::ManageKeys
            | Permission::Refund
            | Permission::DeadLetters => Role::Operator,
            Permission::Audit => Role::Admin,
        }
    }

    pub fn needs_mfa(self) -> bool {
        matches!(self, Permission::ManageKeys | Permission::DeadLetters)
    }
}

/// The verified staff member behind a request.
#[derive(Debug, Clone)]
pub struct Authed(pub Staff);

impl Authed {
    pub fn require(&self, permission: Permission) -> Result<&Staff, ApiError> {
        if self.0.role < permission.min_role() {
            return Err(ApiError::forbidden(format!(
                "This operation needs the {} role; your token has {}.",
                permission.min_role().as_str(),
                self.0.role.as_str()
            )));
        }
        if permission.needs_mfa() && !self.0.mfa {
            return Err(ApiError::forbidden(
                "This operation needs a multi-factor login (the token's amr must include mfa).",
            ));
        }
        Ok(&self.0)
    }
}

/// The token check's result, put in the request extensions by the
/// middleware.
#[derive(Clone)]
struct TokenCheck(Result<Staff, String>);

impl<S: Send + Sync> FromRequestParts<S> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        match parts.extensions.get::<TokenCheck>() {
            Some(TokenCheck(Ok(staff))) => Ok(Authed(staff.clone())),
            _ => Err(unauthorized()),
        }
    }
}

fn unauthorized() -> ApiError {
    ApiError::unauthorized(
        "A valid staff token is required: Authorization: Bearer <token> (see `snakepay-admin token issue`).",
    )
}

/// Details a handler adds to its request's audit row (put it in the
/// response's extensions, e.g. with [`noted`]).
#[derive(Debug, Clone)]
pub struct AuditNote(pub Value);

/// A response with an audit note attached.
pub fn noted(response: impl IntoResponse, note: Value) -> Response {
    let mut response = response.into_response();
    response.extensions_mut().insert(AuditNote(note));
    response
}

/// The route template a request matched, carried out on the response.
#[derive(Debug, Clone)]
struct RouteTemplate(String);

/// Inner layer (`route_layer`): records which route matched.
pub async fn remember_route(
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let template = matched.map(|m| m.as_str().to_owned());
    let mut response = next.run(request).await;
    if let Some(template) = template {
        response.extensions_mut().insert(RouteTemplate(template));
    }
    response
}

fn bearer(request: &Request) -> Result<&str, TokenError> {
    let value = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .ok_or(TokenError::Missing)?
        .to_str()
        .map_err(|_| TokenError::Invalid("unreadable header".to_owned()))?;
    let (scheme, token) = value.split_once(' ').ok_or(TokenError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(TokenError::Missing);
    }
    Ok(token.trim())
}

fn outcome(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=399 => "allowed",
        401 => "unauthenticated",
        403 => "denied",
        400..=499 => "rejected",
        _ => "failed",
    }
}

/// Outer layer: token check, then the handler, then the audit row.
pub async fn authenticate_and_audit(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let checked = match bearer(&request) {
        Ok(token) => state.verifier.verify(token).await,
        Err(error) => Err(error),
    };
    if let Err(TokenError::KeysUnavailable(reason)) = &checked {
        tracing::error!(auth.error = %reason, "staff token keys unavailable");
    }
    let checked = TokenCheck(checked.map_err(|e| e.to_string()));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let request_id = request
        .extensions()
        .get::<RequestIdExt>()
        .map(|id| id.0.clone());
    let origin = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string());
    request.extensions_mut().insert(checked.clone());

    let response = next.run(request).await;

    let actor = match &checked.0 {
        Ok(staff) => Actor {
            subject: staff.subject.clone(),
            role: staff.role.as_str().to_owned(),
        },
        Err(_) => Actor {
            subject: "anonymous".to_owned(),
            role: "none".to_owned(),
        },
    };
    let template = response
        .extensions()
        .get::<RouteTemplate>()
        .map_or("(no route)", |t| t.0.as_str());
    let action = format!("{method} {template}");
    let mut details = json!({
        "status": response.status().as_u16(),
        "request_id": request_id,
    });
    if let (Err(reason), Some(fields)) = (&checked.0, details.as_object_mut()) {
        fields.insert("token".to_owned(), Value::from(reason.clone()));
    }
    if let (Some(AuditNote(note)), Some(fields)) = (
        response.extensions().get::<AuditNote>(),
        details.as_object_mut(),
    ) {
        fields.insert("note".to_owned(), note.clone());
    }
    let appended = audit::append(
        state.store.control(),
        &NewEntry {
            actor: &actor,
            action: &action,
            resource: Some(&path),
            outcome: outcome(response.status()),
            origin: origin.as_deref(),
            details: &details,
        },
    )
    .await;
    match appended {
        Ok(_) => response,
        Err(error) if method == Method::GET || method == Method::HEAD => {
            tracing::error!(error.chain = %format!("{error:#}"), audit.action = %action, "audit row not written; read refused");
            ApiError::unavailable("The audit trail is unavailable; try again shortly.")
                .into_response()
        }
        Err(error) => {
            tracing::error!(error.chain = %format!("{error:#}"), audit.action = %action, audit.actor = %actor.subject, "audit row not written for a change that committed");
            response
        }
    }
}
