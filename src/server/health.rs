//! The plain-HTTP health port: `/healthz` (the process answers), `/readyz` (configuration,
//! policies and certificates are loaded, with detail) and `/metrics` (Prometheus).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::cluster::ClusterAccess;
use crate::metrics::Metrics;
use crate::policy::PolicyStore;
pub use crate::readiness::Readiness;

#[derive(Clone)]
pub struct HealthState {
    pub readiness: Arc<Readiness>,
    pub policies: Arc<PolicyStore>,
    pub metrics: Arc<Metrics>,
    /// `None`: offline, which is a valid way to run (scheduling from configuration).
    pub cluster: Option<Arc<dyn ClusterAccess>>,
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
    let cluster = match &s.cluster {
        None => {
            Ok("offline: no cluster access, profiles' configured scheduling is used".to_string())
        }
        Some(c) => c.readiness(),
    };
    ready &= cluster.is_ok();
    detail.insert(
        "cluster".into(),
        match cluster {
            Ok(msg) => json!({"ok": true, "detail": msg}),
            Err(msg) => json!({"ok": false, "detail": msg}),
        },
    );
    let policies = s.policies.status();
    ready &= policies.loaded;
    detail.insert(
        "policies".into(),
        json!({
            "ok": policies.loaded,
            "detail": format!("{} policies serving", policies.policies),
            "lastReloadError": policies.last_error,
            "evaluator": policies.evaluator.name(),
            "evaluatorFallback": match &policies.evaluator {
                crate::policy::EvaluatorKind::Interpreter(why) => Some(why.as_str()),
                crate::policy::EvaluatorKind::Compiled => None,
            },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterError, Ensured, Lookup};
    use futures::future::BoxFuture;
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::api::node::v1::RuntimeClass;
    use tower::ServiceExt;

    /// A cluster whose watch caches never sync.
    struct Unsynced;

    impl ClusterAccess for Unsynced {
        fn runtime_class<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Lookup<RuntimeClass>> {
            Box::pin(async { Lookup::Unavailable("not synced".into()) })
        }
        fn namespace<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Lookup<Namespace>> {
            Box::pin(async { Lookup::Unavailable("not synced".into()) })
        }
        fn ensure_network_policy<'a>(
            &'a self,
            _: &'a NetworkPolicy,
        ) -> BoxFuture<'a, Result<Ensured, ClusterError>> {
            Box::pin(async { Err(ClusterError::Transport("not synced".into())) })
        }
        fn readiness(&self) -> Result<String, String> {
            Err("waiting for caches".into())
        }
    }

    async fn readyz(cluster: Option<Arc<dyn ClusterAccess>>) -> (StatusCode, serde_json::Value) {
        let state = HealthState {
            readiness: Arc::new(Readiness::default()),
            policies: Arc::new(PolicyStore::empty()),
            metrics: Arc::new(Metrics::new()),
            cluster,
        };
        let response = router(state)
            .oneshot(
                axum::http::Request::get("/readyz")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn unsynced_cluster_caches_keep_the_server_unready() {
        let (status, body) = readyz(Some(Arc::new(Unsynced))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["ready"], false);
        assert_eq!(body["checks"]["cluster"]["detail"], "waiting for caches");
        let (status, body) = readyz(None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body["checks"]["cluster"]["detail"]
                .as_str()
                .unwrap()
                .starts_with("offline")
        );
    }
}
