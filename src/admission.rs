//! AdmissionReview v1 on the wire: decoding what kube-apiserver sends and encoding what it expects.
//!
//! We do not use kube-rs's `AdmissionResponse` for the wire because its `patch` serialises as an
//! array of numbers (kube-rs #1781); the API server wants a standard base64 string. The request is
//! kept as the raw JSON it arrived as, so policies see every field (`input.review`) and the mutation
//! patch is diffed against exactly what the API server holds.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// Why a body could not be understood. Every variant is answered with a refusal, never an allow.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    #[error("body is not an AdmissionReview: {0}")]
    NotAReview(String),
    #[error("unsupported apiVersion {0:?}: this webhook speaks admission.k8s.io/v1 only")]
    WrongApiVersion(String),
    #[error("kind must be \"AdmissionReview\", got {0:?}")]
    WrongKind(String),
    #[error("AdmissionReview has no \"request\" object")]
    MissingRequest,
    #[error("request has no \"uid\"")]
    MissingUid,
    /// The envelope is fine and the uid is known, but a request field has the wrong shape.
    #[error("malformed request {uid}: {detail}")]
    BadRequest { uid: String, detail: String },
}

impl DecodeError {
    /// The uid, when it could be read: then the answer is a denying AdmissionReview, not an HTTP error.
    pub fn uid(&self) -> Option<&str> {
        match self {
            DecodeError::BadRequest { uid, .. } => Some(uid),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    pub version: String,
    pub kind: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct GroupVersionResource {
    #[serde(default)]
    pub group: String,
    pub version: String,
    pub resource: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct UserInfo {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The typed header of an AdmissionRequest. `object`/`oldObject` stay in [`AdmissionRequest::raw`].
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    uid: String,
    kind: GroupVersionKind,
    resource: GroupVersionResource,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    #[serde(default)]
    user_info: UserInfo,
    #[serde(default)]
    dry_run: Option<bool>,
}

/// One admission request, decoded. [`AdmissionRequest::raw`] is the `request` member exactly as
/// received.
#[derive(Debug, Clone)]
pub struct AdmissionRequest {
    pub uid: String,
    pub kind: GroupVersionKind,
    pub resource: GroupVersionResource,
    pub sub_resource: Option<String>,
    pub name: String,
    pub namespace: String,
    pub operation: Operation,
    pub user_info: UserInfo,
    pub dry_run: bool,
    json: RequestJson,
}

/// The `request` member. Built from a value, that is all it holds; decoded from a body, the
/// header members are values and `object`/`oldObject` stay text until [`AdmissionRequest::raw`]
/// builds the whole value (once).
#[derive(Debug, Clone, Default)]
struct RequestJson {
    value: OnceLock<Value>,
    header: Map<String, Value>,
    object: Option<Box<RawValue>>,
    old_object: Option<Box<RawValue>>,
}

/// An object of a request as it is at hand: the JSON text it arrived as, or a value.
#[derive(Debug, Clone, Copy)]
pub enum ObjectJson<'a> {
    Text(&'a RawValue),
    Value(&'a Value),
}

/// What a request member holds, for the shape checks (before any value is built).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    Absent,
    Null,
    Object,
    Other,
}

impl Member {
    fn of_value(v: Option<&Value>) -> Member {
        match v {
            None => Member::Absent,
            Some(Value::Null) => Member::Null,
            Some(Value::Object(_)) => Member::Object,
            Some(_) => Member::Other,
        }
    }

    fn of_text(v: Option<&RawValue>) -> Member {
        match v.map(|t| t.get().trim_start().as_bytes().first()) {
            None => Member::Absent,
            Some(Some(b'n')) => Member::Null,
            Some(Some(b'{')) => Member::Object,
            Some(_) => Member::Other,
        }
    }
}

impl AdmissionRequest {
    /// The `request` member as received (built on first use when decoded from a body).
    pub fn raw(&self) -> &Value {
        self.json.value.get_or_init(|| {
            let mut map = self.json.header.clone();
            for (field, text) in [
                ("object", &self.json.object),
                ("oldObject", &self.json.old_object),
            ] {
                if let Some(text) = text {
                    // Checked as JSON, and nested well within serde_json's limit, when the body
                    // was decoded: this parse cannot fail.
                    let value = serde_json::from_str(text.get()).unwrap_or(Value::Null);
                    map.insert(field.to_owned(), value);
                }
            }
            Value::Object(map)
        })
    }

    /// The object being admitted (absent on DELETE).
    pub fn object(&self) -> Option<&Value> {
        self.raw().get("object").filter(|v| !v.is_null())
    }

    pub fn old_object(&self) -> Option<&Value> {
        self.raw().get("oldObject").filter(|v| !v.is_null())
    }

    /// The object being admitted without building it: its text when it was decoded from a body
    /// and nothing has needed it as a value yet, else the value.
    pub fn object_json(&self) -> Option<ObjectJson<'_>> {
        match (self.json.value.get(), &self.json.object) {
            (None, Some(text)) => {
                (Member::of_text(Some(text)) != Member::Null).then_some(ObjectJson::Text(text))
            }
            _ => self.object().map(ObjectJson::Value),
        }
    }

    /// `namespace/name`, or just `name` for cluster-scoped objects; generated names read from the object.
    pub fn display_name(&self) -> String {
        let name = if self.name.is_empty() {
            self.object()
                .and_then(|o| o.pointer("/metadata/generateName"))
                .and_then(Value::as_str)
                .map(|g| format!("{g}*"))
                .unwrap_or_default()
        } else {
            self.name.clone()
        };
        if self.namespace.is_empty() {
            name
        } else {
            format!("{}/{}", self.namespace, name)
        }
    }

    /// Build a request from its JSON (the `request` member). Used by offline review and tools.
    pub fn from_value(raw: Value) -> Result<Self, DecodeError> {
        let Value::Object(map) = &raw else {
            return Err(DecodeError::MissingRequest);
        };
        let members = [
            Member::of_value(map.get("object")),
            Member::of_value(map.get("oldObject")),
        ];
        let header = read_header(&raw, members)?;
        Ok(header.with(RequestJson {
            value: OnceLock::from(raw),
            ..Default::default()
        }))
    }

    /// Build a request from the `request` member of a body, its `object` and `oldObject` left
    /// as text.
    fn from_parts(parts: Parts) -> Result<Self, DecodeError> {
        let members = [
            Member::of_text(parts.object.as_deref()),
            Member::of_text(parts.old_object.as_deref()),
        ];
        let header_value = Value::Object(parts.header);
        let header = read_header(&header_value, members)?;
        let Value::Object(map) = header_value else {
            return Err(DecodeError::MissingRequest);
        };
        Ok(header.with(RequestJson {
            value: OnceLock::new(),
            header: map,
            object: parts.object,
            old_object: parts.old_object,
        }))
    }
}

/// The checked header of a request, before its JSON is attached.
struct CheckedHeader(Header);

impl CheckedHeader {
    fn with(self, json: RequestJson) -> AdmissionRequest {
        let h = self.0;
        AdmissionRequest {
            uid: h.uid,
            kind: h.kind,
            resource: h.resource,
            sub_resource: h.sub_resource.filter(|s| !s.is_empty()),
            name: h.name.unwrap_or_default(),
            namespace: h.namespace.unwrap_or_default(),
            operation: h.operation,
            user_info: h.user_info,
            dry_run: h.dry_run.unwrap_or(false),
            json,
        }
    }
}

/// The typed header of `raw` (the request's members; `object` and `oldObject` may be left out,
/// their shapes given as `members`), with the checks every request must pass.
fn read_header(raw: &Value, members: [Member; 2]) -> Result<CheckedHeader, DecodeError> {
    let Value::Object(map) = raw else {
        return Err(DecodeError::MissingRequest);
    };
    let uid = match map.get("uid") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(DecodeError::MissingUid),
    };
    let bad = |detail: String| DecodeError::BadRequest {
        uid: uid.clone(),
        detail,
    };
    let header = Header::deserialize(raw).map_err(|e| bad(e.to_string()))?;
    for (field, member) in ["object", "oldObject"].into_iter().zip(members) {
        if member == Member::Other {
            return Err(bad(format!("`{field}` must be a JSON object")));
        }
    }
    if matches!(header.operation, Operation::Create | Operation::Update)
        && members[0] != Member::Object
    {
        return Err(bad(format!(
            "{} request carries no `object`",
            header.operation
        )));
    }
    Ok(CheckedHeader(header))
}

/// A `request` member split into its header (values) and its objects (text).
struct Parts {
    header: Map<String, Value>,
    object: Option<Box<RawValue>>,
    old_object: Option<Box<RawValue>>,
}

/// The `request` member of a review: an object split into [`Parts`], or anything else.
enum RequestMember {
    Object(Parts),
    NotAnObject,
}

impl<'de> Deserialize<'de> for RequestMember {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RequestVisitor;
        impl<'de> Visitor<'de> for RequestVisitor {
            type Value = RequestMember;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an AdmissionRequest")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RequestMember, A::Error> {
                let mut parts = Parts {
                    header: Map::new(),
                    object: None,
                    old_object: None,
                };
                // A member given twice counts once, the last, as when the whole is a value.
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "object" => parts.object = Some(map.next_value()?),
                        "oldObject" => parts.old_object = Some(map.next_value()?),
                        _ => {
                            let value = map.next_value()?;
                            parts.header.insert(key, value);
                        }
                    }
                }
                Ok(RequestMember::Object(parts))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RequestMember, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(RequestMember::NotAnObject)
            }

