//! `serve`: the HTTPS admission endpoints and the plain-HTTP health port, wired to one pipeline.

pub mod after_sent;
pub mod body;
pub mod health;
pub mod limits;
pub mod routes;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit::DecisionLog;
use crate::audit::events::Events;
use crate::certs::{self, TlsFiles};
use crate::cluster::ClusterAccess;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::Admitter;
use crate::readiness::Readiness;
use health::HealthState;

pub use crate::certs::TlsSource;

pub struct ServeSettings {
    pub config: Config,
    /// Where the configuration came from, for `/readyz` and the start-up line.
    pub config_origin: String,
    pub tls: TlsSource,
    pub policies_dir: Option<PathBuf>,
    /// Write decision records (off in tests that do not read them).
    pub decision_log: bool,
    /// The API server, for RuntimeClass and Namespace lookups and NetworkPolicy apply; `None`
    /// runs mutation offline (see [`crate::cluster::connect_or_offline`]).
    pub cluster: Option<Arc<dyn ClusterAccess>>,
}

/// A started server. Dropping it does not stop it; call [`Running::shutdown`].
pub struct Running {
    pub addr: SocketAddr,
    pub health_addr: SocketAddr,
    /// The admin page's address, when it is on (`--admin-listen`).
    pub admin_addr: Option<SocketAddr>,
    /// The CA that signed the serving certificate, when we generated it.
    pub ca_file: Option<PathBuf>,
    pub tls: Arc<ArcSwap<rustls::ServerConfig>>,
    pub tls_files: TlsFiles,
    pub admitter: Arc<Admitter>,
    /// Admission control of the HTTPS port (budgets, decision slots).
    pub limits: Arc<limits::Limits>,
    pub readiness: Arc<Readiness>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Hot reload of `--policies DIR`; watching stops when the server is dropped.
    _policy_watch: Option<crate::policy::WatchGuard>,
    /// `data.inventory` upkeep and the background audit: stopped (not awaited) at shutdown.
    background: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stop accepting, finish in-flight requests (bounded by the grace period), then return.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in &self.background {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

fn loopback_names(config: &Config) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    names.extend(config.service.dns_names());
    names
}

/// Bind both ports and start serving. Returns once the server is ready.
pub async fn start(settings: ServeSettings) -> anyhow::Result<Running> {
    certs::install_crypto_provider();
    let ServeSettings {
        config,
        config_origin,
        tls,
        policies_dir,
        decision_log,
        cluster,
    } = settings;
    // Read before anything starts: a bad admin token file ends start-up with nothing running.
    let admin_page = crate::admin::prepare(&config.admin)?;
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    readiness.set("config", Ok(config_origin));
    readiness.set("tls", Err("serving certificate not loaded yet".into()));

    let (tls_files, ca_file) = match tls {
        TlsSource::Files(files) => (files, None),
        TlsSource::SelfSigned { dir } => {
            let (files, fresh) = certs::ensure_self_signed(&dir, &loopback_names(&config))
                .with_context(|| {
                    format!(
                        "cannot prepare a self-signed certificate in {}",
                        dir.display()
                    )
                })?;
            let ca = dir.join(certs::CA_FILE);
            tracing::info!(ca = %ca.display(), generated = fresh, "using a self-signed serving certificate");
            (files, Some(ca))
        }
    };
    let loaded_pem =
        certs::TlsPem::read(&tls_files).context("cannot load the serving certificate")?;
    let server_config = certs::server_config_from(&tls_files, &loaded_pem)
        .context("cannot load the serving certificate")?;
    let tls_config = Arc::new(ArcSwap::from_pointee(server_config));
    readiness.set(
        "tls",
        Ok(certs::describe_serving(&tls_files.cert, &loaded_pem.cert)),
    );

    let log = if decision_log {
        DecisionLog::start(&config.decision_log, metrics.clone())
            .context("cannot open the decision log")?
    } else {
        DecisionLog::disabled(metrics.clone())
    };
    let events = if config.events.enabled {
        Events::to_cluster(&config.events, metrics.clone()).await?
    } else {
        Events::disabled(metrics.clone())
    };
    let config = Arc::new(config);
    let admitter = Arc::new(Admitter::build(
        config.clone(),
        policies_dir.as_deref(),
        cluster,
        metrics.clone(),
        log,
        events,
    )?);
    // The admission-time seal is keyed from the serving key, which every replica shares.
    let seal = admitter.mutator.seal().clone();
    seal.rotate(&loaded_pem.key);
    let policies = admitter.policies.clone();
    let policy_watch = match policies_dir.as_deref() {
        Some(dir) => Some(
            policies
                .watch(dir)
                .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", dir.display()))?,
        ),
        None => None,
    };
    if let Some(shadow) = &admitter.shadow {
        shadow.watch()?;
    }

    let crate::background::Spawned {
        tasks: background,
        audit,
    } = crate::background::spawn_all(&admitter);

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Rotation: new connections get the new pair as soon as it is written (Secret update,
    // cert-manager renewal, --manage-certs, or a file replaced by hand).
    let cert_task = certs::reload::spawn(
        tls_files.clone(),
        loaded_pem,
        certs::reload::ReloadSinks {
            tls: tls_config.clone(),
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            on_new_key: Some(Arc::new(move |key: &[u8]| seal.rotate(key))),
        },
        certs::reload::ReloadTiming::default(),
        shutdown_rx.clone(),
    );
    let health_listener = TcpListener::bind(config.health_listen)
        .await
        .with_context(|| format!("cannot listen on {} (health)", config.health_listen))?;
    let health_addr = health_listener.local_addr()?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;

    let health_app = health::router(HealthState {
        readiness: readiness.clone(),
        policies: policies.clone(),
        metrics: metrics.clone(),
        cluster: admitter.cluster.clone(),
    });
    let admin =
        crate::admin::start(admin_page, admitter.clone(), audit, shutdown_rx.clone()).await?;
    let mut health_shutdown = shutdown_rx.clone();
    let health_task = tokio::spawn(async move {
        let stop = async move {
            let _ = health_shutdown.changed().await;
        };
        if let Err(e) = axum::serve(health_listener, health_app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "health server failed");
        }
    });
    let listener_settings = tls::ListenerSettings {
        header_timeout: Duration::from_secs(config.header_timeout_seconds),
        grace: Duration::from_secs(config.shutdown_grace_seconds),
    };
    let limits = limits::Limits::new(
        config.limits.clone(),
        config.max_body_bytes,
        metrics.clone(),
    );
    let api_task = tokio::spawn(tls::serve(
        listener,
        tls_config.clone(),
        routes::router(admitter.clone(), limits.clone()),
        listener_settings,
        shutdown_rx,
    ));
    let mut tasks = vec![api_task, health_task, cert_task];
    let admin_addr = admin.map(|(addr, task)| {
        tasks.push(task);
        addr
    });
    Ok(Running {
        addr,
        health_addr,
        admin_addr,
        ca_file,
        tls: tls_config,
        tls_files,
        admitter,
        limits,
        readiness,
        shutdown: shutdown_tx,
        tasks,
        _policy_watch: policy_watch,
        background,
    })
}

/// Wait for SIGTERM or SIGINT.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `serve`: start, say where, run until a signal, shut down gracefully.
pub async fn run(settings: ServeSettings) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let running = start(settings).await?;
    let ca = running
        .ca_file
        .as_ref()
        .map(|p| format!("; trust CA {}", p.display()))
        .unwrap_or_default();
    let admin = running
        .admin_addr
        .map(|a| format!("; admin page http://{a}/"))
        .unwrap_or_default();
    let line = format!(
        "sandbox-admission ready in {}ms: https://{} (POST /mutate, /validate), http://{} (/healthz, /readyz, /metrics){ca}{admin}",
        started.elapsed().as_millis(),
        running.addr,
        running.health_addr
    );
    eprintln!("{line}");
    tracing::info!(addr = %running.addr, health = %running.health_addr, "ready");
    signal().await;
    eprintln!("sandbox-admission: signal received, finishing in-flight requests");
    running.shutdown().await;
    eprintln!("sandbox-admission: stopped");
    Ok(())
}
