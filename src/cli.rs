//! Command line: `serve` and the tools, each with an example in its `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine as _;
use clap::{Args, Parser, Subcommand};

use crate::certs::{self, TlsFiles};
use crate::config::{Config, LogFormat, ServiceRef};
use crate::server::{self, ServeSettings, TlsSource};

#[derive(Parser)]
#[command(
    name = "sandbox-admission",
    version,
    about = "Admission webhook and Rego policy enforcer for Kubernetes Agent Sandbox"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve /mutate and /validate over HTTPS, health and metrics over HTTP.
    #[command(
        after_help = "Example:\n  sandbox-admission serve\n  sandbox-admission serve --cert-dir /tls --policies /policies --log-format json"
    )]
    Serve(ServeArgs),
    /// Write a CA and a serving certificate for the webhook Service, and print the caBundle.
    #[command(
        after_help = "Example:\n  sandbox-admission certs --service sandbox-admission --namespace sandbox-admission --out certs/"
    )]
    Certs(CertsArgs),
    /// Policy author tools: run Rego unit tests, verify gator suites, check a policy directory.
    #[command(subcommand)]
    Policy(crate::policy::cli::PolicyCommand),
    /// Render the NetworkPolicy objects of the configured network profiles for a namespace (YAML).
    NetworkPolicies(crate::network_policies::NetworkPoliciesArgs),
    /// Query and summarise the decision log (who was denied, by which policy, how often), or the
    /// background audit's PolicyReports (--reports).
    #[command(after_help = crate::audit::cli::AFTER_HELP)]
    Audit(crate::audit::cli::AuditArgs),
    /// Run an object or AdmissionReview through mutation and validation offline, as the server would.
    #[command(after_help = crate::review::AFTER_HELP)]
    Review(crate::review::ReviewArgs),
    /// Judge a tree of manifests as /validate would (GitOps CI), with data.inventory built from
    /// them: a table, JSON or PolicyReports, and an exit code.
    #[command(after_help = crate::scan::AFTER_HELP)]
    Scan(crate::scan::ScanArgs),
    /// Time each policy (alone and as the whole set) on objects or reviews: what a policy costs.
    Bench(crate::bench::BenchArgs),
    /// Re-judge recorded decisions with a candidate policy set: what would flip if it were deployed.
    #[command(after_help = crate::replay::AFTER_HELP)]
    Replay(crate::replay::ReplayArgs),
    /// Why a /validate decision was made: each policy's rule, file:line, expressions and values.
    #[command(after_help = crate::explain::AFTER_HELP)]
    Explain(crate::explain::ExplainArgs),
}