            fn visit_bool<E>(self, _: bool) -> Result<RequestMember, E> {
                Ok(RequestMember::NotAnObject)
            }

            fn visit_i64<E>(self, _: i64) -> Result<RequestMember, E> {
                Ok(RequestMember::NotAnObject)
            }

            fn visit_u64<E>(self, _: u64) -> Result<RequestMember, E> {
                Ok(RequestMember::NotAnObject)
            }

            fn visit_f64<E>(self, _: f64) -> Result<RequestMember, E> {
                Ok(RequestMember::NotAnObject)
            }

            fn visit_str<E>(self, _: &str) -> Result<RequestMember, E> {
                Ok(RequestMember::NotAnObject)
            }

            fn visit_unit<E>(self) -> Result<RequestMember, E> {
                Ok(RequestMember::NotAnObject)
            }
        }
        d.deserialize_any(RequestVisitor)
    }
}

/// The envelope of a review, read in one pass: `apiVersion` and `kind` as values, the
/// request split, any other member skipped.
#[derive(Default)]
struct Envelope {
    api_version: Option<Value>,
    kind: Option<Value>,
    request: Option<RequestMember>,
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EnvelopeVisitor;
        impl<'de> Visitor<'de> for EnvelopeVisitor {
            type Value = Envelope;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
                let mut e = Envelope::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "apiVersion" => e.api_version = Some(map.next_value()?),
                        "kind" => e.kind = Some(map.next_value()?),
                        "request" => e.request = Some(map.next_value()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(e)
            }
        }
        d.deserialize_map(EnvelopeVisitor)
    }
}

