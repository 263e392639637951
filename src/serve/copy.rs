//! `COPY … TO STDOUT`: rows in PostgreSQL's text format (tab-separated, `\N` for null,
//! backslash escapes) or as CSV, each row a CopyData message, encoded from the same text
//! values a query's rows carry.

use bytes::{Buf, Bytes};
use datafusion_postgres::pgwire::messages::data::DataRow;

use crate::engine::CopyFormat;

/// The text values of a row encoded in the text format (`None` for null).
fn fields(row: &DataRow) -> Vec<Option<Vec<u8>>> {
    let mut data = &row.data[..];
    (0..row.field_count.max(0))
        .map(|_| {
            if data.remaining() < 4 {
                return None;
            }
            let length = data.get_i32();
            match usize::try_from(length) {
                Ok(length) if length <= data.remaining() => {
                    let value = data[..length].to_vec();
                    data.advance(length);
                    Some(value)
                }
                _ => None,
            }
        })
        .collect()
}

/// One line of COPY output for a row.
pub fn line(row: &DataRow, format: &CopyFormat) -> Bytes {
    let values: Vec<Vec<u8>> = fields(row).into_iter().map(|value| encode(value.as_deref(), format)).collect();
    let mut line = values.join(format.delimiter.to_string().as_bytes());
    line.push(b'\n');
    Bytes::from(line)
}

/// The header line of CSV output.
pub fn header(names: &[String], format: &CopyFormat) -> Bytes {
    let values: Vec<Vec<u8>> = names.iter().map(|n| encode(Some(n.as_bytes()), format)).collect();
    let mut line = values.join(format.delimiter.to_string().as_bytes());
    line.push(b'\n');
    Bytes::from(line)
}

fn encode(value: Option<&[u8]>, format: &CopyFormat) -> Vec<u8> {
    let Some(value) = value else { return format.null.as_bytes().to_vec() };
    match format.csv {
        true => {
            let quote = format.quote as u8;
            let needs = value.is_empty() && !format.null.is_empty()
                || value == format.null.as_bytes()
                || value.iter().any(|b| *b == quote || *b == format.delimiter as u8 || *b == b'\n' || *b == b'\r');
            match needs {
                false => value.to_vec(),
                true => {
                    let mut quoted = vec![quote];
                    for b in value {
                        if *b == quote {
                            quoted.push(quote);
                        }
                        quoted.push(*b);
                    }
                    quoted.push(quote);
                    quoted
                }
            }
        }
        false => {
            let mut escaped = Vec::with_capacity(value.len());
            for b in value {
                match *b {
                    b'\\' => escaped.extend(b"\\\\"),
                    b'\n' => escaped.extend(b"\\n"),
                    b'\r' => escaped.extend(b"\\r"),
                    b'\t' => escaped.extend(b"\\t"),
                    b if b == format.delimiter as u8 => {
                        escaped.push(b'\\');
                        escaped.push(b);
                    }
                    b => escaped.push(b),
                }
            }
            escaped
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    fn row(values: &[Option<&str>]) -> DataRow {
        let mut data = BytesMut::new();
        for v in values {
            match v {
                Some(v) => {
                    data.put_i32(v.len() as i32);
                    data.put_slice(v.as_bytes());
                }
                None => data.put_i32(-1),
            }
        }
        DataRow::new(data, values.len() as i16)
    }

    #[test]
    fn rows_are_written_as_copy_writes_them() {
        let text = CopyFormat { csv: false, header: false, delimiter: '\t', null: "\\N".into(), quote: '"' };
        assert_eq!(&line(&row(&[Some("a\tb"), None, Some("c\\d\n")]), &text)[..], b"a\\tb\t\\N\tc\\\\d\\n\n");
        let csv = CopyFormat { csv: true, header: true, delimiter: ',', null: String::new(), quote: '"' };
        assert_eq!(
            &line(&row(&[Some("a,b"), None, Some("say \"hi\""), Some("")]), &csv)[..],
            b"\"a,b\",,\"say \"\"hi\"\"\",\"\"\n"
        );
        assert_eq!(&header(&["id".into(), "label".into()], &csv)[..], b"id,label\n");
    }
}
