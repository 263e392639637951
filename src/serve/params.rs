//! The values a client binds to a statement's parameters, decoded from text or binary into
//! the types the statement needs. Each value is checked against its own bytes: a binary array
//! whose header claims more elements than it holds is refused (22P03) before anything is
//! allocated for them, and text that is not of the type is 22P02.

use std::ops::ControlFlow;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Duration, NaiveDate};
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    ArrayElemTypeDef, DataType as SqlType, Expr as SqlExpr, Statement as SqlStatement, Value, ValueWithSpan,
    visit_expressions,
};
use datafusion_postgres::arrow_pg::datatypes::into_pg_type;
use datafusion_postgres::pgwire::api::Type;
use postgres_types::Kind;

/// What is wrong with a parameter, with its SQLSTATE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub code: &'static str,
    pub message: String,
}

fn error(code: &'static str, message: String) -> ParamError {
    ParamError { code, message }
}

/// Most dimensions a binary array may have, as in PostgreSQL.
const MAX_DIMENSIONS: i32 = 6;
/// Days from 1970-01-01 to 2000-01-01, Postgres' epoch for dates and times.
const POSTGRES_EPOCH_DAYS: i64 = 10_957;

/// The values of a Bind's parameters: `formats` are the Bind's format codes (none: all
/// text; one: all alike; else one each), `declared` the types the client gave in Parse (0 for
/// none), `inferred` what the statement needs where it tells.
pub fn decode(
    values: &[Option<Bytes>],
    formats: &[i16],
    declared: &[u32],
    inferred: &[Option<DataType>],
) -> Result<Vec<ScalarValue>, ParamError> {
    if !(formats.len() <= 1 || formats.len() == values.len()) {
        return Err(error(
            "08P01",
            format!("bind message has {} parameter formats but {} parameters", formats.len(), values.len()),
        ));
    }
    values
        .iter()
        .enumerate()
        .map(|(i, value)| {
            let binary = match formats {
                [] => false,
                [one] => *one == 1,
                each => each[i] == 1,
            };
            // The type the client declared is the one it encoded the value in; the statement's
            // is what it becomes where the two can be converted.
            let wire = declared.get(i).copied().filter(|oid| *oid != 0).and_then(Type::from_oid);
            let needed = inferred.get(i).cloned().flatten();
            let target = wire.as_ref().and_then(data_type).or(needed.clone()).unwrap_or(DataType::Utf8);
            let converted = |value: ScalarValue| match &needed {
                Some(needed) if !value.data_type().is_nested() && !needed.is_nested() => {
                    value.cast_to(needed).or(Ok(value))
                }
                _ => Ok(value),
            };
            let at = |e: ParamError| ParamError { message: format!("parameter ${}: {}", i + 1, e.message), ..e };
            let value = match value {
                None => ScalarValue::try_from(&target).map_err(|e| error("22023", e.to_string())),
                Some(bytes) if binary => {
                    let wire = wire.or_else(|| wire_type(&target)).unwrap_or(Type::TEXT);
                    binary_value(&wire, bytes).and_then(|v| cast(v, &target))
                }
                Some(bytes) => std::str::from_utf8(bytes)
                    .map_err(|_| error("22021", "the value is not valid UTF-8".into()))
                    .and_then(|text| text_value(text, &target)),
            };
            value.and_then(converted).map_err(at)
        })
        .collect()
}

/// The type values of a Postgres type become.
pub fn data_type(ty: &Type) -> Option<DataType> {
    Some(match *ty {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 | Type::OID => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 | Type::NUMERIC => DataType::Float64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::JSON | Type::JSONB => {
            DataType::Utf8
        }
        Type::BYTEA => DataType::Binary,
        Type::DATE => DataType::Date32,
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        _ => match ty.kind() {
            Kind::Array(element) => DataType::List(Arc::new(Field::new_list_field(data_type(element)?, true))),
            _ => return None,
        },
    })
}

/// The Postgres type a client sends for values of `data_type`.
pub fn wire_type(data_type: &DataType) -> Option<Type> {
    into_pg_type(data_type).ok()
}

