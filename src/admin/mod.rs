//! The admin page (`serve --admin-listen`): a read-only view of this replica for cluster admins,
//! on its own plain-HTTP listener: recent decisions with filters, denials over time by policy,
//! one decision's detail, the policy sets with their reload status, the shadow set's
//! disagreements, the background audit's last round (its PolicyReports' summary) and whether this
//! replica holds the audit Lease. Loopback by default; any other address needs a bearer token from a file.
//!
//! Everything shown comes from requests (names, labels, users, messages) and is hostile: every
//! value goes through [`page::esc`], and the page carries no script at all, with a
//! Content-Security-Policy that forbids any, so an escaping mistake still cannot run code.

mod audit;
mod chart;
mod page;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::background::audit::AuditStatus;
use crate::config::AdminConfig;
use crate::pipeline::Admitter;

pub use page::Filters;

#[derive(Clone)]
struct AdminState {
    admitter: Arc<Admitter>,
    /// The background audit, when this replica runs one.
    audit: Option<Arc<AuditStatus>>,
    token: Option<Arc<Vec<u8>>>,
}

/// Read the token file: one line, surrounding whitespace ignored, at least 16 characters.
fn read_token(path: &Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the admin token file {}", path.display()))?;
    let token = text.trim();
    if token.len() < 16 {
        anyhow::bail!(
            "the admin token in {} is shorter than 16 characters",
            path.display()
        );
    }
    Ok(token.as_bytes().to_vec())
}

/// Refuse a non-loopback address without a token before anything is bound.
pub fn check(config: &AdminConfig) -> anyhow::Result<()> {
    if let Some(addr) = config.listen
        && !addr.ip().is_loopback()
        && config.token_file.is_none()
    {
        anyhow::bail!(
            "--admin-listen {addr} is not a loopback address: it needs --admin-token-file FILE (admin.tokenFile)"
        );
    }
    Ok(())
}

/// Equal in time independent of where the first difference is (the length is not secret).
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    let diff = given
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0
}

async fn authorize(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    if let Some(expected) = &s.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        if !same_token(given, expected) {
            let mut r = (StatusCode::UNAUTHORIZED, "a bearer token is required\n").into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sandbox-admission admin\""),
            );
            return r;
        }
    }
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/decision/{seq}", get(decision))
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such page\n") })
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

async fn index(State(s): State<AdminState>, Query(f): Query<Filters>) -> Html<String> {
    let audit = s.audit.as_ref().map(|a| a.snapshot());
    Html(page::index(
        &s.admitter,
        audit.as_ref(),
        &f,
        chrono::Utc::now(),
    ))
}

async fn decision(State(s): State<AdminState>, UrlPath(seq): UrlPath<String>) -> Response {
    let found = seq.parse::<u64>().ok().and_then(|n| {
        s.admitter
            .recent
            .as_ref()
            .and_then(|r| r.get(n))
            .map(|r| (n, r))
    });
    match found {
        Some((n, record)) => {
            // The explanation re-runs the serving set on the logged object, so it needs one.
            let explained = match crate::replay::request_of(&record) {
                Ok((req, _)) if record.endpoint == "validate" => {
                    Some(s.admitter.explain(&req, None).await.1)
                }
                _ => None,
            };
            Html(page::detail(n, &record, explained.as_deref())).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Html(page::not_found("that decision is no longer in memory")),
        )
            .into_response(),
    }
}

/// What the page needs before anything else starts: the address checked and the token read, so
/// that a bad token file stops the server before any background task runs.
pub struct Prepared {
    listen: Option<SocketAddr>,
    token: Option<Arc<Vec<u8>>>,
}

/// Check the address (see [`check`]) and read the token file, if the page is on.
pub fn prepare(config: &AdminConfig) -> anyhow::Result<Prepared> {
    check(config)?;
    let token = match (&config.listen, &config.token_file) {
        (Some(_), Some(path)) => Some(Arc::new(read_token(path)?)),
        _ => None,
    };
    Ok(Prepared {
        listen: config.listen,
        token,
    })
}

/// Bind the admin listener and serve until shutdown. `None` when the page is off. `audit` is
/// the background audit's status when this replica runs one.
pub async fn start(
    prepared: Prepared,
    admitter: Arc<Admitter>,
    audit: Option<Arc<AuditStatus>>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Option<(SocketAddr, JoinHandle<()>)>> {
    let Prepared { listen, token } = prepared;
    let Some(listen) = listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (admin page)"))?;
    let addr = listener.local_addr()?;
    let app = router(AdminState {
        admitter,
        audit,
        token,
    });
    let task = tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "admin page server failed");
        }
    });
    tracing::info!(%addr, "admin page");
    Ok(Some((addr, task)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same_token(b"0123456789abcdeX", b"0123456789abcdef"));
        assert!(!same_token(b"0123", b"0123456789abcdef"));
        assert!(!same_token(b"", b"0123456789abcdef"));
    }

    #[test]
    fn a_public_address_needs_a_token() {
        let mut c = AdminConfig {
            listen: Some("0.0.0.0:9091".parse().unwrap()),
            ..AdminConfig::default()
        };
        assert!(check(&c).is_err());
        c.token_file = Some("/t".into());
        assert!(check(&c).is_ok());
        c.listen = Some("127.0.0.1:9091".parse().unwrap());
        c.token_file = None;
        assert!(check(&c).is_ok());
        c.listen = Some("[::1]:9091".parse().unwrap());
        assert!(check(&c).is_ok());
    }
}
