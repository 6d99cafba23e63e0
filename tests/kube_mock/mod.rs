//! A stand-in API server for kube's `Client`: answers each request from a route function with
//! canned API server JSON, and records what was asked so tests can check the wire shape.
#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use kube::Client;

/// One request the client sent.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn is_watch(&self) -> bool {
        self.query.split('&').any(|p| p == "watch=true")
    }
}

pub enum Reply {
    /// A complete JSON answer with this HTTP status.
    Json(u16, String),
    /// A watch connection that stays open and sends nothing.
    OpenWatch,
    /// A watch connection that sends these events (one JSON line each), then stays open, or
    /// ends when `then_close` (the client watches again).
    Watch {
        events: Vec<String>,
        then_close: bool,
    },
}

pub struct MockApi {
    pub client: Client,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl MockApi {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests other than the watch caches' own list and watch calls.
    pub fn direct(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| !(s.method == "GET" && (s.is_watch() || is_collection(&s.path))))
            .collect()
    }
}

fn is_collection(path: &str) -> bool {
    path.ends_with("/runtimeclasses") || path.ends_with("/namespaces")
}

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("tests/fixtures/api-server/{name}")).unwrap()
}

pub fn mock_api(route: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> MockApi {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let route = Arc::new(route);
    let log = Arc::clone(&seen);
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let route = Arc::clone(&route);
        let log = Arc::clone(&log);
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes().to_vec())
                .unwrap_or_default();
            let seen = Seen {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body,
            };
            let reply = route(&seen);
            log.lock().unwrap().push(seen);
            let (status, body) = match reply {
                Reply::Json(code, text) => (
                    code,
                    UnsyncBoxBody::new(Full::new(Bytes::from(text)).map_err(|e| match e {})),
                ),
                Reply::OpenWatch => (
                    200,
                    UnsyncBoxBody::new(StreamBody::new(futures::stream::pending::<
                        Result<Frame<Bytes>, Infallible>,
                    >())),
                ),
                Reply::Watch { events, then_close } => {
                    let frames =
                        futures::stream::iter(events.into_iter().map(|e| {
                            Ok::<_, Infallible>(Frame::data(Bytes::from(format!("{e}\n"))))
                        }));
                    let body = if then_close {
                        UnsyncBoxBody::new(StreamBody::new(frames))
                    } else {
                        UnsyncBoxBody::new(StreamBody::new(futures::StreamExt::chain(
                            frames,
                            futures::stream::pending(),
                        )))
                    };
                    (200, body)
                }
            };
            let response = http::Response::builder()
                .status(status)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body)
                .unwrap();
            Ok::<_, Infallible>(response)
        }
    });
    MockApi {
        client: Client::new(service, "default"),
        seen,
    }
}