#[derive(Args, Default)]
pub struct ServeArgs {
    /// HTTPS address for /mutate and /validate [default: 0.0.0.0:8443]
    #[arg(long, env = "SANDBOX_ADMISSION_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Plain-HTTP address for /healthz, /readyz, /metrics [default: 0.0.0.0:9090]
    #[arg(long, env = "SANDBOX_ADMISSION_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
    /// Directory with ca.crt, tls.crt, tls.key (a TLS Secret's layout). Without tls.crt/tls.key
    /// there, a self-signed pair is generated into it [default: certs/]
    #[arg(long, env = "SANDBOX_ADMISSION_CERT_DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Serving certificate (PEM); needs --tls-key
    #[arg(long, env = "SANDBOX_ADMISSION_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Serving key (PEM); needs --tls-cert
    #[arg(long, env = "SANDBOX_ADMISSION_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (the API server's client certificate)
    #[arg(long, env = "SANDBOX_ADMISSION_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// Configuration file (YAML) [default: embedded]
    #[arg(long, env = "SANDBOX_ADMISSION_CONFIG")]
    pub config: Option<PathBuf>,
    /// Policy directory, watched for changes [default: the embedded policies/]
    #[arg(long, env = "SANDBOX_ADMISSION_POLICIES")]
    pub policies: Option<PathBuf>,
    /// A candidate policy directory judged on live /validate traffic after each answer is sent
    /// (never changing it); disagreements go to the decision log and metrics. Hot-reloaded.
    #[arg(long, env = "SANDBOX_ADMISSION_SHADOW_POLICIES", value_name = "DIR")]
    pub shadow_policies: Option<PathBuf>,
    /// Serve the read-only admin page on this plain-HTTP address (`--admin-listen` alone:
    /// 127.0.0.1:9091). A non-loopback address needs --admin-token-file
    #[arg(long, env = "SANDBOX_ADMISSION_ADMIN_LISTEN", value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:9091")]
    pub admin_listen: Option<SocketAddr>,
    /// File with the bearer token the admin page requires (`Authorization: Bearer TOKEN`)
    #[arg(long, env = "SANDBOX_ADMISSION_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Log format for the operational log on stderr
    #[arg(long, env = "SANDBOX_ADMISSION_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Policy profile: `default` (isolation denies, hygiene warns) or `strict` (upstream's
    /// ValidatingAdmissionPolicy example, verdict for verdict) [default: default]
    #[arg(long, env = "SANDBOX_ADMISSION_PROFILE")]
    pub profile: Option<String>,
    /// Judge Sandboxes and templates as the pod they become (`effective`) or as written
    /// [default: effective; as-written under --profile strict]
    #[arg(long, env = "SANDBOX_ADMISSION_JUDGE", value_enum)]
    pub judge: Option<crate::config::Judge>,
    /// Never talk to a Kubernetes API server, even when a kubeconfig or in-cluster config exists
    #[arg(long, env = "SANDBOX_ADMISSION_NO_CLUSTER")]
    pub no_cluster: bool,
    /// Also append decision records to this file, rotated by size into FILE.1.gz, FILE.2.gz, ...
    #[arg(long, env = "SANDBOX_ADMISSION_DECISION_LOG", value_name = "FILE")]
    pub decision_log: Option<PathBuf>,
    /// Do not write decision records to stdout
    #[arg(long)]
    pub no_decision_log_stdout: bool,
    /// Include object bodies in decision records (off by default: objects can hold secrets;
    /// Secret data is redacted regardless)
    #[arg(long)]
    pub log_objects: bool,
    /// Create a Kubernetes Event for each denial and warning (needs cluster access)
    #[arg(long, env = "SANDBOX_ADMISSION_EVENTS")]
    pub events: bool,
    /// In a cluster: keep the CA and serving certificate in a Secret in the Service's namespace,
    /// renew them, write them into the cert dir and patch the caBundle of the webhook
    /// configurations named like the Service
    #[arg(
        long,
        env = "SANDBOX_ADMISSION_MANAGE_CERTS",
        conflicts_with_all = ["tls_cert", "no_cluster"]
    )]
    pub manage_certs: bool,
    /// Audit existing Sandboxes, templates, warm pools, claims and Sandbox pods into
    /// PolicyReports, periodically and after every policy reload (needs cluster access and
    /// manifests/audit/)
    #[arg(long, env = "SANDBOX_ADMISSION_AUDIT")]
    pub audit: bool,
    /// Seconds between background audit rounds [default: 300]
    #[arg(
        long,
        env = "SANDBOX_ADMISSION_AUDIT_INTERVAL_SECONDS",
        value_name = "SECONDS"
    )]
    pub audit_interval_seconds: Option<u64>,
    /// Secret that --manage-certs keeps the certificates in [default: sandbox-admission-tls]
    #[arg(long, env = "SANDBOX_ADMISSION_CERT_SECRET", requires = "manage_certs")]
    pub cert_secret: Option<String>,
}

#[derive(Args)]
pub struct CertsArgs {
    /// Service name the API server calls
    #[arg(long, default_value = "sandbox-admission")]
    pub service: String,
    /// Namespace of that Service
    #[arg(long, default_value = "sandbox-admission")]
    pub namespace: String,
    /// Output directory (ca.crt, ca.key, tls.crt, tls.key)
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// Validity in days
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
    /// Sign with this existing CA certificate instead of making a new CA
    #[arg(long, requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// Key of --ca-cert
    #[arg(long, requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    /// Also write the caBundle as a kustomize patch for the webhook configurations of manifests/
    #[arg(long)]
    pub kustomize_patch: Option<PathBuf>,
}

