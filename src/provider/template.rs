//! Path templates (`/images/{imageId}`) and string patterns, resolved once when the provider
//! files are loaded: a template knows its placeholders and encodes what fills them, a pattern
//! is compiled, so a mistake in either is a load error and never a surprise later.

use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

/// Characters kept as they are in a path segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encodes one path segment or query value, so `private/42` becomes `private%2F42`.
pub fn encode_segment(value: &str) -> String {
    utf8_percent_encode(value, SEGMENT).to_string()
}

/// A request path relative to the provider's base URL, with `{param}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PathTemplate(String);

impl TryFrom<String> for PathTemplate {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!("path `{text}` must start with /"));
        }
        let opens = text.matches('{').count();
        if opens != text.matches('}').count() || PathTemplate(text.clone()).placeholders().count() != opens {
            return Err(format!("path `{text}` has an unbalanced {{placeholder}}"));
        }
        Ok(PathTemplate(text))
    }
}

impl PathTemplate {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `{name}` placeholders, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.0.split('{').skip(1).filter_map(|s| s.split_once('}').map(|(name, _)| name))
    }

    pub fn has(&self, name: &str) -> bool {
        self.placeholders().any(|p| p == name)
    }

    /// The template with `name` filled by `value`, encoded as one segment.
    pub fn fill(&self, name: &str, value: &str) -> PathTemplate {
        PathTemplate(self.0.replace(&format!("{{{name}}}"), &encode_segment(value)))
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A regular expression a string field must match, compiled on load.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Pattern(regex::Regex);

impl TryFrom<String> for Pattern {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        regex::Regex::new(&text).map(Pattern).map_err(|e| format!("invalid pattern `{text}`: {e}"))
    }
}

impl Pattern {
    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_encode_what_fills_them() {
        let path = PathTemplate::try_from("/images/{imageId}/regions".to_string()).unwrap();
        assert_eq!(path.placeholders().collect::<Vec<_>>(), ["imageId"]);
        assert_eq!(path.fill("imageId", "private/42 x").as_str(), "/images/private%2F42%20x/regions");
        assert!(PathTemplate::try_from("/images/{imageId".to_string()).is_err());
        assert!(PathTemplate::try_from("images".to_string()).is_err());
    }
}
