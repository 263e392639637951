//! One client's byte stream: TLS negotiation, the framing of its messages with a size limit
//! checked before any of a message's body is kept, and the buffered writing of replies.
//! Before authentication a message may be a few KB ([`MAX_OPENING_BYTES`]); after it,
//! [`MAX_MESSAGE_BYTES`].

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use datafusion_postgres::pgwire;
use pgwire::messages::PgWireBackendMessage;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::frontend::{self, GSS_REQUEST, Malformed, Message, Opening, SSL_REQUEST};

/// The largest message a client may send before it has authenticated (its startup packet
/// and its password).
pub const MAX_OPENING_BYTES: usize = 10_000;
/// The largest message an authenticated client may send (a statement, a Bind and its
/// parameters).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// Replies are written out once this much is buffered (and at the end of each exchange).
const WRITE_BATCH_BYTES: usize = 64 << 10;

/// Why no message could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed the connection.
    Closed,
    Io(io::Error),
    TooLarge {
        length: usize,
        limit: usize,
    },
    /// The framing is lost: nothing more can be read.
    Malformed(Malformed),
    /// A whole message whose contents are wrong; the next one can be read.
    Content(Malformed),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::UnexpectedEof => ReadError::Closed,
            _ => ReadError::Io(e),
        }
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed => f.write_str("the client closed the connection"),
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::TooLarge { length, limit } => {
                write!(f, "a message of {length} bytes is larger than the {limit} bytes allowed here")
            }
            ReadError::Malformed(Malformed(why)) | ReadError::Content(Malformed(why)) => f.write_str(why),
        }
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// While the plain stream is in the TLS acceptor's hands.
    Switching,
}

fn switching() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the connection is switching to TLS")
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Switching => Poll::Ready(Err(switching())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Switching => Poll::Ready(Err(switching())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Switching => Poll::Ready(Err(switching())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Switching => Poll::Ready(Err(switching())),
        }
    }
}

pub struct Wire {
    stream: Stream,
    input: BytesMut,
    output: BytesMut,
    fd: RawFd,
    pub peer: SocketAddr,
    pub secure: bool,
}

/// Tells whether a client hung up, without reading from its connection.
#[derive(Debug, Clone, Copy)]
pub struct Probe(RawFd);

impl Probe {
    /// Whether the client has closed or reset its end; what it sent stays unread.
    pub fn hung_up(&self) -> bool {
        let mut poll = libc::pollfd { fd: self.0, events: libc::POLLRDHUP, revents: 0 };
        // SAFETY: one valid pollfd and a zero timeout; the probe is only used while its
        // connection is open.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        ready > 0 && poll.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
    }
}

impl Wire {
    pub fn new(tcp: TcpStream) -> io::Result<Wire> {
        let peer = tcp.peer_addr()?;
        let _ = tcp.set_nodelay(true);
        let fd = tcp.as_raw_fd();
        Ok(Wire {
            stream: Stream::Plain(tcp),
            input: BytesMut::new(),
            output: BytesMut::new(),
            fd,
            peer,
            secure: false,
        })
    }

    /// Negotiates TLS if the client asks for it (or starts with it, as `sslnegotiation=direct`
    /// does) and reads the first packet.
    pub async fn opening(&mut self, tls: Option<&TlsAcceptor>) -> Result<Opening, ReadError> {
        let mut first = [0u8; 1];
        let direct = match &self.stream {
            Stream::Plain(tcp) => tcp.peek(&mut first).await? == 1 && first[0] == 0x16,
            _ => false,
        };
        if direct {
            self.start_tls(tls).await?;
        }
        // An SSL and a GSS request may each come once before the startup packet.
        for _ in 0..3 {
            let body = self.packet().await?;
            let code = body.get(..4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            match code {
                Some(SSL_REQUEST) if !self.secure => {
                    // Bytes sent after the request, before the answer, would be read as if they
                    // had come over TLS: refused.
                    if !self.input.is_empty() {
                        return Err(ReadError::Malformed(Malformed("unencrypted data after the SSL request".into())));
                    }
                    match tls {
                        Some(_) => {
                            self.stream_write(b"S").await?;
                            self.start_tls(tls).await?;
                        }
                        None => self.stream_write(b"N").await?,
                    }
                }
                Some(GSS_REQUEST) => self.stream_write(b"N").await?,
                _ => return frontend::opening(body.freeze()).map_err(ReadError::Malformed),
            }
        }
        Err(ReadError::Malformed(Malformed("too many negotiation requests".into())))
    }

    pub fn probe(&self) -> Probe {
        Probe(self.fd)
    }

    async fn start_tls(&mut self, tls: Option<&TlsAcceptor>) -> Result<(), ReadError> {
        let Some(acceptor) = tls else {
            return Err(ReadError::Malformed(Malformed("TLS is not configured on this server".into())));
        };
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Switching) else {
            return Err(ReadError::Malformed(Malformed("TLS requested twice".into())));
        };
        self.stream = Stream::Tls(Box::new(acceptor.accept(tcp).await?));
        self.secure = true;
        Ok(())
    }

    async fn stream_write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// A length-prefixed packet of the opening (no type byte): its body after the length.
    async fn packet(&mut self) -> Result<BytesMut, ReadError> {
        self.fill(4).await?;
        let length = i32::from_be_bytes([self.input[0], self.input[1], self.input[2], self.input[3]]);
        let length = usize::try_from(length).unwrap_or(0);
        if length < 8 {
            return Err(ReadError::Malformed(Malformed(format!("invalid length of startup packet: {length}"))));
        }
        if length > MAX_OPENING_BYTES {
            return Err(ReadError::TooLarge { length, limit: MAX_OPENING_BYTES });
        }
        self.fill(length).await?;
        let mut body = self.input.split_to(length);
        body.advance(4);
        Ok(body)
    }

    /// Reads until at least `n` bytes are buffered (`n` was checked against a limit).
    async fn fill(&mut self, n: usize) -> Result<(), ReadError> {
        while self.input.len() < n {
            self.input.reserve(n - self.input.len());
            if self.stream.read_buf(&mut self.input).await? == 0 {
                return Err(ReadError::Closed);
            }
        }
        Ok(())
    }

    /// The next message, at most `limit` bytes long.
    pub async fn read(&mut self, limit: usize) -> Result<Message, ReadError> {
        self.fill(5).await?;
        let kind = self.input[0];
        let length = i32::from_be_bytes([self.input[1], self.input[2], self.input[3], self.input[4]]);
        let length = match usize::try_from(length) {
            Ok(length) if length >= 4 => length,
            _ => return Err(ReadError::Malformed(Malformed(format!("invalid message length {length}")))),
        };
        if length > limit {
            return Err(ReadError::TooLarge { length, limit });
        }
        self.fill(1 + length).await?;
        let mut frame = self.input.split_to(1 + length);
        frame.advance(5);
        frontend::message(kind, frame.freeze()).map_err(ReadError::Content)
    }

    /// Queues a reply; it is written once enough is queued, or at [`Wire::flush`].
    pub async fn send(&mut self, message: PgWireBackendMessage) -> io::Result<()> {
        message.encode(&mut self.output).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        if self.output.len() >= WRITE_BATCH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.output.is_empty() {
            let output = self.output.split();
            self.stream.write_all(&output).await?;
        }
        self.stream.flush().await
    }

    /// Closes the connection, after writing what is queued.
    pub async fn close(mut self) {
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}
