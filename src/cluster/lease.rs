//! The API calls of the background audit: a `coordination.k8s.io` Lease so that one replica
//! audits at a time, and server-side apply of `wgpolicyk8s.io/v1alpha2` PolicyReports.
//!
//! kube-rs has no leader election of its own; this is the client-go protocol reduced to what
//! the audit needs: take the Lease when it is free or expired, renew it while holding it, and
//! let the API server's optimistic concurrency (409 Conflict on a stale resourceVersion) decide
//! between two replicas that try at the same moment.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::Value;

use super::{ClusterError, FIELD_MANAGER, LeaseRequest};

const REPORT_GROUP: &str = "wgpolicyk8s.io";
const REPORT_VERSION: &str = "v1alpha2";

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// Whether `spec` is held by someone other than `holder` and still fresh.
fn held_by_other(spec: &LeaseSpec, holder: &str) -> bool {
    let Some(current) = spec.holder_identity.as_deref().filter(|h| !h.is_empty()) else {
        return false;
    };
    if current == holder {
        return false;
    }
    match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(renewed), Some(seconds)) => {
            renewed.0.as_second() + i64::from(seconds) > now().0.as_second()
        }
        // A holder that never said how long it holds: treat as held, never steal it.
        _ => true,
    }
}

fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}

/// Take or renew the Lease. `Ok(false)`: another replica holds it, or won the race for it.
pub async fn try_lease(client: Client, req: &LeaseRequest) -> Result<bool, ClusterError> {
    let api = Api::<Lease>::namespaced(client, &req.namespace);
    let seconds = i32::try_from(req.duration.as_secs()).unwrap_or(i32::MAX);
    match api.get_opt(&req.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(req.name.clone()),
                    namespace: Some(req.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(req.holder.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e.into()),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if held_by_other(spec, &req.holder) {
                return Ok(false);
            }
            if spec.holder_identity.as_deref() != Some(req.holder.as_str()) {
                spec.holder_identity = Some(req.holder.clone());
                spec.acquire_time = Some(now());
                spec.lease_transitions =
                    Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            }
            spec.renew_time = Some(now());
            spec.lease_duration_seconds = Some(seconds);
            // `replace` carries the resourceVersion we read: a replica that got there first makes
            // this a 409, and we stay out.
            match api.replace(&req.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e.into()),
            }
        }
    }
}

fn report_resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(REPORT_GROUP, REPORT_VERSION, kind))
}

/// Server-side apply of one PolicyReport (or ClusterPolicyReport) as field manager
/// `sandbox-admission`, forced: the report is ours whole.
pub async fn apply_policy_report(client: Client, report: &Value) -> Result<(), ClusterError> {
    let str_at = |p: &str| report.pointer(p).and_then(Value::as_str).unwrap_or("");
    let (kind, name, namespace) = (
        str_at("/kind"),
        str_at("/metadata/name"),
        str_at("/metadata/namespace"),
    );
    if name.is_empty() || kind.is_empty() {
        return Err(ClusterError::Transport(
            "a PolicyReport to apply needs a kind and a name".into(),
        ));
    }
    let resource = report_resource(kind);
    let api: Api<DynamicObject> = if namespace.is_empty() {
        Api::all_with(client, &resource)
    } else {
        Api::namespaced_with(client, namespace, &resource)
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name, &params, &Patch::Apply(report)).await?;
    Ok(())
}

/// Every PolicyReport in the cluster that this product wrote.
pub async fn list_policy_reports(client: Client) -> Result<Vec<Value>, ClusterError> {
    let params = ListParams::default().labels("app.kubernetes.io/managed-by=sandbox-admission");
    let mut out = Vec::new();
    for kind in ["PolicyReport", "ClusterPolicyReport"] {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &report_resource(kind));
        for item in api.list(&params).await?.items {
            let mut value = serde_json::to_value(&item)
                .map_err(|e| ClusterError::Transport(format!("cannot encode {kind}: {e}")))?;
            if let Some(map) = value.as_object_mut() {
                map.entry("apiVersion")
                    .or_insert_with(|| Value::String(format!("{REPORT_GROUP}/{REPORT_VERSION}")));
                map.entry("kind")
                    .or_insert_with(|| Value::String(kind.into()));
            }
            out.push(value);
        }
    }
    Ok(out)
}
