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
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
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

/// h2 flow-control windows. They bound what a client can make us buffer before a handler reads
/// (hyper's defaults are 1 MiB per stream and 5 MiB per connection, i.e. 5 GiB for a thousand
/// connections); an ordinary review (~10 KiB) still fits in one stream window, and a larger body
/// flows as fast as it is read, since reading releases window.
const H2_STREAM_WINDOW: u32 = 64 * 1024;
const H2_CONNECTION_WINDOW: u32 = 256 * 1024;
/// HTTP/1.1 read buffer ceiling (hyper's default is ~400 KiB per connection).
const H1_MAX_BUFFER: usize = 64 * 1024;

/// The HTTP/1.1 + h2 connection settings of the HTTPS port (public so that the benchmark's no-op
/// responder runs on exactly the same stack).
pub fn http_builder(header_timeout: Duration) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(H1_MAX_BUFFER)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .adaptive_window(false)
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
    let stream = Lingering {
        inner: Some(stream),
    };
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
    // What this connection holds, for the per-connection share of the large-body budget.
    let service = TowerToHyperService::new(router.layer(axum::Extension(Arc::new(
        super::limits::ConnectionShare::default(),
    ))));
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

/// Bytes and time a closed connection is still read for (see [`Lingering`]).
const LINGER_BYTES: usize = 4 * 1024 * 1024;
const LINGER_TIME: Duration = Duration::from_secs(2);
/// Connections lingering at once; past this a closed connection is just closed.
const MAX_LINGERING: usize = 512;
static LINGERING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The TCP stream under TLS, closed the way a web server closes ("lingering close").
///
/// When hyper ends an HTTP/1.1 connection whose request body was not read (an answer given
/// early: 413, 429, 408), it has already sent the answer and shut the sending side; closing the
/// socket now, with the client's body still arriving, makes the kernel send a reset, and a
/// client still writing may lose the answer it was sent. So the raw bytes that still arrive are
/// read and thrown away (no TLS, no parsing) until the client closes, for at most
/// [`LINGER_TIME`] and [`LINGER_BYTES`].
struct Lingering {
    inner: Option<TcpStream>,
}

impl Lingering {
    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(s) => Pin::new(s).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().stream() {
            Ok(s) => Pin::new(s).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().stream() {
            Ok(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(s) => Pin::new(s).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stream() {
            Ok(s) => Pin::new(s).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(mut stream) = self.inner.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        use std::sync::atomic::Ordering;
        if LINGERING.fetch_add(1, Ordering::AcqRel) >= MAX_LINGERING {
            LINGERING.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        runtime.spawn(async move {
            let _ = stream.shutdown().await;
            let mut buf = vec![0u8; 4 * 1024];
            let mut left = LINGER_BYTES;
            let _ = tokio::time::timeout(LINGER_TIME, async {
                while left > 0 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => left = left.saturating_sub(n),
                    }
                }
            })
            .await;
            LINGERING.fetch_sub(1, Ordering::AcqRel);
        });
    }
}
