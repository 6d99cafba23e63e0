//! `serve --manage-certs`: the server keeps its own CA and serving certificate in a Secret,
//! renews them before expiry, writes them into its cert directory (the reload watcher serves them
//! without a restart) and patches the CA bundle into both webhook configurations.
//!
//! Every replica runs the same reconcile; they agree through the API server: creating a Secret
//! that exists, or replacing one with a stale resourceVersion, is a conflict, after which the
//! replica re-reads and adopts what the other one wrote.

pub mod files;
pub mod kube_api;
pub mod plan;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinHandle;

use plan::{BUNDLE, Lifetimes, NEXT_CA_CERT, SecretData, TLS_CERT, TLS_KEY};

/// The two webhook configuration kinds whose caBundle is managed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookKind {
    Mutating,
    Validating,
}

impl WebhookKind {
    pub const ALL: [WebhookKind; 2] = [WebhookKind::Mutating, WebhookKind::Validating];
}

impl std::fmt::Display for WebhookKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WebhookKind::Mutating => "MutatingWebhookConfiguration",
            WebhookKind::Validating => "ValidatingWebhookConfiguration",
        })
    }
}

/// A Secret as read: its data and the resourceVersion an update must name.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSecret {
    pub data: SecretData,
    pub resource_version: Option<String>,
}

