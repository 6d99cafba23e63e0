//! `audit --reports`: the PolicyReports the background audit wrote, read back offline (a file or
//! `kubectl get policyreports -A -o yaml` on stdin) or from the cluster, as a table of what
//! violates which policy, or as JSON.

use std::io::Read as _;

use serde::Serialize;
use serde_json::Value;

use crate::policyreport::{self, PolicyReport, Summary};

/// One result row.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub policy: String,
    pub result: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReportsView {
    pub reports: usize,
    pub summary: Summary,
    pub rows: Vec<Row>,
    /// Reports that said they were cut at their cap.
    pub truncated: Vec<String>,
}

/// The PolicyReports among YAML/JSON documents (Lists expanded); other documents are skipped,
/// a report that does not decode is an error naming it.
pub fn parse(text: &str) -> Result<Vec<PolicyReport>, String> {
    let mut out = Vec::new();
    for doc in crate::documents::documents(text)? {
        let at = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let (kind, api_version) = (at("kind"), at("apiVersion"));
        if api_version != policyreport::API_VERSION
            || ![policyreport::NAMESPACED_KIND, policyreport::CLUSTER_KIND].contains(&kind.as_str())
        {
            continue;
        }
        let name = doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        out.push(
            serde_json::from_value(doc)
                .map_err(|e| format!("{kind} {name} does not decode: {e}"))?,
        );
    }
    Ok(out)
}

/// Rows and totals of `reports`, sorted by namespace, object and policy.
pub fn view(reports: &[PolicyReport]) -> ReportsView {
    let mut v = ReportsView {
        reports: reports.len(),
        ..Default::default()
    };
    for r in reports {
        let s = &r.summary;
        v.summary.pass += s.pass;
        v.summary.fail += s.fail;
        v.summary.warn += s.warn;
        v.summary.error += s.error;
        v.summary.skip += s.skip;
        let namespace = r.metadata.namespace.clone().unwrap_or_default();
        if r.metadata
            .annotations
            .keys()
            .any(|k| k.ends_with("results-truncated"))
        {
            v.truncated.push(format!("{namespace}/{}", r.metadata.name));
        }
        for result in &r.results {
            let resource = result.resources.first().cloned().unwrap_or_default();
            v.rows.push(Row {
                namespace: namespace.clone(),
                kind: resource.kind,
                name: resource.name,
                policy: result.policy.clone(),
                result: result.result.clone(),
                message: result.message.clone().unwrap_or_default(),
            });
        }
    }
    v.rows.sort_by(|a, b| {
        (&a.namespace, &a.kind, &a.name, &a.policy).cmp(&(
            &b.namespace,
            &b.kind,
            &b.name,
            &b.policy,
        ))
    });
    v
}

pub fn table(v: &ReportsView) -> String {
    let header = ["NAMESPACE", "KIND", "NAME", "POLICY", "RESULT", "MESSAGE"].map(String::from);
    let rows: Vec<[String; 6]> = v
        .rows
        .iter()
        .map(|r| {
            [
                if r.namespace.is_empty() {
                    "-".into()
                } else {
                    r.namespace.clone()
                },
                r.kind.clone(),
                r.name.clone(),
                r.policy.clone(),
                r.result.clone(),
                r.message.lines().next().unwrap_or_default().to_owned(),
            ]
        })
        .collect();
    let mut widths = [0usize; 6];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i == 5 {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push('\n');
    }
    let s = v.summary;
    out.push_str(&format!(
        "\n{} reports: {} pass, {} fail, {} warn, {} error, {} skip\n",
        v.reports, s.pass, s.fail, s.warn, s.error, s.skip
    ));
    for t in &v.truncated {
        out.push_str(&format!(
            "{t}: over its cap, some results left out (the summary counts all)\n"
        ));
    }
    out
}

/// Read `sources` (`-` is stdin).
pub fn read(sources: &[String]) -> Result<Vec<PolicyReport>, String> {
    let mut out = Vec::new();
    for source in sources {
        let text = if source == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| format!("cannot read stdin: {e}"))?;
            s
        } else {
            std::fs::read_to_string(source).map_err(|e| format!("cannot read {source}: {e}"))?
        };
        out.extend(parse(&text).map_err(|e| format!("{source}: {e}"))?);
    }
    Ok(out)
}

/// The reports from the cluster (kubeconfig or in-cluster configuration).
pub fn from_cluster() -> Result<Vec<PolicyReport>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        crate::certs::install_crypto_provider();
        let cluster = crate::cluster::KubeCluster::connect(Default::default())
            .await
            .map_err(|e| e.to_string())?;
        use crate::cluster::ClusterAccess as _;
        let values = cluster
            .list_policy_reports()
            .await
            .map_err(|e| e.to_string())?;
        values
            .into_iter()
            .map(|v| {
                serde_json::from_value(v)
                    .map_err(|e| format!("a PolicyReport does not decode: {e}"))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_list_output_reads_back() {
        let text = r#"
apiVersion: v1
kind: List
items:
- apiVersion: wgpolicyk8s.io/v1alpha2
  kind: PolicyReport
  metadata:
    name: sandbox-admission
    namespace: team-a
    annotations: {sandbox-admission.io/results-truncated: "1 of 2 results kept"}
  summary: {pass: 3, fail: 2, warn: 0, error: 0, skip: 0}
  results:
  - policy: no-privileged
    result: fail
    message: container c is privileged
    resources: [{apiVersion: agents.x-k8s.io/v1beta1, kind: Sandbox, name: bad, namespace: team-a}]
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: other}
"#;
        let reports = parse(text).unwrap();
        assert_eq!(reports.len(), 1);
        let v = view(&reports);
        assert_eq!(v.summary.fail, 2);
        assert_eq!(v.rows[0].name, "bad");
        assert_eq!(v.truncated, ["team-a/sandbox-admission"]);
        let t = table(&v);
        assert!(t.contains("no-privileged"), "{t}");
        assert!(t.contains("over its cap"), "{t}");
        assert!(parse("apiVersion: wgpolicyk8s.io/v1alpha2\nkind: PolicyReport\nmetadata: {name: x}\nresults: 5\n").is_err());
    }
}
