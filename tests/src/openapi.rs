//! The API against its description (`gateway/openapi.yaml`): answers are
//! checked against the schema the description gives for their route,
//! status and content type, and [`Conformance`] keeps count of which
//! documented answers a test has seen.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::repo_root;

/// The OpenAPI description (`gateway/openapi.yaml`) as JSON.
pub fn openapi() -> Value {
    let text = std::fs::read_to_string(repo_root().join("gateway/openapi.yaml"))
        .expect("read gateway/openapi.yaml");
    serde_saphyr::from_str(&text).expect("gateway/openapi.yaml parses")
}

/// Checks `body`, answered with `status` to `method path` (the path as the
/// OpenAPI description spells it, e.g. `/v1/audit/proof/{event_id}`),
/// against the JSON schema the description gives for that answer. Panics
/// naming every mismatch, or if the description has no schema for it.
pub fn assert_documented(api: &Value, method: &str, path: &str, status: u16, body: &Value) {
    let label = format!("{method} {path} → {status}");
    let media =
        media_type(api, method, path, status, "application/json").unwrap_or_else(|e| panic!("{e}"));
    let errors = Schema::new(api, &media["schema"], &label).mismatches(body);
    assert!(
        errors.is_empty(),
        "{label} does not match openapi.yaml:\n{}",
        errors.join("\n")
    );
}

/// The response object the description gives for `status` (or its
/// `default`), with a `$ref` to `#/components/responses` followed.
fn response<'a>(api: &'a Value, method: &str, path: &str, status: u16) -> Option<&'a Value> {
    let responses = api["paths"][path][method]["responses"].as_object()?;
    let answer = responses
        .get(&status.to_string())
        .or_else(|| responses.get("default"))?;
    Some(match answer["$ref"].as_str() {
        Some(r) => &api["components"]["responses"][r.rsplit('/').next().unwrap_or_default()],
        None => answer,
    })
}

/// The media type object for an answer in `content_type` (parameters such
/// as `charset` ignored), or why there is none.
fn media_type<'a>(
    api: &'a Value,
    method: &str,
    path: &str,
    status: u16,
    content_type: &str,
) -> Result<&'a Value, String> {
    let answer = response(api, method, path, status)
        .ok_or_else(|| format!("openapi.yaml documents no {status} for {method} {path}"))?;
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    answer["content"].get(&essence).ok_or_else(|| {
        format!(
            "{method} {path} → {status} answered {essence:?}; openapi.yaml lists {:?}",
            answer["content"]
                .as_object()
                .map(|c| c.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        )
    })
}

/// A schema from the description, compiled with `#/components/...`
/// references resolved against the description itself.
struct Schema {
    validator: jsonschema::Validator,
}

impl Schema {
    fn new(api: &Value, schema: &Value, label: &str) -> Self {
        assert!(
            schema.is_object(),
            "openapi.yaml gives no schema for {label}"
        );
        let root = serde_json::json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": api["components"],
            "allOf": [schema],
        });
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&root)
            .unwrap_or_else(|e| panic!("the schema for {label} does not compile: {e}"));
        Schema { validator }
    }

    /// Every mismatch, each with where it is and which rule. An error's
    /// text repeats the offending value, which may be a whole proof: only
    /// its head is kept.
    fn mismatches(&self, value: &Value) -> Vec<String> {
        self.validator
            .iter_errors(value)
            .map(|e| {
                let text: String = e.to_string().chars().take(160).collect();
                format!(
                    "at {} (schema {}): {text}",
                    e.instance_path(),
                    e.schema_path()
                )
            })
            .collect()
    }
}

/// Sends requests and checks every answer against the description,
/// remembering which documented answers it has seen.
pub struct Conformance {
    api: Value,
    seen: BTreeSet<(String, String, String)>,
}

impl Default for Conformance {
    fn default() -> Self {
        Conformance {
            api: openapi(),
            seen: BTreeSet::new(),
        }
    }
}

