//! HTTP handlers of the HTTPS port: `/mutate` and `/validate`, and clear JSON errors for
//! everything else (wrong path, wrong method, oversized or slow bodies, overload).
//!
//! A review goes: body size known from `Content-Length` (or as it arrives) → bytes reserved from
//! the small or large budget → body read within the body-read deadline → a decision slot, small
//! reviews first, within the review's deadline → decided (large reviews on a blocking thread, so
//! a 3 MiB pod never holds an async worker that ordinary reviews need). See [`super::limits`].

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, body::Bytes};
use http_body_util::BodyExt;
use serde::Deserialize;
use tokio::time::Instant;

use super::body::{DrainControl, DrainPolicy, Drained};
use super::limits::{Class, ConnectionShare, Limits, Overload, Reservation};
use crate::pipeline::{Admitter, Answer, Endpoint, ShadowJob};

/// The API server's own ceiling for `timeoutSeconds`.
const MAX_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct AppState {
    pub admitter: Arc<Admitter>,
    pub limits: Arc<Limits>,
}

pub fn router(admitter: Arc<Admitter>, limits: Arc<Limits>) -> Router {
    let drain = DrainPolicy {
        // A body refused as too large is drained up to twice the limit: a client that declared
        // a little too much still sees its stream end cleanly; a huge one is reset.
        max_bytes: limits.max_body_bytes.saturating_mul(2),
        timeout: limits.body_read_timeout(),
        slots: limits.drains.clone(),
    };
    Router::new()
        .route("/mutate", post(mutate).fallback(method_not_allowed))
        .route("/validate", post(validate).fallback(method_not_allowed))
        .fallback(not_found)
        .with_state(AppState { admitter, limits })
        .layer(middleware::from_fn_with_state(drain, drain_unread_bodies))
}

/// Wrap every request body so that what a handler leaves unread is drained (see [`super::body`]).
async fn drain_unread_bodies(
    State(policy): State<DrainPolicy>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let expects_continue = parts
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let control = Arc::new(DrainControl::default());
    parts.extensions.insert(control.clone());
    let body = Body::new(Drained::new(body, expects_continue, control, policy));
    next.run(Request::from_parts(parts, body)).await
}

#[derive(Deserialize)]
struct Params {
    timeout: Option<String>,
}

/// What a review handler is given besides the body.
struct Call {
    params: Params,
    version: Version,
    headers: HeaderMap,
    control: Arc<DrainControl>,
    share: Option<Arc<ConnectionShare>>,
}

async fn mutate(
    State(s): State<AppState>,
    Query(params): Query<Params>,
    Extension(control): Extension<Arc<DrainControl>>,
    share: Option<Extension<Arc<ConnectionShare>>>,
    version: Version,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let call = Call {
        params,
        version,
        headers,
        control,
        share: share.map(|Extension(s)| s),
    };
    admit(s, Endpoint::Mutate, call, body).await
}

async fn validate(
    State(s): State<AppState>,
    Query(params): Query<Params>,
    Extension(control): Extension<Arc<DrainControl>>,
    share: Option<Extension<Arc<ConnectionShare>>>,
    version: Version,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let call = Call {
        params,
        version,
        headers,
        control,
        share: share.map(|Extension(s)| s),
    };
    admit(s, Endpoint::Validate, call, body).await
}

/// A JSON refusal. The body is also a `metav1.Status`, so that the API server's client shows
/// our message rather than "the server responded with the status code N".
pub fn json_error(status: StatusCode, message: &str) -> Response {
    let reason = match status {
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
        StatusCode::PAYLOAD_TOO_LARGE => "RequestEntityTooLarge",
        StatusCode::REQUEST_TIMEOUT => "Timeout",
        StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
        StatusCode::INTERNAL_SERVER_ERROR => "InternalError",
        _ => "BadRequest",
    };
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "error": message,
        "code": status.as_u16(),
    });
    (status, axum::Json(body)).into_response()
}

/// An answer given with the body left unread on purpose. Over HTTP/1.1 it says
/// `Connection: close`, so that the client does not send its next request on a connection the
/// server is closing (h2 resets only the stream, after the complete answer).
fn unread(call: &Call, mut r: Response) -> Response {
    call.control.skip();
    if call.version < Version::HTTP_2 {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// 429 (a body budget is full) or 503 (no decision slot in time), with `Retry-After`.
fn overloaded(limits: &Limits, why: Overload) -> Response {
    limits.overloaded(why);
    tracing::debug!(reason = why.reason(), "refused for load");
    let status = match why {
        Overload::QueueDeadline => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::TOO_MANY_REQUESTS,
    };
    let mut r = json_error(status, why.message());
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(limits.config.retry_after_seconds),
    );
    r
}

async fn not_found() -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "no such endpoint: POST AdmissionReview v1 to /mutate or /validate",
    )
}

async fn method_not_allowed() -> Response {
    let mut r = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed: /mutate and /validate take POST",
    );
    r.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
    r
}

/// Parse the API server's `?timeout=` (a Go duration such as `10s`, `1m30s`, `500ms`).
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest.get(..digits)?.parse().ok()?;
        rest = rest.get(digits..)?;
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = rest.get(..unit_len)?;
        rest = rest.get(unit_len..)?;
        let seconds = match unit {
            "h" => value * 3600.0,
            "m" => value * 60.0,
            "s" => value,
            "ms" => value / 1e3,
            "us" | "µs" => value / 1e6,
            "ns" => value / 1e9,
            _ => return None,
        };
        total += Duration::try_from_secs_f64(seconds).ok()?;
    }
    Some(total)
}

