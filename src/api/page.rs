//! A page of a listing as it arrived: its rows stay JSON text until a scan decodes them,
//! so a page costs its bytes in memory, not a tree of values.

use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::Shape;

#[derive(Debug, Clone)]
pub struct Page {
    body: Bytes,
    /// Where each row's JSON text is in `body`.
    rows: Vec<Range<usize>>,
    pub shape: Shape,
}

impl Page {
    /// The envelope of a listing's body, read in one pass: the rows of its `object_key`
    /// array, and its `pages_key` and `results` counts. `None` when there is no such array.
    pub fn parse(body: Bytes, object_key: &str, pages_key: &str) -> Option<Page> {
        let mut deserializer = serde_json::Deserializer::from_slice(&body);
        let found = Envelope { object_key, pages_key }.deserialize(&mut deserializer).ok()?;
        deserializer.end().ok()?;
        let start = body.as_ptr() as usize;
        let rows = found
            .rows?
            .iter()
            .map(|row| {
                let offset = row.get().as_ptr() as usize - start;
                offset..offset + row.get().len()
            })
            .collect();
        let count = |value: Option<Value>| value.as_ref().and_then(Value::as_u64);
        let shape = Shape { pages: count(found.pages), results: count(found.results) };
        Some(Page { rows, shape, body })
    }

    /// The body the page was read from.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Each row's JSON text.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        self.rows.iter().map(|range| &self.body[range.clone()])
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

struct Envelope<'k> {
    object_key: &'k str,
    pages_key: &'k str,
}

#[derive(Default)]
struct Found<'de> {
    rows: Option<Vec<&'de RawValue>>,
    pages: Option<Value>,
    results: Option<Value>,
}

impl<'de> DeserializeSeed<'de> for Envelope<'_> {
    type Value = Found<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Found<'de>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Envelope<'_> {
    type Value = Found<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a listing page (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found<'de>, A::Error> {
        let mut found = Found::default();
        while let Some(key) = map.next_key::<String>()? {
            if key == self.object_key {
                found.rows = Some(map.next_value()?);
            } else if key == self.pages_key {
                found.pages = Some(map.next_value()?);
            } else if key == "results" {
                found.results = Some(map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_the_texts_of_the_array() {
        let body = br#"{"data": [{"id": "a", "tags": ["x"]}, {"id":"b"}], "page": 1, "pages": 3, "results": 5}"#;
        let page = Page::parse(Bytes::from_static(body), "data", "pages").unwrap();
        let rows: Vec<&[u8]> = page.rows().collect();
        assert_eq!(rows, [&br#"{"id": "a", "tags": ["x"]}"#[..], br#"{"id":"b"}"#]);
        assert_eq!(page.shape, Shape { pages: Some(3), results: Some(5) });
    }

    #[test]
    fn no_array_is_no_page() {
        for body in [&br#"{"pages": 1}"#[..], br#"{"data": null}"#, br#"{"data": [1,"#, br#"[]"#] {
            assert!(Page::parse(Bytes::from_static(body), "data", "pages").is_none(), "{:?}", body);
        }
    }
}
