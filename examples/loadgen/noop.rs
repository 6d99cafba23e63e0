//! The no-op TLS responder: the ceiling a webhook can reach on this machine.
//!
//! Same stack as `server::tls` (tokio-rustls with `certs::server_config`, hyper-util's auto
//! builder with the same HTTP/1.1 and h2 settings, TCP_NODELAY, a task per connection on a
//! multi-thread runtime), but the service reads the body and answers a fixed allowed
//! AdmissionReview without parsing anything. It runs as a child process (`loadgen --serve-noop`)
//! so that it competes for the CPU exactly like the real server does.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sandbox_admission::certs;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const ANSWER: &[u8] = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"noop","allowed":true}}"#;

/// Serve until killed; prints `noop ready: https://ADDR` on stderr once listening.
pub async fn serve(cert_dir: &Path) -> anyhow::Result<()> {
    certs::install_crypto_provider();
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let (files, _) = certs::ensure_self_signed(cert_dir, &names)?;
    let acceptor = TlsAcceptor::from(Arc::new(certs::server_config(&files)?));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    eprintln!("noop ready: https://{}", listener.local_addr()?);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let builder = sandbox_admission::server::tls::http_builder(Duration::from_secs(5));
            let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                // Read the body like a real webhook must, then answer without looking at it.
                let _ = req.into_body().collect().await;
                let resp = hyper::Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(ANSWER)));
                Ok::<_, Infallible>(resp.unwrap_or_default())
            });
            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
        });
    }
}
