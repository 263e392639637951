//! A Postgres wire client that sends exactly the bytes a test gives it, well-formed or not:
//! for what real drivers never send (lying lengths, counts, binary parameters).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One message from the server: its type byte and body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub kind: u8,
    pub body: Vec<u8>,
}

impl Reply {
    /// The SQLSTATE of an ErrorResponse or NoticeResponse.
    pub fn code(&self) -> Option<String> {
        self.field(b'C')
    }

    pub fn message(&self) -> Option<String> {
        self.field(b'M')
    }

    pub fn severity(&self) -> Option<String> {
        self.field(b'S')
    }

    fn field(&self, wanted: u8) -> Option<String> {
        if !matches!(self.kind, b'E' | b'N') {
            return None;
        }
        let mut rest = &self.body[..];
        while let Some((&code, tail)) = rest.split_first() {
            let end = tail.iter().position(|b| *b == 0)?;
            if code == wanted {
                return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
            }
            rest = &tail[end + 1..];
        }
        None
    }
}

pub struct RawClient {
    stream: TcpStream,
}

/// A message: type byte, length, body.
pub fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![kind];
    bytes.extend((body.len() as i32 + 4).to_be_bytes());
    bytes.extend(body);
    bytes
}

pub fn cstring(text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

pub fn startup_packet(user: &str, database: &str) -> Vec<u8> {
    let mut body = 196608i32.to_be_bytes().to_vec();
    for part in ["user", user, "database", database] {
        body.extend(cstring(part));
    }
    body.push(0);
    let mut packet = (body.len() as i32 + 4).to_be_bytes().to_vec();
    packet.extend(body);
    packet
}

pub fn query(text: &str) -> Vec<u8> {
    message(b'Q', &cstring(text))
}

pub fn parse(name: &str, text: &str, types: &[u32]) -> Vec<u8> {
    let mut body = cstring(name);
    body.extend(cstring(text));
    body.extend((types.len() as i16).to_be_bytes());
    for t in types {
        body.extend(t.to_be_bytes());
    }
    message(b'P', &body)
}

/// A Bind of `parameters` (None: NULL) all in `format` (0 text, 1 binary).
pub fn bind(portal: &str, statement: &str, format: i16, parameters: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut body = cstring(portal);
    body.extend(cstring(statement));
    body.extend(1i16.to_be_bytes());
    body.extend(format.to_be_bytes());
    body.extend((parameters.len() as i16).to_be_bytes());
    for p in parameters {
        match p {
            Some(value) => {
                body.extend((value.len() as i32).to_be_bytes());
                body.extend(value);
            }
            None => body.extend((-1i32).to_be_bytes()),
        }
    }
    body.extend(0i16.to_be_bytes());
    message(b'B', &body)
}

pub fn describe_portal(name: &str) -> Vec<u8> {
    let mut body = vec![b'P'];
    body.extend(cstring(name));
    message(b'D', &body)
}

pub fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
    let mut body = cstring(portal);
    body.extend(max_rows.to_be_bytes());
    message(b'E', &body)
}

pub fn sync() -> Vec<u8> {
    message(b'S', &[])
}

impl RawClient {
    pub fn connect(address: &str) -> RawClient {
        let stream = TcpStream::connect(address).expect("the server accepts connections");
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        RawClient { stream }
    }

    /// Logs in with `password` and reads up to the first ReadyForQuery; returns the process
    /// id and secret the server gave.
    pub fn login(address: &str, password: &str) -> (RawClient, i32, i32) {
        RawClient::try_login(address, password).unwrap_or_else(|refused| panic!("login failed: {refused:?}"))
    }

    /// [`RawClient::login`], or the error the server answered.
    pub fn try_login(address: &str, password: &str) -> Result<(RawClient, i32, i32), Reply> {
        let mut client = RawClient::connect(address);
        client.send(&startup_packet("tester", "linode"));
        let asked = client.read().expect("an authentication request");
        if asked.kind == b'E' {
            return Err(asked);
        }
        assert_eq!(asked.kind, b'R', "{asked:?}");
        client.send(&message(b'p', &cstring(password)));
        let (mut pid, mut secret) = (0, 0);
        for reply in client.until_ready() {
            match reply.kind {
                b'E' => return Err(reply),
                b'K' => {
                    pid = i32::from_be_bytes(reply.body[..4].try_into().unwrap());
                    secret = i32::from_be_bytes(reply.body[4..8].try_into().unwrap());
                }
                _ => {}
            }
        }
        Ok((client, pid, secret))
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("the server reads");
    }

    /// The next message, or `None` once the server closed the connection.
    pub fn read(&mut self) -> Option<Reply> {
        let mut head = [0u8; 5];
        self.stream.read_exact(&mut head).ok()?;
        let length = i32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
        let mut body = vec![0u8; length - 4];
        self.stream.read_exact(&mut body).ok()?;
        Some(Reply { kind: head[0], body })
    }

    /// Messages up to and including the next ReadyForQuery (or until the server closes).
    pub fn until_ready(&mut self) -> Vec<Reply> {
        let mut replies = Vec::new();
        while let Some(reply) = self.read() {
            let ready = reply.kind == b'Z';
            replies.push(reply);
            if ready {
                break;
            }
        }
        replies
    }

    /// Whether the server has closed the connection (reads nothing more).
    pub fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0) | Err(_))
    }
}

/// The text of each DataRow's first column among `replies`.
pub fn first_column(replies: &[Reply]) -> Vec<String> {
    replies
        .iter()
        .filter(|r| r.kind == b'D')
        .map(|r| {
            let length = i32::from_be_bytes(r.body[2..6].try_into().unwrap()) as usize;
            String::from_utf8_lossy(&r.body[6..6 + length]).into_owned()
        })
        .collect()
}

/// The first error among `replies`.
pub fn error(replies: &[Reply]) -> Option<&Reply> {
    replies.iter().find(|r| r.kind == b'E')
}

/// A cancel request for `pid` with `secret`, on a connection of its own.
pub fn cancel(address: &str, pid: i32, secret: i32) {
    let mut stream = TcpStream::connect(address).expect("the server accepts connections");
    let mut packet = 16i32.to_be_bytes().to_vec();
    packet.extend(80877102i32.to_be_bytes());
    packet.extend(pid.to_be_bytes());
    packet.extend(secret.to_be_bytes());
    stream.write_all(&packet).unwrap();
    let _ = stream.read(&mut [0u8; 1]);
}
