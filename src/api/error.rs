//! What a failed request reports: the request (method and URL, an upload URL reduced to its
//! host), the API's own reasons, and what the user can do. The token never appears here.

use std::fmt;

use serde_json::Value;

use crate::provider::HttpVerb;

/// One entry of the API's error envelope.
#[derive(Debug, Clone)]
pub struct ErrorItem {
    pub reason: String,
    pub field: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{method} {url} failed with HTTP {status}: {}{}", reasons(errors), hint_text(hint))]
    Status { method: HttpVerb, url: String, status: u16, errors: Vec<ErrorItem>, hint: Option<String> },
    #[error("{method} {url} failed: {detail}{}", hint_text(hint))]
    Network { method: HttpVerb, url: String, detail: String, hint: Option<String> },
    #[error("{method} {url} returned an unexpected response: {detail}")]
    Decode { method: HttpVerb, url: String, detail: String },
    /// A list whose length changed between its pages: its rows cannot be trusted.
    #[error(
        "the list changed while it was read (page 1 said {before}, page {page} said {after}): rows would have \
         been missed or read twice, so the query stopped; run it again"
    )]
    Changed { page: u64, before: Shape, after: Shape },
}

/// What a page says about its whole list: how many pages and rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub pages: Option<u64>,
    pub results: Option<u64>,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
        write!(f, "{} rows in {} pages", count(self.results), count(self.pages))
    }
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn reasons(errors: &[ErrorItem]) -> String {
    if errors.is_empty() {
        return "no error details".into();
    }
    errors
        .iter()
        .map(|e| match &e.field {
            Some(field) => format!("{} (field {field})", e.reason),
            None => e.reason.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn hint_text(hint: &Option<String>) -> String {
    hint.as_ref().map(|h| format!(". {h}")).unwrap_or_default()
}

/// An upload URL is a credential (a signature in its query, or a secret in its path): only
/// its host may appear in messages.
pub(super) fn redact_upload_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => format!("{}://{}/… (the upload URL)", parsed.scheme(), parsed.host_str().unwrap_or("?")),
        Err(_) => "the upload URL".into(),
    }
}

pub(super) fn error_items(body: &Value) -> Vec<ErrorItem> {
    body.get("errors")
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .map(|e| ErrorItem {
                    reason: e.get("reason").and_then(Value::as_str).unwrap_or("(no reason given)").to_string(),
                    field: e.get("field").and_then(Value::as_str).map(str::to_string),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    // reqwest's outermost message says only that the request failed; its causes say why.
    let mut parts: Vec<String> = vec![error.to_string()];
    parts.retain(|p| !p.starts_with("error sending request"));
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}