impl Conformance {
    /// Sends `request`, one for `method path` (lower-case method, the path
    /// as the description spells it, e.g. `/v1/persons/{id_number}`), and
    /// checks the answer: its status is documented for the operation (or
    /// falls under its `default`), its content type is one the description
    /// lists for that status, a JSON body matches the schema, and each line
    /// of an NDJSON body matches `x-oai-itemSchema`. Every answer must also
    /// carry the policy version in force and, unless it is a 503, name its
    /// audit event (`X-Audit-Event`, a UUID). Returns the status and the
    /// body.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> (u16, bytes::Bytes) {
        let r = request.send().await.expect("request sent");
        let status = r.status().as_u16();
        let label = format!("{method} {path} → {status}");
        assert!(
            r.headers().contains_key("x-policy-version"),
            "{label}: no X-Policy-Version"
        );
        // Only the audit step's own refusal (503: the event could not be
        // written) has no event to name; a request cancelled at its
        // deadline is recorded like any other.
        if status != 503 {
            let event = r
                .headers()
                .get("x-audit-event")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            assert!(
                uuid::Uuid::parse_str(event).is_ok(),
                "{label}: X-Audit-Event {event:?} is not a UUID"
            );
        }
        let content_type = r
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = r.bytes().await.expect("body read");
        let media = media_type(&self.api, method, path, status, &content_type)
            .unwrap_or_else(|e| panic!("{e}; body: {}", String::from_utf8_lossy(&body)));
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        let mut errors = Vec::new();
        match essence {
            "application/json" => {
                let value: Value = serde_json::from_slice(&body)
                    .unwrap_or_else(|e| panic!("{label}: the body is not JSON: {e}"));
                errors = Schema::new(&self.api, &media["schema"], &label).mismatches(&value);
            }
            "application/x-ndjson" => {
                let item = Schema::new(&self.api, &media["x-oai-itemSchema"], &label);
                let text = std::str::from_utf8(&body).expect("NDJSON is UTF-8");
                assert!(
                    text.is_empty() || text.ends_with('\n'),
                    "{label}: the last line is not ended"
                );
                for (i, line) in text.lines().enumerate() {
                    let value: Value = serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("{label}: line {} is not JSON: {e}", i + 1));
                    errors.extend(
                        item.mismatches(&value)
                            .into_iter()
                            .map(|e| format!("line {}: {e}", i + 1)),
                    );
                }
            }
            _ => {}
        }
        assert!(
            errors.is_empty(),
            "{label} does not match openapi.yaml:\n{}",
            errors.join("\n")
        );
        let responses = &self.api["paths"][path][method]["responses"];
        let key = if responses.get(status.to_string()).is_some() {
            status.to_string()
        } else {
            "default".to_owned()
        };
        self.seen.insert((path.to_owned(), method.to_owned(), key));
        (status, body)
    }

    /// [`Conformance::send`], and the body as JSON (`Null` if it is not).
    pub async fn json(
        &mut self,
        method: &str,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> (u16, Value) {
        let (status, body) = self.send(method, path, request).await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// Every operation's documented statuses (not `default`) that no
    /// [`Conformance::send`] has seen, as `METHOD path → status`.
    pub fn unseen(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (path, item) in self.api["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                for status in op["responses"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(s, _)| s)
                {
                    let key = (path.clone(), method.clone(), status.clone());
                    if status != "default" && !self.seen.contains(&key) {
                        out.push(format!("{} {path} → {status}", method.to_uppercase()));
                    }
                }
            }
        }
        out
    }

    /// The documented operations, as `(method, path)`.
    pub fn operations(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (path, item) in self.api["paths"].as_object().into_iter().flatten() {
            for method in item.as_object().into_iter().flatten().map(|(m, _)| m) {
                out.push((method.clone(), path.clone()));
            }
        }
        out
    }
}
