//! The OpenAPI document of the API, generated from the routes themselves:
//! every route is registered through [`ApiRoutes`], which adds it to the
//! router and records its documentation in the same call, so the document
//! cannot list a route that is not served or miss one that is.

use axum::Router;
use axum::handler::Handler;
use http::Method;
use serde_json::{Map, Value, json};

use crate::state::AppState;

/// One operation as documented.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    pub summary: &'static str,
    /// Top-level parameters it accepts (nested ones under their parent:
    /// `payment_method_data` covers `payment_method_data[card][number]`).
    pub params: &'static [&'static str],
}

/// A router under construction, with its documentation.
pub struct ApiRoutes {
    router: Router<AppState>,
    endpoints: Vec<Endpoint>,
}

impl Default for ApiRoutes {
    fn default() -> Self {
        ApiRoutes {
            router: Router::new(),
            endpoints: Vec::new(),
        }
    }
}

impl ApiRoutes {
    fn add<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        handler: H,
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
        self.router = self.router.route(path, method_router);
        self.endpoints.push(Endpoint {
            method,
            path,
            summary,
            params,
        });
        self
    }

    pub fn get<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        handler: H,
        summary: &'static str,
        params: &'static [&'static str],
    ) -> Self {
        self.add(Method::GET, path, handler, summary, params)
    }

    pub fn post<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        handler: H,
        summary: &'static str,
        params: &'static [&'static str],
    ) -> Self {
        self.add(Method::POST, path, handler, summary, params)
    }

    pub fn delete<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        handler: H,
        summary: &'static str,
        params: &'static [&'static str],
    ) -> Self {
        self.add(Method::DELETE, path, handler, summary, params)
    }

    pub fn finish(self) -> (Router<AppState>, Vec<Endpoint>) {
        (self.router, self.endpoints)
    }
}

/// The OpenAPI 3.1 document for `endpoints`.
pub fn document(endpoints: &[Endpoint]) -> Value {
    let mut paths = Map::new();
    for endpoint in endpoints {
        let operation = operation(endpoint);
        let entry = paths
            .entry(endpoint.path.to_owned())
            .or_insert_with(|| json!({}));
        if let Some(methods) = entry.as_object_mut() {
            methods.insert(endpoint.method.as_str().to_ascii_lowercase(), operation);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Snakepay External API",
            "version": snakepay_http::API_VERSION,
            "description": "A Stripe-compatible subset: form-encoded bodies with bracket notation (JSON accepted), Stripe's error envelope and idempotency semantics.",
        },
        "servers": [{ "url": "/" }],
        "security": [{ "bearer": [] }, { "basic": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "A secret key (sk_test_… / sk_live_…) or, where allowed, a publishable key." },
                "basic": { "type": "http", "scheme": "basic", "description": "The key as user name, an empty password." },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": {
                        "type": "object",
                        "required": ["type", "message"],
                        "properties": {
                            "type": { "type": "string", "enum": ["invalid_request_error", "card_error", "idempotency_error", "api_error"] },
                            "code": { "type": ["string", "null"] },
                            "message": { "type": "string" },
                            "param": { "type": ["string", "null"] },
                            "decline_code": { "type": ["string", "null"] },
                            "payment_intent": { "type": ["object", "null"] },
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
    let properties: Map<String, Value> = endpoint
        .params
        .iter()
        .map(|name| {
            (
                (*name).to_owned(),
                json!({ "description": "See API.md; nested values use bracket notation." }),
            )
        })
        .collect();
    let mut operation = Map::new();
    operation.insert(
        "operationId".to_owned(),
        Value::String(operation_id(endpoint)),
    );
    operation.insert(
        "summary".to_owned(),
        Value::String(endpoint.summary.to_owned()),
    );
    operation.insert(
        "responses".to_owned(),
        json!({
            "200": { "description": "The object, or a list.", "content": { "application/json": { "schema": { "type": "object" } } } },
            "default": { "description": "An error.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
        }),
    );
    if endpoint.method == Method::GET {
        parameters.extend(endpoint.params.iter().map(
            |name| json!({ "name": name, "in": "query", "required": false, "style": "deepObject" }),
        ));
    } else if !endpoint.params.is_empty() {
        let schema =
            json!({ "type": "object", "properties": properties, "additionalProperties": false });
        operation.insert(
            "requestBody".to_owned(),
            json!({ "content": {
                "application/x-www-form-urlencoded": { "schema": schema.clone() },
                "application/json": { "schema": schema },
            }}),
        );
    }
    if endpoint.method == Method::POST {
        parameters.push(json!({ "name": "Idempotency-Key", "in": "header", "required": false, "schema": { "type": "string", "maxLength": 255 } }));
    }
    operation.insert("parameters".to_owned(), Value::Array(parameters));
    Value::Object(operation)
}

fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

fn operation_id(endpoint: &Endpoint) -> String {
    let name: String = endpoint
        .path
        .trim_start_matches("/v1/")
        .replace(['{', '}'], "")
        .replace('/', "_");
    format!("{}_{name}", endpoint.method.as_str().to_ascii_lowercase())
}
