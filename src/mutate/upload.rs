/*! Sending a local file to an upload URL (`EXEC … post_upload_image @file='disk.img.gz'`).

The file is checked before any request (it exists, it is gzip, it is within the compressed
limit; a warning when the disk image inside is not one unpartitioned ext3/ext4 filesystem),
then streamed with its length declared, decompressed on the side to measure it: past the
decoded limit the upload is aborted. Bytes sent are reported to the client's progress
callback. */

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use flate2::read::GzDecoder;
use tokio::io::AsyncReadExt;

use crate::api::{ApiClient, Event};
use crate::error::Error;
use crate::gzip;
use crate::provider::{Upload, UploadContent, UploadEncoding};

const CHUNK: usize = 1 << 20;

fn refuse(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Upload { path: path.to_path_buf(), reason: reason.to_string() }
}

/// Why a file cannot be read, and what to do about it. `path` is where it was looked for,
/// `shown` the name the statement gave it: a relative name is taken from the working directory
/// only when the two are the same (a server resolves it in the directory it allows, which it
/// does not tell).
fn unreadable(path: &Path, shown: &Path, error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => {
            let relative = match std::env::current_dir() {
                Ok(dir) if path.is_relative() && path == shown => format!(" (relative to {})", dir.display()),
                _ => String::new(),
            };
            format!(
                "no such file{relative}: give @file the path of a gzip'd raw disk image, e.g. @file='/tmp/disk.img.gz'"
            )
        }
        std::io::ErrorKind::PermissionDenied => format!("cannot be read ({error}): check its permissions"),
        _ => format!("cannot be read: {error}"),
    }
}

/// Checks the file at `path` (named `shown` in errors) before anything is sent; returns what
/// looks wrong with its content.
pub fn inspect(path: &Path, shown: &Path, spec: &Upload) -> Result<Option<&'static str>, Error> {
    let metadata = std::fs::metadata(path).map_err(|e| refuse(shown, unreadable(path, shown, &e)))?;
    if !metadata.is_file() {
        return Err(refuse(shown, "not a file"));
    }
    if metadata.len() > spec.max_bytes {
        return Err(refuse(
            shown,
            format!("{} bytes is over the upload limit of {} bytes", metadata.len(), spec.max_bytes),
        ));
    }
    match spec.encoding {
        UploadEncoding::Gzip => {
            let mut magic = [0u8; 2];
            File::open(path)
                .and_then(|mut f| f.read_exact(&mut magic))
                .map_err(|_| refuse(shown, "not gzip data (too short)"))?;
            if magic != [0x1f, 0x8b] {
                return Err(refuse(shown, "not gzip data: compress the raw disk image first (gzip disk.img)"));
            }
        }
    }
    if spec.content == Some(UploadContent::ExtDiskImage) {
        let mut head = Vec::with_capacity(4096);
        let _ = GzDecoder::new(File::open(path).map_err(|e| refuse(shown, e))?).take(4096).read_to_end(&mut head);
        return Ok(disk_image_warning(&head));
    }
    Ok(None)
}

/// What is wrong, if anything, with the first bytes of a raw disk image for Linode: it must
/// hold one unpartitioned ext3/ext4 filesystem.
fn disk_image_warning(head: &[u8]) -> Option<&'static str> {
    let ext_magic = head.get(1080..1082) == Some(&[0x53, 0xEF]);
    let mbr = head.get(510..512) == Some(&[0x55, 0xAA]);
    if mbr && !ext_magic {
        return Some(
            "the disk image has a partition table; Linode expects a single unpartitioned ext3/ext4 filesystem",
        );
    }
    if !ext_magic {
        return Some("the disk image does not hold an ext2/3/4 filesystem; Linode expects ext3 or ext4");
    }
    // s_feature_compat & HAS_JOURNAL: ext3 and ext4 have one, ext2 does not.
    let compat = head.get(1116..1120).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(0);
    (compat & 0x4 == 0).then_some("the filesystem is ext2 (no journal); Linode expects ext3 or ext4")
}

/// Streams the file at `path` (named `shown` in errors) to `url`; returns its decompressed
/// size in bytes.
pub async fn send(api: &ApiClient, url: &str, path: &Path, shown: &Path, spec: &Upload) -> Result<u64, Error> {
    let file = tokio::fs::File::open(path).await.map_err(|e| refuse(shown, e))?;
    let length = file.metadata().await.map_err(|e| refuse(shown, e))?.len();
    let limit = spec.max_decoded_bytes.unwrap_or(u64::MAX);
    let decoder = Arc::new(Mutex::new(gzip::measuring_decoder(limit)));
    let problem: Arc<Mutex<Option<String>>> = Arc::default();
    let progress = api.progress().clone();
    progress.report(Event::UploadStarted { bytes: length });
    let _ended = progress.until_dropped(Event::UploadEnded);
    let chunks = futures::stream::unfold(Some(file), {
        let (decoder, problem, progress) = (decoder.clone(), problem.clone(), progress.clone());
        move |file| {
            let (decoder, problem, progress) = (decoder.clone(), problem.clone(), progress.clone());
            async move {
                let mut file = file?;
                let mut buffer = vec![0u8; CHUNK];
                let read = match file.read(&mut buffer).await {
                    Ok(0) => return None,
                    Ok(n) => n,
                    Err(e) => return Some((Err(e), None)),
                };
                buffer.truncate(read);
                if let Err(e) = decoder.lock().unwrap_or_else(|e| e.into_inner()).write_all(&buffer) {
                    let reason = match gzip::is_over_limit(&e) {
                        true => format!("it decompresses to more than {limit} bytes"),
                        false => format!("it is not valid gzip data ({e})"),
                    };
                    *problem.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.clone());
                    return Some((Err(std::io::Error::other(reason)), None));
                }
                progress.report(Event::Uploaded { bytes: read as u64 });
                Some((Ok(buffer), Some(file)))
            }
        }
    });
    let body = reqwest::Body::wrap_stream(chunks);
    let sent = api.put_stream(url, &spec.content_type, length, body).await;
    if let Some(reason) = problem.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Err(refuse(shown, format!("upload aborted: {reason}")));
    }
    sent?;
    let mut decoder = decoder.lock().unwrap_or_else(|e| e.into_inner());
    decoder.try_finish().map_err(|e| refuse(shown, format!("the gzip data is incomplete or corrupt ({e})")))?;
    Ok(decoder.get_ref().bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_what_linode_accepts() {
        let mut ext4 = vec![0u8; 2048];
        ext4[1080..1082].copy_from_slice(&[0x53, 0xEF]);
        ext4[1116] = 0x4;
        assert_eq!(disk_image_warning(&ext4), None);
        let mut ext2 = ext4.clone();
        ext2[1116] = 0;
        assert!(disk_image_warning(&ext2).unwrap().contains("ext2"));
        let mut partitioned = vec![0u8; 2048];
        partitioned[510..512].copy_from_slice(&[0x55, 0xAA]);
        assert!(disk_image_warning(&partitioned).unwrap().contains("partition table"));
        assert!(disk_image_warning(&[0u8; 100]).unwrap().contains("ext2/3/4"));
    }
}
