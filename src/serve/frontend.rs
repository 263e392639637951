//! The messages a client sends, decoded from their bytes with every count and length checked
//! against what the message holds: a malformed message is an error for its sender, never a
//! panic or an allocation it only claims to need.

use bytes::Bytes;

/// Protocol codes a startup packet may carry instead of a protocol version.
pub const SSL_REQUEST: i32 = 80877103;
pub const GSS_REQUEST: i32 = 80877104;
pub const CANCEL_REQUEST: i32 = 80877102;
/// Protocol 3.0, the one this server speaks.
pub const PROTOCOL_3_0: i32 = 196608;

/// What a message that cannot be read is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

/// The first packet of a connection, after any TLS negotiation.
#[derive(Debug)]
pub enum Opening {
    Startup { version: i32, parameters: Vec<(String, String)> },
    Cancel { pid: i32, secret: i32 },
}

/// A message of an authenticated connection (or the password of one authenticating).
#[derive(Debug)]
pub enum Message {
    Query(String),
    Parse {
        name: String,
        query: String,
        types: Vec<u32>,
    },
    Bind {
        portal: String,
        statement: String,
        parameter_formats: Vec<i16>,
        parameters: Vec<Option<Bytes>>,
        result_formats: Vec<i16>,
    },
    Describe {
        portal: bool,
        name: String,
    },
    Execute {
        portal: String,
        max_rows: u32,
    },
    Close {
        portal: bool,
        name: String,
    },
    Sync,
    Flush,
    Terminate,
    Password(String),
    /// CopyData, CopyDone, CopyFail outside a COPY FROM STDIN, which is never started.
    Copy,
    /// FunctionCall and anything else: answered with an error.
    Unsupported(u8),
}

/// Reads the fields of one message body; every read checks what is left.
struct Reader {
    body: Bytes,
    what: &'static str,
}

impl Reader {
    fn malformed(&self, why: &str) -> Malformed {
        Malformed(format!("malformed {} message: {why}", self.what))
    }

    fn take(&mut self, n: usize) -> Result<Bytes, Malformed> {
        match n <= self.body.len() {
            true => Ok(self.body.split_to(n)),
            false => Err(self.malformed("it is shorter than its contents say")),
        }
    }

    fn i16(&mut self) -> Result<i16, Malformed> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, Malformed> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A count of items each at least `min_bytes` long, checked against the bytes left.
    fn count(&mut self, min_bytes: usize) -> Result<usize, Malformed> {
        let n = self.i16()?;
        let n = usize::try_from(n).map_err(|_| self.malformed("a negative count"))?;
        match n * min_bytes <= self.body.len() {
            true => Ok(n),
            false => Err(self.malformed("a count larger than the message")),
        }
    }

    fn string(&mut self) -> Result<String, Malformed> {
        let end = self.body.iter().position(|b| *b == 0).ok_or_else(|| self.malformed("a string without its end"))?;
        let text = self.take(end)?;
        self.take(1)?;
        String::from_utf8(text.to_vec()).map_err(|_| self.malformed("text that is not UTF-8"))
    }

    fn end(self) -> Result<(), Malformed> {
        match self.body.is_empty() {
            true => Ok(()),
            false => Err(self.malformed("bytes after its end")),
        }
    }
}

/// The first packet's body (after its length): a startup or a cancel request.
pub fn opening(body: Bytes) -> Result<Opening, Malformed> {
    let mut r = Reader { body, what: "startup" };
    let code = r.i32()?;
    if code == CANCEL_REQUEST {
        r.what = "cancel request";
        let (pid, secret) = (r.i32()?, r.i32()?);
        r.end()?;
        return Ok(Opening::Cancel { pid, secret });
    }
    if code >> 16 != 3 {
        return Err(Malformed(format!("unsupported frontend protocol {}.{}", code >> 16, code & 0xffff)));
    }
    let mut parameters = Vec::new();
    loop {
        let name = r.string()?;
        if name.is_empty() {
            break;
        }
        let value = r.string()?;
        parameters.push((name, value));
    }
    r.end()?;
    Ok(Opening::Startup { version: code, parameters })
}

