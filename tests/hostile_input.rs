//! Hostile input: arbitrary bytes and arbitrary JSON mutations of real reviews go through the same
//! pipeline the server uses (`Admitter::handle`, taken from a started server so it has whatever
//! mutation and policies `serve` has), and hand-made hostile shapes go over HTTPS.
//!
//! Properties: never a panic; never `allowed: true` for a body that does not decode; every patch is
//! standard base64 of an RFC 6902 array that applies to the object it was computed for.

mod common;
#[path = "../examples/loadgen/workload.rs"]
mod workload;

use std::time::Duration;

use base64::Engine as _;
use common::TestServer;
use hyper::StatusCode;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use sandbox_admission::admission;
use sandbox_admission::pipeline::{Admitter, Answer, Endpoint};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(5);

/// Run one body through the pipeline and check every property; returns the decoded answer.
async fn check(admitter: &Admitter, endpoint: Endpoint, body: &[u8]) -> Result<(), TestCaseError> {
    let decoded = admission::decode(body);
    match admitter.handle(endpoint, body, DEADLINE).await {
        Answer::BadRequest(message) => {
            prop_assert!(
                decoded.is_err(),
                "a decodable review was refused: {message}"
            );
            prop_assert!(!message.is_empty());
        }
        Answer::Review(bytes) => {
            let wire: Value = serde_json::from_slice(&bytes)
                .map_err(|e| TestCaseError::fail(format!("answer is not JSON: {e}")))?;
            prop_assert_eq!(&wire["apiVersion"], "admission.k8s.io/v1");
            prop_assert_eq!(&wire["kind"], "AdmissionReview");
            let response = &wire["response"];
            let allowed = response["allowed"].as_bool();
            prop_assert!(allowed.is_some(), "no allowed flag: {}", wire);
            match &decoded {
                Err(e) => {
                    prop_assert_eq!(allowed, Some(false), "allowed an undecodable body ({})", e);
                    let message = response["status"]["message"].as_str().unwrap_or_default();
                    prop_assert!(!message.is_empty(), "refusal without a reason");
                }
                Ok(req) => {
                    prop_assert_eq!(response["uid"].as_str(), Some(req.uid.as_str()));
                    if let Some(patch) = response.get("patch") {
                        prop_assert_eq!(allowed, Some(true), "patch on a refusal");
                        prop_assert_eq!(&response["patchType"], "JSONPatch");
                        let object = req.object().cloned().unwrap_or(Value::Null);
                        apply(patch, object)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Base64 → RFC 6902 → applied to `object`.
fn apply(patch: &Value, mut object: Value) -> Result<Value, TestCaseError> {
    let text = patch
        .as_str()
        .ok_or_else(|| TestCaseError::fail("patch is not a string"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| TestCaseError::fail(format!("patch is not standard base64: {e}")))?;
    let ops: json_patch::Patch = serde_json::from_slice(&bytes)
        .map_err(|e| TestCaseError::fail(format!("patch is not RFC 6902: {e}")))?;
    json_patch::patch(&mut object, &ops)
        .map_err(|e| TestCaseError::fail(format!("patch does not apply: {e}")))?;
    Ok(object)
}

/// Real reviews to mutate: Sandbox pods, Sandboxes, templates, pools, claims.
fn seeds() -> Vec<Value> {
    let w = workload::Workload::from_fixtures(&workload::default_fixtures());
    w.mutate
        .iter()
        .take(6)
        .chain(w.validate.iter().take(12))
        .filter_map(|r| serde_json::from_slice(&r.body).ok())
        .collect()
}

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("a~b/c".to_string()),
        Just("sandbox-admission.io/x~1y".to_string()),
        Just("agents.x-k8s.io/sandbox-name-hash".to_string()),
        Just("~0~1/~".to_string()),
        Just("x".repeat(300)),
        ".{0,24}",
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(hostile_string(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One edit at the `n`th node of the document (pre-order).
#[derive(Debug, Clone)]
enum Edit {
    Replace(usize, Value),
    Remove(usize),
    Insert(usize, String, Value),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any_json()).prop_map(|(n, v)| Edit::Replace(n, v)),
        any::<usize>().prop_map(Edit::Remove),
        (any::<usize>(), hostile_string(), any_json()).prop_map(|(n, k, v)| Edit::Insert(n, k, v)),
    ]
}

fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    let esc = |k: &str| k.replace('~', "~0").replace('/', "~1");
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                pointers(v, format!("{at}/{}", esc(k)), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                pointers(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn apply_edit(doc: &mut Value, edit: &Edit) {
    let mut all = Vec::new();
    pointers(doc, String::new(), &mut all);
    let pick = |n: usize| all[n % all.len()].clone();
    match edit {
        Edit::Replace(n, v) => {
            if let Some(slot) = doc.pointer_mut(&pick(*n)) {
                *slot = v.clone();
            }
        }
        Edit::Remove(n) => {
            let path = pick(*n);
            if let Some((parent, key)) = path.rsplit_once('/') {
                let key = key.replace("~1", "/").replace("~0", "~");
                match doc.pointer_mut(parent) {
                    Some(Value::Object(m)) => {
                        m.remove(&key);
                    }
                    Some(Value::Array(a)) => {
                        if let Ok(i) = key.parse::<usize>()
                            && i < a.len()
                        {
                            a.remove(i);
                        }
                    }
                    _ => {}
                }
            }
        }
        Edit::Insert(n, k, v) => {
            if let Some(Value::Object(m)) = doc.pointer_mut(&pick(*n)) {
                m.insert(k.clone(), v.clone());
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

#[test]
fn arbitrary_bytes_never_panic_and_are_never_allowed() {
    let rt = runtime();
    let server = rt.block_on(TestServer::start());
    let admitter = server.running.admitter.clone();
    let seeds: Vec<Vec<u8>> = seeds()
        .iter()
        .map(|s| serde_json::to_vec(s).unwrap())
        .collect();
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        // Real reviews, truncated and with bytes overwritten.
        (
            0..seeds.len(),
            any::<usize>(),
            prop::collection::vec((any::<usize>(), any::<u8>()), 0..8)
        )
            .prop_map(move |(i, cut, flips)| {
                let mut b = seeds[i].clone();
                for (at, byte) in flips {
                    let n = b.len();
                    b[at % n] = byte;
                }
                let keep = b.len() - cut % (b.len() / 4 + 1);
                b.truncate(keep);
                b
            }),
    ];
    runner(200)
        .run(&(bytes, any::<bool>()), |(body, mutate)| {
            let endpoint = if mutate {
                Endpoint::Mutate
            } else {
                Endpoint::Validate
            };
            rt.block_on(check(&admitter, endpoint, &body))
        })
        .unwrap();
    rt.block_on(server.stop());
}

#[test]
fn json_mutations_of_real_reviews_keep_every_property() {
    let rt = runtime();
    let server = rt.block_on(TestServer::start());
    let admitter = server.running.admitter.clone();
    let seeds = seeds();
    let n = seeds.len();
    let strategy = (0..n, prop::collection::vec(edit(), 1..5), any::<bool>());
    runner(200)
        .run(&strategy, |(i, edits, mutate)| {
            let mut doc = seeds[i].clone();
            for e in &edits {
                apply_edit(&mut doc, e);
            }
            let body = serde_json::to_vec(&doc).unwrap();
            let endpoint = if mutate {
                Endpoint::Mutate
            } else {
                Endpoint::Validate
            };
            rt.block_on(check(&admitter, endpoint, &body))
        })
        .unwrap();
    rt.block_on(server.stop());
}

/// A real Sandbox pod review, for the hand-made hostile shapes.
fn pod_review() -> Value {
    let w = workload::Workload::from_fixtures(&workload::default_fixtures());
    serde_json::from_slice(&w.mutate[0].body).unwrap()
}

/// POST over HTTPS with a bounded wait (a hang guard, not a timing assertion).
async fn post(server: &TestServer, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
    tokio::time::timeout(Duration::from_secs(60), server.post(path, body))
        .await
        .expect("the server answers")
}

/// Each hostile shape gets a well-formed answer: a 400 with a reason, or a review that is either
/// a refusal with a reason or an allow whose patch applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_shapes_get_clear_answers() {
    let server = TestServer::start().await;
    let envelope = |request: Value| json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request});
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();

    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    cases.push(("100,000 nested arrays", deep.into_bytes()));
    let mut nested = pod_review();
    let mut inner = json!("leaf");
    for _ in 0..120 {
        inner = json!({ "x": inner });
    }
    nested["request"]["object"]["metadata"]["annotations"] = json!({ "deep": "x" });
    nested["request"]["object"]["spec"]["deep"] = inner;
    cases.push((
        "120 nested objects inside a pod",
        serde_json::to_vec(&nested).unwrap(),
    ));

    let mut huge = pod_review();
    huge["request"]["object"]["spec"]["tolerations"] = Value::Array(vec![json!(0); 400_000]);
    cases.push((
        "an array of 400,000 numbers",
        serde_json::to_vec(&huge).unwrap(),
    ));

    let mut many = pod_review();
    let container = many["request"]["object"]["spec"]["containers"][0].clone();
    let containers: Vec<Value> = (0..10_000)
        .map(|i| {
            let mut c = container.clone();
            c["name"] = json!(format!("c{i}"));
            c
        })
        .collect();
    many["request"]["object"]["spec"]["containers"] = Value::Array(containers);
    cases.push(("10,000 containers", serde_json::to_vec(&many).unwrap()));

    let mut tilde = pod_review();
    tilde["request"]["object"]["metadata"]["labels"] = json!({
        "a~b/c": "1", "~0~1": "2", "sandbox-admission.io/x~y": "3", "/": "4", "~": "5"
    });
    tilde["request"]["object"]["metadata"]["annotations"] = json!({"x/~": "y"});
    cases.push((
        "label keys with ~ and /",
        serde_json::to_vec(&tilde).unwrap(),
    ));

    let mut bad_utf8 = serde_json::to_vec(&pod_review()).unwrap();
    let at = bad_utf8.windows(6).position(|w| w == b"\"name\"").unwrap() + 9;
    bad_utf8.splice(at..at, [0xff, 0xfe, 0xc3]);
    cases.push(("non-UTF-8 bytes inside a string", bad_utf8));

    let body = serde_json::to_string(&pod_review()).unwrap();
    let dup_uid = body.replacen("\"uid\":", "\"uid\":\"first\",\"uid\":", 1);
    cases.push(("duplicate uid keys", dup_uid.into_bytes()));
    let request = serde_json::to_string(&pod_review()["request"]).unwrap();
    let dup_request = format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{request},"request":{{"uid":"second"}}}}"#
    );
    cases.push(("duplicate request keys", dup_request.into_bytes()));
    cases.push((
        "request is an array",
        serde_json::to_vec(&envelope(json!([1, 2]))).unwrap(),
    ));

    for (what, body) in cases {
        for path in ["/mutate?timeout=5s", "/validate?timeout=5s"] {
            let decoded = admission::decode(&body);
            let (status, answer) = post(&server, path, body.clone()).await;
            match status {
                StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => {
                    assert!(
                        decoded.is_err(),
                        "{what} on {path}: refused a decodable body"
                    );
                    let reason = answer["error"].as_str().unwrap_or_default();
                    assert!(!reason.is_empty(), "{what} on {path}: no reason: {answer}");
                }
                StatusCode::OK => {
                    let response = &answer["response"];
                    if decoded.is_err() {
                        assert_eq!(response["allowed"], false, "{what} on {path}: {answer}");
                    }
                    if response["allowed"] == false {
                        let reason = response["status"]["message"].as_str().unwrap_or_default();
                        assert!(!reason.is_empty(), "{what} on {path}: no reason: {answer}");
                    }
                    if let (Some(patch), Ok(req)) = (response.get("patch"), &decoded) {
                        let object = req.object().cloned().unwrap_or(Value::Null);
                        if let Err(e) = apply(patch, object) {
                            panic!("{what} on {path}: {e}");
                        }
                    }
                    if what.starts_with("duplicate") {
                        // Last key wins, as in Go's encoding/json that the API server uses.
                        let uid = match &decoded {
                            Ok(r) => r.uid.clone(),
                            Err(e) => e.uid().unwrap_or_default().to_string(),
                        };
                        assert_eq!(response["uid"], uid.as_str(), "{what}: {answer}");
                    }
                }
                other => panic!("{what} on {path}: unexpected HTTP {other}: {answer}"),
            }
        }
    }
    let nested = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let err = admission::decode(nested.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("recursion limit"),
        "deep nesting is named: {err}"
    );
    server.stop().await;
}