/// The types of the `$n` a statement casts to an array of oids (`$1::oid[]`): DataFusion keeps
/// oids as int4, but drivers that look types up (asyncpg) know `oid[]` without asking and
/// `int4[]` only by asking with an `oid[]`.
pub fn oid_arrays(statement: &SqlStatement) -> Vec<(usize, Type)> {
    let mut found = vec![];
    let _ = visit_expressions(statement, |expr| {
        if let SqlExpr::Cast { expr: value, data_type: SqlType::Array(element), .. } = expr
            && let SqlExpr::Value(ValueWithSpan { value: Value::Placeholder(name), .. }) = value.as_ref()
            && let Some(n) = name.strip_prefix('$').and_then(|n| n.parse::<usize>().ok())
            && let ArrayElemTypeDef::SquareBracket(element, _) | ArrayElemTypeDef::AngleBracket(element) = element
            && let SqlType::Custom(type_name, _) = element.as_ref()
            && let Some(alias) = type_name.0.last().and_then(|p| p.as_ident())
        {
            let array = match alias.value.to_lowercase().as_str() {
                "oid" => Some(Type::OID_ARRAY),
                "regtype" => Some(Type::REGTYPE_ARRAY),
                "regclass" => Some(Type::REGCLASS_ARRAY),
                "regproc" => Some(Type::REGPROC_ARRAY),
                "regnamespace" => Some(Type::REGNAMESPACE_ARRAY),
                "regrole" => Some(Type::REGROLE_ARRAY),
                _ => None,
            };
            found.extend(array.map(|t| (n, t)));
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

fn cast(value: ScalarValue, target: &DataType) -> Result<ScalarValue, ParamError> {
    if &value.data_type() == target {
        return Ok(value);
    }
    value.cast_to(target).map_err(|e| error("22P02", format!("cannot be used as {target}: {e}")))
}

/// A text value as `target`.
fn text_value(text: &str, target: &DataType) -> Result<ScalarValue, ParamError> {
    match target {
        DataType::Utf8 => Ok(ScalarValue::Utf8(Some(text.to_string()))),
        DataType::Boolean => match text.trim().to_lowercase().as_str() {
            "t" | "true" | "y" | "yes" | "on" | "1" => Ok(ScalarValue::Boolean(Some(true))),
            "f" | "false" | "n" | "no" | "off" | "0" => Ok(ScalarValue::Boolean(Some(false))),
            _ => Err(error("22P02", format!("invalid input syntax for type boolean: {text:?}"))),
        },
        DataType::List(element) => {
            let items = array_literal(text)?;
            let values = items
                .iter()
                .map(|item| match item {
                    Some(item) => text_value(item, element.data_type()),
                    None => ScalarValue::try_from(element.data_type()).map_err(|e| error("22023", e.to_string())),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ScalarValue::List(ScalarValue::new_list(&values, element.data_type(), true)))
        }
        target => ScalarValue::Utf8(Some(text.trim().to_string()))
            .cast_to(target)
            .map_err(|_| error("22P02", format!("invalid input syntax for type {target}: {text:?}"))),
    }
}

/// The items of a one-dimensional Postgres array literal, `{a,"b c",NULL}`.
pub fn array_literal(text: &str) -> Result<Vec<Option<String>>, ParamError> {
    let invalid = |why: &str| error("22P02", format!("malformed array literal {text:?}: {why}"));
    let inner = text.trim();
    // An explicit lower bound (`[0:1]={…}`) does not change the items.
    let inner = match inner.strip_prefix('[') {
        Some(_) => inner.split_once('=').map(|(_, rest)| rest.trim()).ok_or_else(|| invalid("bad dimensions"))?,
        None => inner,
    };
    let inner = inner
        .strip_prefix('{')
        .and_then(|i| i.strip_suffix('}'))
        .ok_or_else(|| invalid("it must start with { and end with }"))?;
    let mut items = Vec::new();
    let mut chars = inner.chars().peekable();
    if inner.trim().is_empty() {
        return Ok(items);
    }
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut item = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => item.push(chars.next().ok_or_else(|| invalid("an escape at the end"))?),
                    Some(c) => item.push(c),
                    None => return Err(invalid("an unterminated quote")),
                }
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
        } else {
            while let Some(&c) = chars.peek() {
                match c {
                    ',' => break,
                    '{' | '}' | '"' => return Err(invalid("nested arrays are not supported here")),
                    '\\' => {
                        chars.next();
                        item.push(chars.next().ok_or_else(|| invalid("an escape at the end"))?);
                    }
                    c => {
                        item.push(c);
                        chars.next();
                    }
                }
            }
            item = item.trim_end().to_string();
        }
        items.push(match !quoted && item.eq_ignore_ascii_case("NULL") {
            true => None,
            false => Some(item),
        });
        match chars.next() {
            Some(',') => continue,
            None => return Ok(items),
            Some(other) => return Err(invalid(&format!("unexpected {other:?}"))),
        }
    }
}

/// Reads fixed-size numbers off a binary value, refusing a value of the wrong length.
fn exactly<const N: usize>(bytes: &[u8], ty: &Type) -> Result<[u8; N], ParamError> {
    bytes.try_into().map_err(|_| error("22P03", format!("a binary {} is {N} bytes, not {}", ty.name(), bytes.len())))
}

/// A value in the binary format of `ty`.
fn binary_value(ty: &Type, bytes: &[u8]) -> Result<ScalarValue, ParamError> {
    Ok(match *ty {
        Type::BOOL => ScalarValue::Boolean(Some(exactly::<1>(bytes, ty)?[0] != 0)),
        Type::INT2 => ScalarValue::Int16(Some(i16::from_be_bytes(exactly(bytes, ty)?))),
        Type::INT4 => ScalarValue::Int32(Some(i32::from_be_bytes(exactly(bytes, ty)?))),
        Type::OID => ScalarValue::Int64(Some(u32::from_be_bytes(exactly(bytes, ty)?) as i64)),
        Type::INT8 => ScalarValue::Int64(Some(i64::from_be_bytes(exactly(bytes, ty)?))),
        Type::FLOAT4 => ScalarValue::Float32(Some(f32::from_be_bytes(exactly(bytes, ty)?))),
        Type::FLOAT8 => ScalarValue::Float64(Some(f64::from_be_bytes(exactly(bytes, ty)?))),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::JSON => ScalarValue::Utf8(Some(
            String::from_utf8(bytes.to_vec()).map_err(|_| error("22021", "the value is not valid UTF-8".into()))?,
        )),
        Type::BYTEA => ScalarValue::Binary(Some(bytes.to_vec())),
        Type::DATE => {
            let days = i32::from_be_bytes(exactly(bytes, ty)?) as i64 + POSTGRES_EPOCH_DAYS;
            ScalarValue::Date32(Some(i32::try_from(days).map_err(|_| error("22008", "date out of range".into()))?))
        }
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            let micros = i64::from_be_bytes(exactly(bytes, ty)?);
            let epoch = NaiveDate::from_ymd_opt(2000, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc());
            let at = epoch
                .and_then(|e| e.checked_add_signed(Duration::microseconds(micros)))
                .map(|t: DateTime<_>| t.timestamp_micros())
                .ok_or_else(|| error("22008", "timestamp out of range".into()))?;
            let zone = (*ty == Type::TIMESTAMPTZ).then(|| "+00:00".into());
            ScalarValue::TimestampMicrosecond(Some(at), zone)
        }
        Type::NUMERIC => ScalarValue::Utf8(Some(numeric_text(bytes)?)),
        _ => match ty.kind() {
            Kind::Array(element) => binary_array(element, bytes)?,
            _ => {
                return Err(error(
                    "22P03",
                    format!("binary values of type {} are not supported: send text", ty.name()),
                ));
            }
        },
    })
}

/// A one-dimensional binary array of `element` values, its header checked against its bytes.
fn binary_array(element: &Type, bytes: &[u8]) -> Result<ScalarValue, ParamError> {
    let invalid = |why: &str| error("22P03", format!("invalid binary array: {why}"));
    let mut rest = bytes;
    let i32_at = |rest: &mut &[u8]| -> Result<i32, ParamError> {
        let (head, tail) = rest.split_first_chunk::<4>().ok_or_else(|| invalid("it is cut short"))?;
        *rest = tail;
        Ok(i32::from_be_bytes(*head))
    };
    let dimensions = i32_at(&mut rest)?;
    let _has_nulls = i32_at(&mut rest)?;
    let element_oid = i32_at(&mut rest)? as u32;
    if element_oid != element.oid() {
        return Err(invalid(&format!("its elements are of type {element_oid}, not {}", element.oid())));
    }
    let target =
        data_type(element).ok_or_else(|| invalid(&format!("elements of type {} are not supported", element.name())))?;
    let count = match dimensions {
        0 => 0,
        1 => {
            let length = i32_at(&mut rest)?;
            let _lower_bound = i32_at(&mut rest)?;
            usize::try_from(length).map_err(|_| invalid("a negative length"))?
        }
        2..=MAX_DIMENSIONS => return Err(error("0A000", "arrays of more than one dimension are not supported".into())),
        _ => return Err(invalid(&format!("{dimensions} dimensions"))),
    };
    // Every element takes at least its 4-byte length.
    if count > rest.len() / 4 {
        return Err(invalid(&format!("it claims {count} elements in {} bytes", rest.len())));
    }
    let mut values = Vec::with_capacity(count);
    for _ in 0..count {
        let length = i32_at(&mut rest)?;
        values.push(match length {
            -1 => ScalarValue::try_from(&target).map_err(|e| error("22023", e.to_string()))?,
            length => {
                let length = usize::try_from(length).map_err(|_| invalid("a negative element length"))?;
                let (value, tail) = rest.split_at_checked(length).ok_or_else(|| invalid("an element is cut short"))?;
                rest = tail;
                cast(binary_value(element, value)?, &target)?
            }
        });
    }
    if !rest.is_empty() {
        return Err(invalid("bytes after its last element"));
    }
    Ok(ScalarValue::List(ScalarValue::new_list(&values, &target, true)))
}

/// A binary NUMERIC as decimal text.
fn numeric_text(bytes: &[u8]) -> Result<String, ParamError> {
    let invalid = || error("22P03", "invalid binary numeric".into());
    let word = |i: usize| bytes.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or_else(invalid);
    let (count, weight, sign, scale) = (word(0)? as usize, word(2)? as i16 as i64, word(4)?, word(6)? as usize);
    if bytes.len() != 8 + 2 * count || count > 1000 {
        return Err(invalid());
    }
    match sign {
        0xC000 => return Ok("NaN".into()),
        0x0000 | 0x4000 => {}
        _ => return Err(invalid()),
    }
    let digits: Vec<u16> = (0..count).map(|i| word(8 + 2 * i)).collect::<Result<_, _>>()?;
    if digits.iter().any(|d| *d > 9999) || !(-1000..=1000).contains(&weight) {
        return Err(invalid());
    }
    let group = |position: i64| -> u16 {
        usize::try_from(weight - position).ok().and_then(|i| digits.get(i)).copied().unwrap_or(0)
    };
    let mut text = String::from(if sign == 0x4000 { "-" } else { "" });
    let whole: String = (0..=weight.max(0)).rev().map(|p| format!("{:04}", group(p))).collect();
    text.push_str(match whole.trim_start_matches('0') {
        "" => "0",
        digits => digits,
    });
    if scale > 0 {
        let fraction: String = (1..=(scale as i64 + 3) / 4).map(|p| format!("{:04}", group(-p))).collect();
        text.push('.');
        text.push_str(&fraction[..scale.min(fraction.len())]);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn array_header(dimensions: i32, element: u32, count: i32) -> Vec<u8> {
        let mut bytes = Vec::new();
        for n in [dimensions, 0, element as i32, count, 1] {
            bytes.extend(n.to_be_bytes());
        }
        bytes
    }

    #[test]
    fn a_binary_array_cannot_claim_more_than_it_holds() {
        let bomb = Bytes::from(array_header(1, Type::TEXT.oid(), i32::MAX));
        let refused = decode(&[Some(bomb)], &[1], &[Type::TEXT_ARRAY.oid()], &[None]).unwrap_err();
        assert_eq!(refused.code, "22P03");
        let mut two = array_header(1, Type::TEXT.oid(), 2);
        for item in ["a", "b"] {
            two.extend((item.len() as i32).to_be_bytes());
            two.extend(item.as_bytes());
        }
        let decoded = decode(&[Some(Bytes::from(two))], &[1], &[Type::TEXT_ARRAY.oid()], &[None]).unwrap();
        assert_eq!(decoded[0].to_string(), "[a, b]");
        let wrong_element = Bytes::from(array_header(1, Type::INT4.oid(), 0));
        assert!(decode(&[Some(wrong_element)], &[1], &[Type::TEXT_ARRAY.oid()], &[None]).is_err());
    }

    #[test]
    fn text_arrays_and_scalars_take_their_target_type() {
        let list = DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)));
        let text = Bytes::from_static(br#"{"private/1","a\"b", NULL ,plain}"#);
        let decoded = decode(&[Some(text)], &[], &[], &[Some(list)]).unwrap();
        assert_eq!(decoded[0].to_string(), r#"[private/1, a"b, , plain]"#);
        let decoded = decode(&[Some(Bytes::from_static(b"2000"))], &[], &[], &[Some(DataType::Int64)]).unwrap();
        assert_eq!(decoded[0], ScalarValue::Int64(Some(2000)));
        assert_eq!(
            decode(&[Some(Bytes::from_static(b"x"))], &[], &[], &[Some(DataType::Int64)]).unwrap_err().code,
            "22P02"
        );
        assert_eq!(decode(&[None, None], &[0, 0, 0], &[], &[]).unwrap_err().code, "08P01");
        let truncated = Bytes::from_static(&[0, 0, 1]);
        assert_eq!(decode(&[Some(truncated)], &[1], &[Type::INT4.oid()], &[None]).unwrap_err().code, "22P03");
    }

    #[test]
    fn binary_numerics_become_decimal_text() {
        // 12345.678: groups 1, 2345, 6780; weight 1; scale 3.
        let mut bytes = Vec::new();
        for word in [3u16, 1, 0, 3, 1, 2345, 6780] {
            bytes.extend(word.to_be_bytes());
        }
        assert_eq!(numeric_text(&bytes).unwrap(), "12345.678");
        let mut small = Vec::new();
        for word in [1u16, 0xFFFF, 0x4000, 2, 500] {
            small.extend(word.to_be_bytes());
        }
        assert_eq!(numeric_text(&small).unwrap(), "-0.05");
    }
}