/// One webhook of a configuration and the CA bundle it trusts now.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookCa {
    pub name: String,
    pub ca_bundle: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 409: the object exists (create) or changed since it was read (update).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("{0}")]
    Other(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error("Kubernetes API: {0}")]
    Api(#[from] ApiError),
    #[error(transparent)]
    Cert(#[from] super::CertError),
    #[error("the Secret {0} kept changing under us; will retry")]
    Contended(String),
}

/// The few API calls certificate management makes: a thin seam so the logic is tested against
/// a fake and the kube implementation against recorded API server responses.
pub trait CertApi: Send + Sync {
    fn get_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<StoredSecret>, ApiError>> + Send;
    fn create_secret(
        &self,
        namespace: &str,
        name: &str,
        data: &SecretData,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// Replace the data, failing with [`ApiError::Conflict`] when `resource_version` is stale.
    fn replace_secret(
        &self,
        namespace: &str,
        name: &str,
        data: &SecretData,
        resource_version: Option<&str>,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// The webhooks of a configuration; `None` when it does not exist.
    fn get_webhooks(
        &self,
        kind: WebhookKind,
        name: &str,
    ) -> impl Future<Output = Result<Option<Vec<WebhookCa>>, ApiError>> + Send;
    /// Set `ca_bundle` on each named webhook of the configuration.
    fn patch_ca_bundle(
        &self,
        kind: WebhookKind,
        name: &str,
        webhooks: &[String],
        ca_bundle: &[u8],
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
}

#[derive(Debug, Clone)]
pub struct ManageSettings {
    pub namespace: String,
    pub secret: String,
    /// Name of both webhook configurations.
    pub webhook_configuration: String,
    /// DNS names the serving certificate covers.
    pub names: Vec<String>,
    pub cert_dir: PathBuf,
    pub lifetimes: Lifetimes,
    /// Time between reconciles.
    pub interval: Duration,
}

/// What one reconcile did.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub secret_changes: Vec<String>,
    pub patched: Vec<WebhookKind>,
    pub files_written: bool,
}

/// Bring the Secret, the webhooks' caBundle and the cert directory up to date.
pub async fn reconcile<A: CertApi>(api: &A, s: &ManageSettings) -> Result<Outcome, ManageError> {
    let mut outcome = Outcome::default();
    let mut data = None;
    let mut hooks = Vec::new();
    for _attempt in 0..5 {
        let existing = api.get_secret(&s.namespace, &s.secret).await?;
        hooks.clear();
        for kind in WebhookKind::ALL {
            match api.get_webhooks(kind, &s.webhook_configuration).await? {
                Some(list) => hooks.push((kind, list)),
                None => tracing::warn!(%kind, name = %s.webhook_configuration,
                    "webhook configuration not found: its caBundle is not managed"),
            }
        }
        let bundles: Vec<Vec<u8>> = hooks
            .iter()
            .flat_map(|(_, list)| list.iter().map(|w| w.ca_bundle.clone()))
            .collect();
        let next_trusted = existing
            .as_ref()
            .and_then(|e| e.data.get(NEXT_CA_CERT))
            .is_some_and(|next| !bundles.is_empty() && plan::all_trust(&bundles, next));
        let now = chrono::Utc::now().timestamp();
        let (wanted, changes) = plan::plan(
            existing.as_ref().map(|e| &e.data),
            &s.names,
            next_trusted,
            now,
            &s.lifetimes,
        )?;
        let written = match &existing {
            None => api.create_secret(&s.namespace, &s.secret, &wanted).await,
            Some(e) if e.data != wanted => {
                let rv = e.resource_version.as_deref();
                api.replace_secret(&s.namespace, &s.secret, &wanted, rv)
                    .await
            }
            Some(_) => Ok(()),
        };
        match written {
            Ok(()) => {
                outcome.secret_changes = changes;
                data = Some(wanted);
                break;
            }
            Err(ApiError::Conflict(why)) => {
                tracing::info!(secret = %s.secret, %why, "another replica wrote the Secret; re-reading");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let Some(data) = data else {
        return Err(ManageError::Contended(s.secret.clone()));
    };
    let empty = Vec::new();
    let bundle = data.get(BUNDLE).unwrap_or(&empty);
    for (kind, list) in &hooks {
        if list.iter().any(|w| &w.ca_bundle != bundle) {
            let names: Vec<String> = list.iter().map(|w| w.name.clone()).collect();
            api.patch_ca_bundle(*kind, &s.webhook_configuration, &names, bundle)
                .await?;
            outcome.patched.push(*kind);
        }
    }
    let file = |key: &str| data.get(key).map(Vec::as_slice).unwrap_or_default();
    outcome.files_written = files::write_atomic(
        &s.cert_dir,
        &[
            (TLS_KEY, file(TLS_KEY)),
            (TLS_CERT, file(TLS_CERT)),
            (super::CA_FILE, bundle.as_slice()),
        ],
    )?;
    Ok(outcome)
}

fn log(outcome: &Outcome) {
    if outcome.secret_changes.is_empty() && outcome.patched.is_empty() && !outcome.files_written {
        tracing::debug!("certificates up to date");
        return;
    }
    let patched: Vec<String> = outcome.patched.iter().map(ToString::to_string).collect();
    tracing::info!(
        changes = ?outcome.secret_changes,
        patched = ?patched,
        files_written = outcome.files_written,
        "certificates reconciled"
    );
}

/// Reconcile once (the server needs its files before it starts), then keep reconciling every
/// `interval`; a failed round is retried sooner. The task runs until the runtime stops.
pub async fn start<A: CertApi + 'static>(
    api: A,
    settings: ManageSettings,
) -> Result<JoinHandle<()>, ManageError> {
    log(&reconcile(&api, &settings).await?);
    Ok(tokio::spawn(async move {
        let retry = settings.interval.min(Duration::from_secs(60));
        let mut wait = settings.interval;
        loop {
            tokio::time::sleep(wait).await;
            wait = match reconcile(&api, &settings).await {
                Ok(outcome) => {
                    log(&outcome);
                    settings.interval
                }
                Err(e) => {
                    tracing::error!(error = %e, "certificate reconcile failed; the current certificate keeps serving");
                    retry
                }
            };
        }
    }))
}

/// The Secret `--manage-certs` uses unless told otherwise (the one the manifests mount).
pub const DEFAULT_SECRET: &str = "sandbox-admission-tls";

/// The webhook's Service as certificate management needs it (from the configuration's
/// `service:`, given by the caller so that this module does not read the configuration).
#[derive(Debug, Clone)]
pub struct ServiceNames {
    pub namespace: String,
    /// Also the name of the webhook configurations whose `caBundle` is kept current.
    pub name: String,
    /// What the serving certificate must name.
    pub dns_names: Vec<String>,
}

/// `serve --manage-certs`: connect with the in-cluster configuration (or KUBECONFIG) and manage
/// the certificates of `service`, writing them where `tls` reads them.
pub async fn start_in_cluster(
    service: ServiceNames,
    tls: &crate::certs::TlsSource,
    secret: Option<String>,
) -> anyhow::Result<JoinHandle<()>> {
    use anyhow::Context;
    let crate::certs::TlsSource::Files(files) = tls else {
        anyhow::bail!("--manage-certs needs a certificate directory (--cert-dir)");
    };
    let cert_dir = files
        .cert
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    super::install_crypto_provider();
    let client = ::kube::Client::try_default().await.context(
        "--manage-certs needs cluster access (an in-cluster service account or KUBECONFIG)",
    )?;
    let settings = ManageSettings {
        namespace: service.namespace,
        secret: secret.unwrap_or_else(|| DEFAULT_SECRET.to_owned()),
        webhook_configuration: service.name,
        names: service.dns_names,
        cert_dir,
        lifetimes: Lifetimes::default(),
        interval: Duration::from_secs(3600),
    };
    tracing::info!(secret = %settings.secret, namespace = %settings.namespace, dir = %settings.cert_dir.display(), "managing the serving certificate");
    start(kube_api::KubeCertApi::new(client), settings)
        .await
        .context("certificate management failed")
}
