//! The HTTPS listener: TLS handshake with the current certificate, HTTP/1.1 and h2 on top, and
//! graceful shutdown that answers every request already accepted.
//!
//! Written on tokio-rustls + hyper-util rather than axum-server so that we control the three
//! things a webhook needs: a certificate swapped per connection (rotation without restart), a
//! plain-HTTP probe answered with a clear error, and header/handshake timeouts against slowloris.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

/// The first byte of every TLS connection (a handshake record).
const TLS_HANDSHAKE: u8 = 0x16;

fn plain_http_answer() -> String {
    let body = r#"{"error":"this port speaks HTTPS only; connect with TLS (https://...)"}"#;
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[derive(Clone)]
pub struct ListenerSettings {
    pub header_timeout: Duration,
    pub grace: Duration,
}

/// Accept connections until `shutdown` flips, then let in-flight requests finish (up to the grace
/// period) and return.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ArcSwap<rustls::ServerConfig>>,
    router: Router,
    settings: ListenerSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = TlsAcceptor::from(tls.load_full());
        tracker.spawn(connection(
            stream,
            peer,
            acceptor,
            router.clone(),
            settings.clone(),
            shutdown.clone(),
        ));
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(settings.grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = tracker.len(),
            "shutdown grace period over; closing remaining connections"
        );
    }
}

/// The HTTP/1.1 + h2 connection settings of the HTTPS port (public so that the benchmark's no-op
/// responder runs on exactly the same stack).
pub fn http_builder(header_timeout: Duration) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_concurrent_streams(256);
    builder
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    router: Router,
    settings: ListenerSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut first = [0u8; 1];
    match tokio::time::timeout(settings.header_timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE => {}
        Ok(Ok(1)) => {
            tracing::debug!(%peer, "plain HTTP on the TLS port");
            let mut stream = stream;
            let _ = stream.write_all(plain_http_answer().as_bytes()).await;
            let _ = stream.shutdown().await;
            return;
        }
        // Closed, failed, or silent for too long: nothing to answer.
        _ => return,
    }
    let tls = match tokio::time::timeout(settings.header_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let builder = http_builder(settings.header_timeout);
    let service = TowerToHyperService::new(router);
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = shutdown.changed() => {
            // Finish the request being served (if any), then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
