//! HTTP handlers of the HTTPS port: `/mutate` and `/validate`, and clear JSON errors for
//! everything else (wrong path, wrong method, oversized or slow bodies).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;

use crate::pipeline::{Admitter, Answer, Endpoint, ShadowJob};

/// The API server's own ceiling for `timeoutSeconds`.
const MAX_TIMEOUT: Duration = Duration::from_secs(30);

pub fn router(admitter: Arc<Admitter>) -> Router {
    Router::new()
        .route("/mutate", post(mutate).fallback(method_not_allowed))
        .route("/validate", post(validate).fallback(method_not_allowed))
        .fallback(not_found)
        .with_state(admitter)
}

#[derive(Deserialize)]
struct Params {
    timeout: Option<String>,
}

async fn mutate(State(a): State<Arc<Admitter>>, Query(p): Query<Params>, body: Body) -> Response {
    admit(a, Endpoint::Mutate, p, body).await
}

async fn validate(State(a): State<Arc<Admitter>>, Query(p): Query<Params>, body: Body) -> Response {
    admit(a, Endpoint::Validate, p, body).await
}

pub fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message, "code": status.as_u16() });
    (status, axum::Json(body)).into_response()
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

async fn admit(a: Arc<Admitter>, endpoint: Endpoint, p: Params, body: Body) -> Response {
    let deadline = deadline(&a, &p);
    let limit = a.config.max_body_bytes;
    let collected = tokio::time::timeout(deadline, Limited::new(body, limit).collect()).await;
    let bytes = match collected {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            a.metrics.reject("body_too_large");
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body exceeds the {limit}-byte limit"),
            );
        }
        Ok(Err(e)) => {
            a.metrics.reject("body_unreadable");
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read request body: {e}"),
            );
        }
        Err(_) => {
            a.metrics.reject("body_timeout");
            return json_error(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received within the review deadline",
            );
        }
    };
    let (answer, shadow) = a.handle_then(endpoint, &bytes, deadline).await;
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

/// The shadow evaluation, spawned once the answer is out.
fn shadow_task(a: Arc<Admitter>, job: ShadowJob) -> Box<dyn FnOnce() + Send> {
    Box::new(move || {
        tokio::spawn(async move { a.judge_shadow(job).await });
    })
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
