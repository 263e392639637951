//! Measuring gzip data as it streams: decompressed bytes are counted, never kept, and the
//! count stops at a limit (so a gzip bomb costs no memory). Used by uploads on both ends.

use std::io::Write;

use flate2::write::MultiGzDecoder;

/// A sink that counts what is written to it and refuses to go past `limit`.
pub struct Counter {
    pub bytes: u64,
    limit: u64,
}

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes += buf.len() as u64;
        if self.bytes > self.limit {
            return Err(std::io::Error::new(std::io::ErrorKind::FileTooLarge, "over the decompressed limit"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A decoder of (possibly multi-member) gzip data that counts the decompressed bytes.
pub fn measuring_decoder(limit: u64) -> MultiGzDecoder<Counter> {
    MultiGzDecoder::new(Counter { bytes: 0, limit })
}

/// Whether a decoding error means the data decompressed past the limit.
pub fn is_over_limit(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::FileTooLarge
}