/// The header fields a tool may be handed without: every one optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GivenHeader {
    #[serde(default)]
    kind: Option<GivenKind>,
    #[serde(default)]
    resource: Option<GivenResource>,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    operation: Option<String>,
    #[serde(default)]
    user_info: Option<UserInfo>,
    #[serde(default)]
    dry_run: Option<bool>,
}

/// A `kind` whose members may be empty (Gatekeeper's zero value).
#[derive(Debug, Clone, Default, Deserialize)]
struct GivenKind {
    #[serde(default)]
    group: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    kind: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct GivenResource {
    #[serde(default)]
    group: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    resource: String,
}

impl AdmissionRequest {
    /// A request as an offline tool is handed it (a gator suite case, a trimmed capture), kept
    /// exactly as given in [`AdmissionRequest::raw`] so policies see what the author wrote.
    ///
    /// Gatekeeper takes such a request as it is: fields the API server always sends may be
    /// absent. The typed header, used only for matching, is then read from the object: `kind`
    /// from its `apiVersion`/`kind` (Gatekeeper matches on the object's kind), `name` and
    /// `namespace` from its metadata; a missing or empty `operation` counts as CREATE.
    pub fn from_given(raw: Value) -> Result<Self, DecodeError> {
        let Value::Object(map) = &raw else {
            return Err(DecodeError::MissingRequest);
        };
        let uid = map
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let bad = |detail: String| DecodeError::BadRequest {
            uid: if uid.is_empty() {
                "(no uid)".into()
            } else {
                uid.clone()
            },
            detail,
        };
        let header = GivenHeader::deserialize(&raw).map_err(|e| bad(e.to_string()))?;
        for field in ["object", "oldObject"] {
            match map.get(field) {
                None | Some(Value::Null) | Some(Value::Object(_)) => {}
                Some(_) => return Err(bad(format!("`{field}` must be a JSON object"))),
            }
        }
        let object = [map.get("object"), map.get("oldObject")]
            .into_iter()
            .flatten()
            .find(|v| v.is_object());
        let at = |pointer: &str| {
            object
                .and_then(|o| o.pointer(pointer))
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        let kind = match header.kind {
            Some(k) if !k.kind.is_empty() => GroupVersionKind {
                group: k.group,
                version: k.version,
                kind: k.kind,
            },
            _ => {
                let api_version = at("/apiVersion");
                let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
                GroupVersionKind {
                    group: group.to_owned(),
                    version: version.to_owned(),
                    kind: at("/kind").to_owned(),
                }
            }
        };
        if kind.kind.is_empty() {
            return Err(bad(
                "no `kind`, and no object with an apiVersion and kind to take it from".into(),
            ));
        }
        let operation = match header.operation.as_deref() {
            None | Some("") => Operation::Create,
            Some(op) => Operation::deserialize(Value::String(op.to_owned()))
                .map_err(|_| bad(format!("unknown operation {op:?}")))?,
        };
        let resource = match header.resource {
            Some(r) if !r.resource.is_empty() => GroupVersionResource {
                group: r.group,
                version: r.version,
                resource: r.resource,
            },
            _ => GroupVersionResource {
                group: kind.group.clone(),
                version: kind.version.clone(),
                resource: String::new(),
            },
        };
        Ok(AdmissionRequest {
            uid,
            name: header
                .name
                .unwrap_or_else(|| at("/metadata/name").to_owned()),
            namespace: header
                .namespace
                .unwrap_or_else(|| at("/metadata/namespace").to_owned()),
            kind,
            resource,
            sub_resource: header.sub_resource.filter(|s| !s.is_empty()),
            operation,
            user_info: header.user_info.unwrap_or_default(),
            dry_run: header.dry_run.unwrap_or(false),
            json: RequestJson {
                value: OnceLock::from(raw),
                ..Default::default()
            },
        })
    }
}

/// Decode an AdmissionReview v1 body.
///
/// The body is checked as JSON whole, in one pass, but only the envelope and the request's
/// header are built as values; the objects stay text (see the module documentation). A body
/// nested deeper than [`LAZY_DEPTH`] is decoded whole instead, so that it meets serde_json's
/// recursion limit here, as it always did, and never later when an object is built.
pub fn decode(body: &[u8]) -> Result<AdmissionRequest, DecodeError> {
    if nesting_exceeds(body, LAZY_DEPTH) {
        return decode_whole(body);
    }
    let review: Envelope = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(e) if e.is_data() => {
            // Valid JSON, but not an object at the top level (classified as a whole parse does).
            return match serde_json::from_slice::<Value>(body) {
                Ok(_) => Err(DecodeError::NotAReview(
                    "expected a JSON object at the top level".into(),
                )),
                Err(e) => Err(DecodeError::NotJson(e.to_string())),
            };
        }
        Err(e) => return Err(DecodeError::NotJson(e.to_string())),
    };
    check_envelope(review.api_version, review.kind)?;
    match review.request {
        Some(RequestMember::Object(parts)) => AdmissionRequest::from_parts(parts),
        _ => Err(DecodeError::MissingRequest),
    }
}

/// Bodies nested deeper than this are decoded whole (serde_json refuses more than 127 levels).
const LAZY_DEPTH: usize = 100;

/// Whether `{`/`[` nest deeper than `limit` in the JSON text `text` (outside strings). Counting
/// the brackets first settles nearly every body at a fraction of a scan.
fn nesting_exceeds(text: &[u8], limit: usize) -> bool {
    // Counted in blocks of 255 bytes into a byte, which the compiler turns into vector code.
    let brackets: usize = text
        .chunks(255)
        .map(|block| {
            let n = block.iter().fold(0u8, |n, &b| {
                n.wrapping_add(u8::from(b == b'{') | u8::from(b == b'['))
            });
            usize::from(n)
        })
        .sum();
    if brackets <= limit {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Decode an AdmissionReview v1 body with its objects built as values at once, for a caller
/// that needs them (validation always does: the policies get the whole request): one pass over
/// the objects, where [`decode`] checks them now and parses them again when first needed.
/// The same answers and refusals as [`decode`].
pub fn decode_built(body: &[u8]) -> Result<AdmissionRequest, DecodeError> {
    decode_whole(body)
}

/// Decode a body by building it whole as a value.
fn decode_whole(body: &[u8]) -> Result<AdmissionRequest, DecodeError> {
    let mut review: Value =
        serde_json::from_slice(body).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    let Value::Object(map) = &mut review else {
        return Err(DecodeError::NotAReview(
            "expected a JSON object at the top level".into(),
        ));
    };
    check_envelope(map.remove("apiVersion"), map.remove("kind"))?;
    match map.remove("request") {
        Some(request @ Value::Object(_)) => AdmissionRequest::from_value(request),
        _ => Err(DecodeError::MissingRequest),
    }
}

fn check_envelope(api_version: Option<Value>, kind: Option<Value>) -> Result<(), DecodeError> {
    match api_version {
        Some(Value::String(v)) if v == API_VERSION => {}
        Some(Value::String(v)) => return Err(DecodeError::WrongApiVersion(v)),
        Some(other) => return Err(DecodeError::WrongApiVersion(other.to_string())),
        None => return Err(DecodeError::NotAReview("missing apiVersion".into())),
    }
    match kind {
        Some(Value::String(k)) if k == KIND => Ok(()),
        Some(other) => Err(DecodeError::WrongKind(
            other
                .as_str()
                .map_or_else(|| other.to_string(), str::to_owned),
        )),
        None => Err(DecodeError::NotAReview("missing kind".into())),
    }
}

/// Status of a refusal, as the API server shows it to the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub code: u16,
    pub message: String,
}

/// What the webhook answers for one request, before it is put on the wire.
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub uid: String,
    pub allowed: bool,
    pub status: Option<Status>,
    /// RFC 6902 operations; empty means "no patch".
    pub patch: Vec<json_patch::PatchOperation>,
    pub warnings: Vec<String>,
    pub audit_annotations: BTreeMap<String, String>,
}

/// The API server rejects warnings longer than this.
pub const MAX_WARNING_LEN: usize = 120;

/// Shorten a warning to the API server's limit on a character boundary.
pub fn clip_warning(text: &str) -> String {
    if text.chars().count() <= MAX_WARNING_LEN {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(MAX_WARNING_LEN - 1).collect();
    out.push('…');
    out
}

impl Response {
    pub fn allow(uid: impl Into<String>) -> Self {
        Response {
            uid: uid.into(),
            allowed: true,
            ..Default::default()
        }
    }

    pub fn deny(uid: impl Into<String>, code: u16, message: impl Into<String>) -> Self {
        Response {
            uid: uid.into(),
            allowed: false,
            status: Some(Status {
                code,
                message: message.into(),
            }),
            ..Default::default()
        }
    }

    /// The patch as the API server wants it: base64 (standard alphabet) of the JSON array.
    pub fn patch_base64(&self) -> Option<String> {
        if self.patch.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        write_patch_base64(&mut out, &self.patch).ok()?;
        String::from_utf8(out).ok()
    }

    /// Encode as an AdmissionReview v1 JSON body.
    pub fn to_review_json(&self) -> Vec<u8> {
        // Serialising plain strings, bools and maps of strings into memory cannot fail.
        self.write_review().unwrap_or_else(|_| b"{}".to_vec())
    }

    /// The body, written member by member: the patch goes through the base64 encoder straight
    /// into the body (its alphabet needs no JSON escaping, so it is not scanned again), and the
    /// rest through serde_json.
    fn write_review(&self) -> std::io::Result<Vec<u8>> {
        use std::io::Write as _;
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"apiVersion\":\"");
        out.extend_from_slice(API_VERSION.as_bytes());
        out.extend_from_slice(b"\",\"kind\":\"");
        out.extend_from_slice(KIND.as_bytes());
        out.extend_from_slice(b"\",\"response\":{\"uid\":");
        serde_json::to_writer(&mut out, &self.uid)?;
        out.extend_from_slice(if self.allowed {
            b",\"allowed\":true"
        } else {
            b",\"allowed\":false"
        });
        if let Some(status) = &self.status {
            out.extend_from_slice(b",\"status\":");
            serde_json::to_writer(&mut out, status)?;
        }
        // A patch on a refusal is meaningless and the API server rejects it.
        if self.allowed && !self.patch.is_empty() {
            out.extend_from_slice(b",\"patch\":\"");
            write_patch_base64(&mut out, &self.patch)?;
            out.extend_from_slice(b"\",\"patchType\":\"JSONPatch\"");
        }
        if !self.warnings.is_empty() {
            let warnings: Vec<String> = self.warnings.iter().map(|w| clip_warning(w)).collect();
            out.extend_from_slice(b",\"warnings\":");
            serde_json::to_writer(&mut out, &warnings)?;
        }
        if !self.audit_annotations.is_empty() {
            out.extend_from_slice(b",\"auditAnnotations\":");
            serde_json::to_writer(&mut out, &self.audit_annotations)?;
        }
        out.write_all(b"}}")?;
        Ok(out)
    }

    /// The same answer as a JSON value (for `review -o json` and tests).
    pub fn to_review_value(&self) -> Value {
        serde_json::from_slice(&self.to_review_json()).unwrap_or(Value::Null)
    }
}

/// The RFC 6902 array as JSON, base64-encoded (standard alphabet, padded) onto `out`.
///
/// The operations this webhook makes (add, replace, remove) are written directly; json-patch's
/// derived `Serialize` (an internally tagged enum) is used for any other. The JSON is encoded
/// in one call: fed to base64's streaming writer piece by piece, it cost twice as much.
fn write_patch_base64(
    out: &mut Vec<u8>,
    ops: &[json_patch::PatchOperation],
) -> std::io::Result<()> {
    use base64::Engine as _;
    use json_patch::PatchOperation;
    let mut json = Vec::with_capacity(128 * ops.len());
    json.push(b'[');
    for (i, op) in ops.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        let (name, path, value) = match op {
            PatchOperation::Add(a) => ("add", &a.path, Some(&a.value)),
            PatchOperation::Replace(r) => ("replace", &r.path, Some(&r.value)),
            PatchOperation::Remove(r) => ("remove", &r.path, None),
            other => {
                serde_json::to_writer(&mut json, other)?;
                continue;
            }
        };
        json.extend_from_slice(b"{\"op\":\"");
        json.extend_from_slice(name.as_bytes());
        json.extend_from_slice(b"\",\"path\":");
        serde_json::to_writer(&mut json, path.as_str())?;
        if let Some(value) = value {
            json.extend_from_slice(b",\"value\":");
            serde_json::to_writer(&mut json, value)?;
        }
        json.push(b'}');
    }
    json.push(b']');
    let start = out.len();
    let len = base64::encoded_len(json.len(), true)
        .ok_or_else(|| std::io::Error::other("patch too large to encode"))?;
    out.resize(start + len, 0);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(&json, &mut out[start..])
        .map_err(std::io::Error::other)?;
    out.truncate(start + written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use serde_json::json;

    fn review(request: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"apiVersion": API_VERSION, "kind": KIND, "request": request}))
            .unwrap()
    }

    fn pod_request() -> Value {
        json!({
            "uid": "abc-123",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "ns", "name": "p", "operation": "CREATE",
            "userInfo": {"username": "alice", "groups": ["dev"]},
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}},
            "dryRun": true
        })
    }

    #[test]
    fn decodes_a_pod_review() {
        let req = decode(&review(pod_request())).unwrap();
        assert_eq!(req.uid, "abc-123");
        assert_eq!(req.kind.kind, "Pod");
        assert_eq!(req.operation, Operation::Create);
        assert!(req.dry_run);
        assert_eq!(req.user_info.groups, vec!["dev"]);
        assert_eq!(req.object().unwrap()["metadata"]["name"], "p");
        assert_eq!(req.display_name(), "ns/p");
    }

    #[test]
    fn lazy_decoding_keeps_the_request_and_every_refusal() {
        let mut r = pod_request();
        r["object"]["metadata"]["annotations"] = json!({"a/b": "\"q\"\\", "x": "[{"});
        r["oldObject"] = Value::Null;
        let body = review(r.clone());
        let lazy = decode(&body).unwrap();
        assert!(matches!(lazy.object_json(), Some(ObjectJson::Text(_))));
        assert_eq!(lazy.raw(), &r);
        assert_eq!(lazy.raw(), decode_built(&body).unwrap().raw());
        assert!(matches!(lazy.object_json(), Some(ObjectJson::Value(_))));

        // Too deep for serde_json anywhere in the body: refused as before, not left for later.
        let mut deep = json!(1);
        for _ in 0..130 {
            deep = json!([deep]);
        }
        let mut r = pod_request();
        r["object"]["spec"] = json!({"x": deep});
        let body = review(r);
        let err = decode(&body).unwrap_err();
        assert!(
            matches!(&err, DecodeError::NotJson(m) if m.contains("recursion limit")),
            "{err}"
        );
        // Nested, but within the limit: the lazy path.
        assert!(!nesting_exceeds(&review(pod_request()), LAZY_DEPTH));
        assert!(nesting_exceeds(br#"[[["]]]]]"]]]"#, 2));
        assert!(!nesting_exceeds(br#"[["[[[[\"[["]]"#, 2));
    }

    #[test]
    fn refuses_each_malformed_envelope() {
        refuses_each_malformed_envelope_with(decode);
        refuses_each_malformed_envelope_with(decode_built);
    }

    fn refuses_each_malformed_envelope_with(
        decode: fn(&[u8]) -> Result<AdmissionRequest, DecodeError>,
    ) {
        assert!(matches!(decode(b"nope"), Err(DecodeError::NotJson(_))));
        assert!(matches!(decode(b"[1]"), Err(DecodeError::NotAReview(_))));
        let wrong =
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#;
        assert!(matches!(
            decode(wrong),
            Err(DecodeError::WrongApiVersion(_))
        ));
        let kind = br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod"}"#;
        assert!(matches!(decode(kind), Err(DecodeError::WrongKind(_))));
        let noreq = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
        assert!(matches!(decode(noreq), Err(DecodeError::MissingRequest)));
        let mut r = pod_request();
        r.as_object_mut().unwrap().remove("uid");
        assert!(matches!(decode(&review(r)), Err(DecodeError::MissingUid)));
        let mut r = pod_request();
        r["object"] = json!([1, 2]);
        let err = decode(&review(r)).unwrap_err();
        assert_eq!(err.uid(), Some("abc-123"));
        let mut r = pod_request();
        r["operation"] = json!("EXPLODE");
        assert_eq!(decode(&review(r)).unwrap_err().uid(), Some("abc-123"));
    }

    #[test]
    fn patch_is_base64_of_an_rfc6902_array() {
        let mut resp = Response::allow("u1");
        resp.patch = serde_json::from_value(json!([
            {"op": "add", "path": "/metadata/labels/a~1b", "value": "x"}
        ]))
        .unwrap();
        let wire: Value = serde_json::from_slice(&resp.to_review_json()).unwrap();
        assert_eq!(wire["apiVersion"], API_VERSION);
        assert_eq!(wire["kind"], KIND);
        assert_eq!(wire["response"]["uid"], "u1");
        assert_eq!(wire["response"]["patchType"], "JSONPatch");
        let b64 = wire["response"]["patch"]
            .as_str()
            .expect("patch is a string");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let ops: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(ops.0.len(), 1);
        let mut doc = json!({"metadata": {"labels": {}}});
        json_patch::patch(&mut doc, &ops).unwrap();
        assert_eq!(doc["metadata"]["labels"]["a/b"], "x");
    }

    #[test]
    fn written_body_is_the_serialised_answer() {
        let mut resp = Response::allow("u\"1");
        let ops = json!([
            {"op": "add", "path": "/metadata/labels/a~1b", "value": "x\n\u{e9}"},
            {"op": "replace", "path": "/spec/x", "value": {"k": [1, null, true]}},
            {"op": "remove", "path": "/spec/y"},
            {"op": "test", "path": "/spec/z", "value": 2},
            {"op": "move", "from": "/a", "path": "/b"}
        ]);
        resp.patch = serde_json::from_value(ops.clone()).unwrap();
        resp.warnings = vec!["w".repeat(130), "short".into()];
        resp.audit_annotations
            .insert("mutations".into(), "a, b=\"c\"".into());
        let wire: Value = serde_json::from_slice(&resp.to_review_json()).unwrap();
        let b64 = wire["response"]["patch"].as_str().unwrap();
        // The bytes json-patch's own serialisation gives.
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
            serde_json::to_vec(&resp.patch).unwrap()
        );
        assert_eq!(resp.patch_base64().as_deref(), Some(b64));
        assert_eq!(
            wire,
            json!({"apiVersion": API_VERSION, "kind": KIND, "response": {
                "uid": "u\"1", "allowed": true, "patch": b64, "patchType": "JSONPatch",
                "warnings": [clip_warning(&"w".repeat(130)), "short"],
                "auditAnnotations": {"mutations": "a, b=\"c\""}}})
        );
        let denied = Response::deny("u", 403, "[p] \"no\"");
        let wire: Value = serde_json::from_slice(&denied.to_review_json()).unwrap();
        assert_eq!(
            wire,
            json!({"apiVersion": API_VERSION, "kind": KIND, "response": {
                "uid": "u", "allowed": false, "status": {"code": 403, "message": "[p] \"no\""}}})
        );
    }

    #[test]
    fn deny_carries_status_and_no_patch() {
        let mut resp = Response::deny("u2", 403, "[p] no");
        resp.patch = serde_json::from_value(json!([{"op": "remove", "path": "/x"}])).unwrap();
        let wire: Value = serde_json::from_slice(&resp.to_review_json()).unwrap();
        assert_eq!(wire["response"]["allowed"], false);
        assert_eq!(wire["response"]["status"]["code"], 403);
        assert!(wire["response"].get("patch").is_none());
    }

    #[test]
    fn long_warnings_are_clipped() {
        let w = clip_warning(&"é".repeat(300));
        assert_eq!(w.chars().count(), MAX_WARNING_LEN);
    }
}
