//! The plain-HTTP health port: `/healthz` (the process answers), `/readyz` (configuration,
//! policies and certificates are loaded, with detail) and `/metrics` (Prometheus).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::metrics::Metrics;
use crate::policy::PolicyStore;

/// Named readiness checks that components set as they come up (and may set back).
#[derive(Default)]
pub struct Readiness {
    checks: Mutex<BTreeMap<String, Result<String, String>>>,
}

impl Readiness {
    pub fn set(&self, name: &str, state: Result<String, String>) {
        if let Ok(mut checks) = self.checks.lock() {
            checks.insert(name.to_owned(), state);
        }
    }

    fn snapshot(&self) -> BTreeMap<String, Result<String, String>> {
        self.checks.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

#[derive(Clone)]
pub struct HealthState {
    pub readiness: Arc<Readiness>,
    pub policies: Arc<PolicyStore>,
    pub metrics: Arc<Metrics>,
}

pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(s): State<HealthState>) -> Response {
    let mut ready = true;
    let mut detail = serde_json::Map::new();
    for (name, state) in s.readiness.snapshot() {
        match state {
            Ok(msg) => detail.insert(name, json!({"ok": true, "detail": msg})),
            Err(msg) => {
                ready = false;
                detail.insert(name, json!({"ok": false, "detail": msg}))
            }
        };
    }
    let policies = s.policies.status();
    ready &= policies.loaded;
    detail.insert(
        "policies".into(),
        json!({
            "ok": policies.loaded,
            "detail": format!("{} policies serving", policies.policies),
            "lastReloadError": policies.last_error,
        }),
    );
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(json!({"ready": ready, "checks": detail}))).into_response()
}

async fn metrics(State(s): State<HealthState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}