/// Our deadline: the API server's timeout less a margin so that our refusal reaches it in time.
fn deadline(admitter: &Admitter, p: &Params) -> Duration {
    let given = p
        .timeout
        .as_deref()
        .and_then(parse_go_duration)
        .unwrap_or(Duration::from_secs(admitter.config.default_timeout_seconds))
        .min(MAX_TIMEOUT);
    given.mul_f64(0.9).max(Duration::from_millis(50))
}

/// Why a body was not read whole.
enum BodyError {
    TooLarge,
    Unreadable(String),
    Overloaded(Overload),
}

fn too_large(a: &Admitter, limit: usize) -> Response {
    a.metrics.reject("body_too_large");
    json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("request body exceeds the {limit}-byte limit"),
    )
}

async fn admit(s: AppState, endpoint: Endpoint, call: Call, body: Body) -> Response {
    let started = Instant::now();
    let (a, limits) = (&s.admitter, &s.limits);
    let deadline = started + deadline(a, &call.params);
    let limit = limits.max_body_bytes;
    let declared = match call.headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|t| t.trim().parse::<usize>().ok()) {
            Some(n) => Some(n),
            None => {
                a.metrics.reject("body_unreadable");
                return json_error(StatusCode::BAD_REQUEST, "invalid content-length");
            }
        },
    };
    if declared.is_some_and(|n| n > limit) {
        // Refused from the headers: nothing of the body is held.
        return too_large(a, limit);
    }
    // Without a length, start as a small body and move to the large budget if it grows.
    let class = limits.class_of(declared.unwrap_or(0));
    let first = declared.unwrap_or(limits.config.small_body_bytes);
    let reservation = match limits.reserve(class, first, call.share.as_ref()) {
        Ok(r) => r,
        Err(why) => return unread(&call, overloaded(limits, why)),
    };
    let body_deadline = deadline.min(started + limits.body_read_timeout());
    let read = tokio::time::timeout_at(
        body_deadline,
        read_body(body, declared, reservation, limits, call.share.as_ref()),
    )
    .await;
    let (bytes, reservation) = match read {
        Ok(Ok(pair)) => pair,
        Ok(Err(BodyError::TooLarge)) => return too_large(a, limit),
        Ok(Err(BodyError::Unreadable(e))) => {
            a.metrics.reject("body_unreadable");
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read request body: {e}"),
            );
        }
        Ok(Err(BodyError::Overloaded(why))) => return unread(&call, overloaded(limits, why)),
        Err(_) => {
            a.metrics.reject("body_timeout");
            let message = format!(
                "request body not received within {} ms",
                body_deadline.saturating_duration_since(started).as_millis()
            );
            return unread(&call, json_error(StatusCode::REQUEST_TIMEOUT, &message));
        }
    };
    let class = reservation.class;
    let Some(slot) = limits.slot(class, deadline).await else {
        // The body was read: the connection stays usable.
        return overloaded(limits, Overload::QueueDeadline);
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    let (answer, shadow) = match class {
        Class::Small => a.handle_then(endpoint, &bytes, remaining).await,
        Class::Large => {
            // A large review is seconds of CPU in the worst case; on a blocking thread it never
            // holds one of the async workers that accept, read and answer everything else.
            let admitter = a.clone();
            let runtime = tokio::runtime::Handle::current();
            let decided = tokio::task::spawn_blocking(move || {
                runtime.block_on(admitter.handle_then(endpoint, &bytes, remaining))
            })
            .await;
            match decided {
                Ok(answer) => answer,
                Err(e) => {
                    tracing::error!(error = %e, "a large review failed");
                    return json_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the review failed inside the server; refused",
                    );
                }
            }
        }
    };
    drop(slot);
    drop(reservation);
    match answer {
        Answer::Review(json) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            Body::new(super::after_sent::AfterSent::new(
                json,
                shadow.map(|job| shadow_task(a.clone(), job)),
            )),
        )
            .into_response(),
        Answer::BadRequest(message) => json_error(StatusCode::BAD_REQUEST, &message),
    }
}

/// The shadow evaluation, started on the shadow set's own thread once the answer is out.
fn shadow_task(a: Arc<Admitter>, job: ShadowJob) -> Box<dyn FnOnce() + Send> {
    Box::new(move || {
        if let Some(shadow) = a.shadow.clone() {
            shadow.spawn(async move { a.judge_shadow(job).await });
        }
    })
}

/// Read the body into one buffer of its declared size (no second copy), growing the
/// reservation when the size was not declared.
async fn read_body(
    mut body: Body,
    declared: Option<usize>,
    mut reservation: Reservation,
    limits: &Limits,
    share: Option<&Arc<ConnectionShare>>,
) -> Result<(Bytes, Reservation), BodyError> {
    let limit = limits.max_body_bytes;
    let mut buf: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Unreadable(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let len = buf.len().saturating_add(data.len());
        if len > limit {
            return Err(BodyError::TooLarge);
        }
        if len > reservation.bytes {
            if declared.is_some() {
                // hyper enforces Content-Length; this is only reached if it did not.
                return Err(BodyError::Unreadable(
                    "body longer than content-length".into(),
                ));
            }
            // Undeclared and past the small size: the large budget, for the largest body.
            reservation = limits
                .reserve(Class::Large, limit, share)
                .map_err(BodyError::Overloaded)?;
        }
        buf.extend_from_slice(&data);
    }
    Ok((Bytes::from(buf), reservation))
}

#[cfg(test)]
mod tests {
    use super::parse_go_duration;
    use std::time::Duration;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("ten"), None);
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration(""), None);
    }
}
