//! Route registration and the OpenAPI document, in one place: every route
//! is added through [`ApiRoutes`] with the [`Permission`] it needs, which
//! both enforces it (a per-route layer that runs before the handler reads
//! anything) and documents it, so the document cannot drift from what is
//! served or from who may call it.

use axum::Router;
use axum::extract::Request;
use axum::handler::Handler;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::Method;
use serde_json::{Map, Value, json};

use crate::auth::{Authed, Permission};
use crate::state::AppState;

/// One operation as documented.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    pub summary: &'static str,
    pub permission: Permission,
    /// Query parameters (GET) or JSON body fields (POST).
    pub params: &'static [&'static str],
}

#[derive(Default)]
pub struct ApiRoutes {
    router: Router<AppState>,
    endpoints: Vec<Endpoint>,
}

impl ApiRoutes {
    pub fn add<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        handler: H,
        permission: Permission,
        summary: &'static str,
        params: &'static [&'static str],
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let method_router = match method {
            Method::GET => axum::routing::get(handler),
            Method::DELETE => axum::routing::delete(handler),
            _ => axum::routing::post(handler),
        };
        let method_router = method_router.route_layer(axum::middleware::from_fn(
            move |request: Request, next: Next| enforce(permission, request, next),
        ));
        self.router = self.router.route(path, method_router);
        self.endpoints.push(Endpoint {
            method,
            path,
            summary,
            permission,
            params,
        });
        self
    }

    pub fn get<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        handler: H,
        permission: Permission,
        summary: &'static str,
        params: &'static [&'static str],
    ) -> Self {
        self.add(Method::GET, path, handler, permission, summary, params)
    }

    pub fn post<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        handler: H,
        permission: Permission,
        summary: &'static str,
        params: &'static [&'static str],
    ) -> Self {
        self.add(Method::POST, path, handler, permission, summary, params)
    }

    pub fn finish(self) -> (Router<AppState>, Vec<Endpoint>) {
        (self.router, self.endpoints)
    }
}

/// 401 without a valid token, 403 without the role or the multi-factor
/// login the route needs.
async fn enforce(permission: Permission, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let authed =
        match <Authed as axum::extract::FromRequestParts<()>>::from_request_parts(&mut parts, &())
            .await
        {
            Ok(authed) => authed,
            Err(error) => return error.into_response(),
        };
    if let Err(error) = authed.require(permission) {
        return error.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

/// The OpenAPI 3.1 document for `endpoints`.
pub fn document(endpoints: &[Endpoint]) -> Value {
    let mut paths = Map::new();
    for endpoint in endpoints {
        let entry = paths
            .entry(endpoint.path.to_owned())
            .or_insert_with(|| json!({}));
        if let Some(methods) = entry.as_object_mut() {
            methods.insert(
                endpoint.method.as_str().to_ascii_lowercase(),
                operation(endpoint),
            );
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Snakepay Internal API",
            "version": "1",
            "description": "The back office for staff and internal systems; never exposed publicly. Every request, allowed or denied, is written to the hash-chained audit trail. Each operation names the least role it needs (viewer < operator < admin) in x-snakepay-role, and whether the token must record a multi-factor login (amr contains mfa) in x-snakepay-mfa.",
        },
        "servers": [{ "url": "/" }],
        "security": [{ "staffToken": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "staffToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "An EdDSA-signed staff token (claims: iss, aud, sub, role, amr, iat, exp) whose key is in the configured JWKS. Locally: snakepay-admin token issue --role operator --subject alice --mfa.",
                },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": {
                        "type": "object",
                        "required": ["type", "message"],
                        "properties": {
                            "type": { "type": "string" },
                            "code": { "type": ["string", "null"] },
                            "message": { "type": "string" },
                            "param": { "type": ["string", "null"] },
                        },
                    }},
                },
            },
        },
    })
}

fn operation(endpoint: &Endpoint) -> Value {
    let mut parameters: Vec<Value> = path_parameters(endpoint.path)
        .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
        .collect();
    let mut operation = Map::new();
    let name: String = endpoint
        .path
        .trim_start_matches("/v1/")
        .replace(['{', '}'], "")
        .replace('/', "_");
    operation.insert(
        "operationId".to_owned(),
        Value::String(format!(
            "{}_{name}",
            endpoint.method.as_str().to_ascii_lowercase()
        )),
    );
    operation.insert("summary".to_owned(), Value::from(endpoint.summary));
    operation.insert(
        "x-snakepay-role".to_owned(),
        Value::from(endpoint.permission.min_role().as_str()),
    );
    operation.insert(
        "x-snakepay-mfa".to_owned(),
        Value::from(endpoint.permission.needs_mfa()),
    );
    operation.insert(
        "responses".to_owned(),
        json!({
            "200": { "description": "The object, or a list.", "content": { "application/json": { "schema": { "type": "object" } } } },
            "401": { "description": "No valid staff token (missing, expired, unknown key, bad signature).", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
            "403": { "description": "The token's role is too low, or a multi-factor login is required.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
            "default": { "description": "An error.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
        }),
    );
    if endpoint.method == Method::GET {
        parameters.extend(endpoint.params.iter().map(
            |name| json!({ "name": name, "in": "query", "required": false, "schema": { "type": "string" } }),
        ));
    } else if !endpoint.params.is_empty() {
        let properties: Map<String, Value> = endpoint
            .params
            .iter()
            .map(|name| ((*name).to_owned(), json!({})))
            .collect();
        operation.insert(
            "requestBody".to_owned(),
            json!({ "content": { "application/json": { "schema": {
                "type": "object", "properties": properties, "additionalProperties": false,
            }}}}),
        );
    }
    operation.insert("parameters".to_owned(), Value::Array(parameters));
    Value::Object(operation)
}

fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}