/// A message's body by its type byte.
pub fn message(kind: u8, body: Bytes) -> Result<Message, Malformed> {
    let what = match kind {
        b'Q' => "Query",
        b'P' => "Parse",
        b'B' => "Bind",
        b'D' => "Describe",
        b'E' => "Execute",
        b'C' => "Close",
        b'p' => "password",
        _ => "",
    };
    let mut r = Reader { body, what };
    let message = match kind {
        b'Q' => Message::Query(r.string()?),
        b'P' => {
            let (name, query) = (r.string()?, r.string()?);
            let n = r.count(4)?;
            let types = (0..n).map(|_| r.i32().map(|t| t as u32)).collect::<Result<_, _>>()?;
            Message::Parse { name, query, types }
        }
        b'B' => {
            let (portal, statement) = (r.string()?, r.string()?);
            let n = r.count(2)?;
            let parameter_formats = (0..n).map(|_| r.i16()).collect::<Result<_, _>>()?;
            let n = r.count(4)?;
            let mut parameters = Vec::with_capacity(n);
            for _ in 0..n {
                let length = r.i32()?;
                parameters.push(match length {
                    -1 => None,
                    length if length >= 0 => Some(r.take(length as usize)?),
                    _ => return Err(r.malformed("a negative parameter length")),
                });
            }
            let n = r.count(2)?;
            let result_formats = (0..n).map(|_| r.i16()).collect::<Result<_, _>>()?;
            Message::Bind { portal, statement, parameter_formats, parameters, result_formats }
        }
        b'D' | b'C' => {
            let portal = match r.take(1)?[0] {
                b'P' => true,
                b'S' => false,
                other => return Err(r.malformed(&format!("target {:?} is neither S nor P", other as char))),
            };
            let name = r.string()?;
            match kind {
                b'D' => Message::Describe { portal, name },
                _ => Message::Close { portal, name },
            }
        }
        b'E' => {
            let portal = r.string()?;
            let max_rows = r.i32()?;
            Message::Execute { portal, max_rows: max_rows.max(0) as u32 }
        }
        b'S' => Message::Sync,
        b'H' => Message::Flush,
        b'X' => Message::Terminate,
        b'p' => Message::Password(r.string()?),
        b'd' | b'c' | b'f' => return Ok(Message::Copy),
        other => return Ok(Message::Unsupported(other)),
    };
    r.end()?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(parameters: &[u8]) -> Vec<u8> {
        let mut body = b"\0\0".to_vec();
        body.extend(0i16.to_be_bytes());
        body.extend(parameters);
        body.extend(0i16.to_be_bytes());
        body
    }

    #[test]
    fn counts_and_lengths_are_checked_against_the_message() {
        let mut one = 1i16.to_be_bytes().to_vec();
        one.extend(3i32.to_be_bytes());
        one.extend(b"abc");
        assert!(
            matches!(message(b'B', Bytes::from(bind(&one))), Ok(Message::Bind { parameters, .. }) if parameters.len() == 1)
        );
        let mut claims = i16::MAX.to_be_bytes().to_vec();
        claims.extend(3i32.to_be_bytes());
        assert!(message(b'B', Bytes::from(bind(&claims))).is_err());
        let mut long = 1i16.to_be_bytes().to_vec();
        long.extend(i32::MAX.to_be_bytes());
        assert!(message(b'B', Bytes::from(bind(&long))).is_err());
        assert!(message(b'Q', Bytes::from_static(b"SELECT 1")).is_err(), "no terminator");
        assert!(message(b'Q', Bytes::from_static(b"SELECT 1\0x")).is_err(), "bytes after the end");
        assert!(message(b'D', Bytes::from_static(b"Xname\0")).is_err());
        assert!(matches!(message(b'F', Bytes::new()), Ok(Message::Unsupported(b'F'))));
        let mut parse = b"s\0SELECT $1\0".to_vec();
        parse.extend(5i16.to_be_bytes());
        assert!(message(b'P', Bytes::from(parse)).is_err());
    }

    #[test]
    fn reads_startup_and_cancel_packets() {
        let mut startup = PROTOCOL_3_0.to_be_bytes().to_vec();
        startup.extend(b"user\0me\0database\0linode\0\0");
        match opening(Bytes::from(startup)).unwrap() {
            Opening::Startup { parameters, .. } => assert_eq!(parameters[1], ("database".into(), "linode".into())),
            other => panic!("{other:?}"),
        }
        let mut cancel = CANCEL_REQUEST.to_be_bytes().to_vec();
        cancel.extend(7i32.to_be_bytes());
        cancel.extend(9i32.to_be_bytes());
        assert!(matches!(opening(Bytes::from(cancel)), Ok(Opening::Cancel { pid: 7, secret: 9 })));
        assert!(opening(Bytes::from_static(&[0, 2, 0, 0])).is_err());
    }
}
