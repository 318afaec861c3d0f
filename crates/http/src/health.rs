//! `/livez` and `/readyz`.
//!
//! Liveness says only that the process answers (a restart is the remedy for
//! a failure). Readiness runs every registered dependency check concurrently,
//! each under its own timeout, and answers 503 when one is down so the load
//! balancer stops sending traffic; a degraded dependency (e.g. Redis, which
//! makes us slower, not broken) still answers 200.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, join_all};
use http::StatusCode;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    Ok,
    Degraded,
    Down,
}

/// One dependency's state, with a short reason when it is not `ok`.
/// Reasons are shown to anyone who can reach `/readyz`: no secrets, no hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    pub state: HealthState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Health {
    pub fn ok() -> Self {
        Health {
            state: HealthState::Ok,
            reason: None,
        }
    }

    pub fn degraded(reason: impl Into<String>) -> Self {
        Health {
            state: HealthState::Degraded,
            reason: Some(reason.into()),
        }
    }

    pub fn down(reason: impl Into<String>) -> Self {
        Health {
            state: HealthState::Down,
            reason: Some(reason.into()),
        }
    }
}

pub type CheckFn = Arc<dyn Fn() -> BoxFuture<'static, Health> + Send + Sync>;

/// A named dependency check for `/readyz`.
#[derive(Clone)]
pub struct ReadinessCheck {
    name: &'static str,
    check: CheckFn,
    timeout: Duration,
}

impl std::fmt::Debug for ReadinessCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadinessCheck")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ReadinessCheck {
    /// Shorter than a load balancer's health-check timeout, so `/readyz`
    /// itself answers in time even when a dependency hangs.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

    pub fn new<F, Fut>(name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Health> + Send + 'static,
    {
        ReadinessCheck {
            name,
            check: Arc::new(move || check().boxed()),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    async fn run(&self) -> Health {
        let future = AssertUnwindSafe((self.check)()).catch_unwind();
        match tokio::time::timeout(self.timeout, future).await {
            Ok(Ok(health)) => health,
            Ok(Err(_)) => Health::down("the check panicked"),
            Err(_) => Health::down(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }
}

/// One line of the `/readyz` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DependencyHealth {
    pub name: &'static str,
    #[serde(flatten)]
    pub health: Health,
}

/// The `/readyz` body: the worst state and every dependency's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadinessReport {
    pub status: HealthState,
    pub checks: Vec<DependencyHealth>,
}

impl ReadinessReport {
    pub fn is_ready(&self) -> bool {
        self.status != HealthState::Down
    }
}

/// Runs every check concurrently.
pub async fn readiness(checks: &[ReadinessCheck]) -> ReadinessReport {
    let results = join_all(checks.iter().map(|c| async move {
        DependencyHealth {
            name: c.name,
            health: c.run().await,
        }
    }))
    .await;
    let status = results
        .iter()
        .map(|d| d.health.state)
        .max()
        .unwrap_or(HealthState::Ok);
    for dependency in results.iter().filter(|d| d.health.state != HealthState::Ok) {
        tracing::warn!(
            dependency.name = dependency.name,
            dependency.state = ?dependency.health.state,
            dependency.reason = dependency.health.reason.as_deref().unwrap_or(""),
            "readiness check not ok"
        );
    }
    ReadinessReport {
        status,
        checks: results,
    }
}

/// `GET /livez` and `GET /readyz`, to merge into a service's router.
pub fn health_routes(checks: Vec<ReadinessCheck>) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(Arc::new(checks))
}

async fn livez() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn readyz(State(checks): State<Arc<Vec<ReadinessCheck>>>) -> Response {
    let report = readiness(&checks).await;
    let status = if report.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}