/// Load the configuration with flags and environment on top.
pub fn serve_settings(args: ServeArgs) -> anyhow::Result<ServeSettings> {
    let manage_certs = args.manage_certs;
    let (mut config, origin) = match &args.config {
        Some(path) => (Config::load(path)?, path.display().to_string()),
        None => (
            Config::embedded()?,
            "embedded default configuration".to_string(),
        ),
    };
    if let Some(a) = args.listen {
        config.listen = a;
    }
    if let Some(a) = args.health_listen {
        config.health_listen = a;
    }
    if let Some(f) = args.log_format {
        config.log_format = f;
    }
    if let Some(p) = args.profile {
        config.policy.profile = p;
    }
    if args.judge.is_some() {
        config.validation.judge = args.judge;
    }
    config.policy.validate().map_err(anyhow::Error::msg)?;
    if args.decision_log.is_some() {
        config.decision_log.file = args.decision_log;
    }
    if args.no_decision_log_stdout {
        config.decision_log.stdout = false;
    }
    if args.log_objects {
        config.decision_log.include_objects = true;
    }
    if args.events {
        config.events.enabled = true;
    }
    if args.shadow_policies.is_some() {
        config.shadow.policies = args.shadow_policies;
    }
    if args.admin_listen.is_some() {
        config.admin.listen = args.admin_listen;
    }
    if args.admin_token_file.is_some() {
        config.admin.token_file = args.admin_token_file;
    }
    if args.audit {
        config.audit.enabled = true;
    }
    if let Some(seconds) = args.audit_interval_seconds {
        config.audit.interval_seconds = seconds;
    }
    config
        .audit
        .validate()
        .map_err(|e| anyhow::anyhow!("--audit-interval-seconds: {e}"))?;
    let tls_cfg = &mut config.tls;
    if args.cert_dir.is_some() {
        tls_cfg.cert_dir = args.cert_dir;
    }
    if args.tls_cert.is_some() {
        tls_cfg.cert_file = args.tls_cert;
        tls_cfg.key_file = args.tls_key;
    }
    if args.client_ca.is_some() {
        tls_cfg.client_ca_file = args.client_ca;
    }
    let tls = match (&tls_cfg.cert_file, &tls_cfg.key_file) {
        (Some(cert), Some(key)) => TlsSource::Files(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: tls_cfg.client_ca_file.clone(),
        }),
        (Some(_), None) | (None, Some(_)) => {
            anyhow::bail!("tls.certFile and tls.keyFile must be given together")
        }
        (None, None) => {
            let dir = tls_cfg
                .cert_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("certs"));
            let (cert, key) = (dir.join(certs::CERT_FILE), dir.join(certs::KEY_FILE));
            // --manage-certs writes the pair there before the server starts. A mounted Secret
            // (both files, no CA key of ours) is used as is; otherwise the directory is ours to
            // fill with a self-signed pair.
            let mounted = cert.exists() && key.exists() && !dir.join(certs::CA_KEY_FILE).exists();
            if manage_certs || mounted {
                TlsSource::Files(TlsFiles {
                    cert,
                    key,
                    client_ca: tls_cfg.client_ca_file.clone(),
                })
            } else if tls_cfg.client_ca_file.is_some() {
                anyhow::bail!(
                    "--client-ca needs a serving certificate (--tls-cert/--tls-key or a cert dir)"
                )
            } else {
                TlsSource::SelfSigned { dir }
            }
        }
    };
    Ok(ServeSettings {
        config,
        config_origin: origin,
        tls,
        policies_dir: args.policies,
        decision_log: true,
        cluster: None,
    })
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("SANDBOX_ADMISSION_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let use_cluster = !args.no_cluster;
    let (manage, secret) = (args.manage_certs, args.cert_secret.clone());
    let mut settings = serve_settings(args)?;
    init_logging(settings.config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(crate::policy::EVALUATION_STACK_BYTES)
        .build()?;
    runtime.block_on(async move {
        if use_cluster {
            settings.cluster =
                crate::cluster::connect_or_offline(crate::background::watches(&settings.config))
                    .await;
        } else {
            tracing::info!("--no-cluster: runtime scheduling and overhead come from configuration");
        }
        // Kept alive while serving: it renews the certificate in the background.
        let _renewer = if manage {
            {
                let service = certs::manage::ServiceNames {
                    namespace: settings.config.service.namespace.clone(),
                    name: settings.config.service.name.clone(),
                    dns_names: settings.config.service.dns_names(),
                };
                Some(certs::manage::start_in_cluster(service, &settings.tls, secret).await?)
            }
        } else {
            None
        };
        server::run(settings).await
    })
}

fn run_certs(args: CertsArgs) -> anyhow::Result<()> {
    let service = ServiceRef {
        name: args.service,
        namespace: args.namespace,
    };
    let names = service.dns_names();
    let bundle = match (&args.ca_cert, &args.ca_key) {
        (Some(cert), Some(key)) => {
            let ca = certs::PemPair {
                cert: String::from_utf8(certs::read(cert)?)?,
                key: String::from_utf8(certs::read(key)?)?,
            };
            let serving = certs::generate_serving(&ca, &names, args.days)?;
            certs::Bundle { ca, serving }
        }
        _ => certs::generate_bundle(&names, args.days)?,
    };
    bundle.write(&args.out, args.ca_cert.is_none())?;
    eprintln!(
        "wrote {}/{{ca.crt,tls.crt,tls.key}} for {} (valid {} days)",
        args.out.display(),
        names.join(", "),
        args.days
    );
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(bundle.ca.cert.as_bytes());
    if let Some(path) = &args.kustomize_patch {
        let patch = certs::patch::ca_bundle_patch(&service.name, &ca_bundle)
            .map_err(|e| anyhow::anyhow!("cannot render the kustomize patch: {e}"))?;
        std::fs::write(path, patch)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote the caBundle patch {}", path.display());
    }
    println!("{ca_bundle}");
    Ok(())
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => report(run_serve(args)),
        Command::Certs(args) => report(run_certs(args)),
        Command::Policy(cmd) => crate::policy::cli::run(cmd),
        Command::NetworkPolicies(args) => crate::network_policies::run(&args),
        Command::Audit(args) => crate::audit::cli::run(args),
        Command::Review(args) => crate::review::run(args),
        Command::Bench(args) => crate::bench::run(args),
        Command::Replay(args) => crate::replay::run(args),
        Command::Explain(args) => crate::explain::run(args),
        Command::Scan(args) => crate::scan::run(args),
    }
}
