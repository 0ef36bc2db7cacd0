//! Reading a tar archive as it arrives, entry by entry, without storing it first: what lets an
//! import push layers to the registry while the client is still uploading the rest.
//!
//! Handles what `docker save` (Go's `archive/tar`) and GNU tar write: ustar headers with a prefix,
//! GNU long names (`L`), PAX extended headers (`x`, for `path`), and base-256 sizes. Every header's
//! checksum is verified, so a file that is not a tar archive is refused at its first block.

use std::io;

use axum::body::Bytes;
use bytes::{Buf, BytesMut};
use futures_util::{Stream, StreamExt};

const BLOCK: usize = 512;
/// The longest name (GNU long-name entry) or PAX header accepted: paths are far shorter, and these
/// entries are read whole into memory.
const MAX_HEADER_ENTRY: u64 = 64 * 1024;

/// Why reading the archive failed.
#[derive(Debug)]
pub enum TarError {
    /// Not a tar archive, or a damaged one.
    Invalid(String),
    /// The archive passed the size limit.
    TooLarge,
    /// Reading the request body failed.
    Body(String),
}

/// An entry's header: its path, type and size.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: String,
    pub is_file: bool,
    pub size: u64,
}

pub struct TarStream<S> {
    body: S,
    buf: BytesMut,
    /// Bytes taken from the body so far.
    pub received: u64,
    max: u64,
}

impl<S, E> TarStream<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    pub fn new(body: S, max: u64) -> Self {
        TarStream { body, buf: BytesMut::new(), received: 0, max }
    }

    /// Reads more of the body; `false` at its end.
    async fn more(&mut self) -> Result<bool, TarError> {
        match self.body.next().await {
            Some(Ok(chunk)) => {
                self.received += chunk.len() as u64;
                if self.received > self.max {
                    return Err(TarError::TooLarge);
                }
                self.buf.extend_from_slice(&chunk);
                Ok(true)
            }
            Some(Err(e)) => Err(TarError::Body(e.to_string())),
            None => Ok(false),
        }
    }

    async fn fill(&mut self, n: usize) -> Result<(), TarError> {
        while self.buf.len() < n {
            if !self.more().await? {
                return Err(TarError::Invalid("the archive is truncated".into()));
            }
        }
        Ok(())
    }

    async fn block(&mut self) -> Result<[u8; BLOCK], TarError> {
        self.fill(BLOCK).await?;
        let mut b = [0u8; BLOCK];
        self.buf.copy_to_slice(&mut b);
        Ok(b)
    }

    /// Reads `n` bytes whole (for small entries: names, metadata files).
    pub async fn read(&mut self, n: u64) -> Result<Vec<u8>, TarError> {
        let n = usize::try_from(n).map_err(|_| TarError::Invalid("entry too large".into()))?;
        self.fill(n).await?;
        let data = self.buf.split_to(n).to_vec();
        self.skip_padding(n as u64).await?;
        Ok(data)
    }

    /// Up to `left` bytes of the current entry's data, as they arrive.
    pub async fn chunk(&mut self, left: u64) -> Result<Bytes, TarError> {
        if self.buf.is_empty() && !self.more().await? {
            return Err(TarError::Invalid("the archive is truncated".into()));
        }
        let n = (self.buf.len() as u64).min(left) as usize;
        Ok(self.buf.split_to(n).freeze())
    }

    /// Skips the zero padding after `size` bytes of data.
    pub async fn skip_padding(&mut self, size: u64) -> Result<(), TarError> {
        let pad = ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize;
        self.fill(pad).await?;
        self.buf.advance(pad);
        Ok(())
    }

    pub async fn skip(&mut self, size: u64) -> Result<(), TarError> {
        let mut left = size;
        while left > 0 {
            left -= self.chunk(left).await?.len() as u64;
        }
        self.skip_padding(size).await
    }

    /// The next entry's header, or `None` at the end of the archive.
    pub async fn next(&mut self) -> Result<Option<Entry>, TarError> {
        let mut long_name: Option<String> = None;
        loop {
            // A body that ends cleanly between entries, without the end blocks, is cut short.
            if self.buf.is_empty() && !self.more().await? {
                return Err(TarError::Invalid("the archive is truncated (no end-of-archive marker)".into()));
            }
            let block = self.block().await?;
            if block.iter().all(|b| *b == 0) {
                return Ok(None);
            }
            if !checksum_ok(&block) {
                return Err(TarError::Invalid(format!(
                    "not a tar archive (bad header checksum at byte {})",
                    self.received - self.buf.len() as u64 - BLOCK as u64
                )));
            }
            let size = parse_size(&block[124..136]).ok_or_else(|| TarError::Invalid("bad entry size".into()))?;
            if matches!(block[156], b'L' | b'x' | b'g') && size > MAX_HEADER_ENTRY {
                return Err(TarError::Invalid(format!("an extended header of {size} bytes is not a `docker save` archive's")));
            }
            match block[156] {
                b'L' => {
                    let name = self.read(size).await?;
                    long_name = Some(String::from_utf8_lossy(&name).trim_end_matches('\0').to_owned());
                }
                b'x' => {
                    let pax = self.read(size).await?;
                    if let Some(p) = pax_path(&pax) {
                        long_name = Some(p);
                    }
                }
                b'g' => self.skip(size).await?,
                kind => {
                    let path = match long_name.take() {
                        Some(p) => p,
                        None => ustar_path(&block),
                    };
                    let path = path.trim_start_matches("./").to_owned();
                    return Ok(Some(Entry { path, is_file: kind == b'0' || kind == 0, size }));
                }
            }
        }
    }
}

fn checksum_ok(block: &[u8; BLOCK]) -> bool {
    let sum: u64 = block.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { 32 } else { u64::from(*b) }).sum();
    parse_octal(&block[148..156]) == Some(sum)
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(field).ok()?.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// Octal, or GNU base-256 (high bit set) for sizes of 8 GiB and more.
fn parse_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        return Some(field[1..].iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)));
    }
    parse_octal(field)
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

fn ustar_path(block: &[u8; BLOCK]) -> String {
    let name = cstr(&block[0..100]);
    let prefix = if &block[257..262] == b"ustar" { cstr(&block[345..500]) } else { String::new() };
    if prefix.is_empty() { name } else { format!("{prefix}/{name}") }
}

/// The `path` record of a PAX extended header (`"<len> path=<value>\n"` records).
fn pax_path(data: &[u8]) -> Option<String> {
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest.iter().position(|b| *b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        if len > rest.len() || len <= space {
            return None;
        }
        let record = &rest[space + 1..len];
        if let Some(v) = record.strip_prefix(b"path=") {
            return Some(String::from_utf8_lossy(v.strip_suffix(b"\n").unwrap_or(v)).into_owned());
        }
        rest = &rest[len..];
    }
    None
}

impl From<io::Error> for TarError {
    fn from(e: io::Error) -> Self {
        TarError::Invalid(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn stream(data: Vec<u8>, chunk: usize) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        let chunks: Vec<Result<Bytes, String>> = data.chunks(chunk).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        futures_util::stream::iter(chunks)
    }

    #[tokio::test]
    async fn reads_entries_long_names_and_data_in_any_chunking() {
        let long = format!("{}/layer.tar", "a".repeat(150));
        let data = archive(&[("manifest.json", b"[1]"), (&long, &[7u8; 1500])]);
        for chunk in [1, 7, 512, 4096] {
            let mut t = TarStream::new(stream(data.clone(), chunk), u64::MAX);
            let e = t.next().await.unwrap().unwrap();
            assert_eq!((e.path.as_str(), e.size), ("manifest.json", 3));
            assert_eq!(t.read(e.size).await.unwrap(), b"[1]");
            let e = t.next().await.unwrap().unwrap();
            assert_eq!((e.path.as_str(), e.size, e.is_file), (long.as_str(), 1500, true));
            let mut got = Vec::new();
            while (got.len() as u64) < e.size {
                got.extend_from_slice(&t.chunk(e.size - got.len() as u64).await.unwrap());
            }
            t.skip_padding(e.size).await.unwrap();
            assert_eq!(got, vec![7u8; 1500]);
            assert!(t.next().await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn refuses_oversized_extended_headers_before_reading_them() {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(10 * 1024 * 1024);
        h.set_cksum();
        let mut t = TarStream::new(stream(h.as_bytes().to_vec(), 512), u64::MAX);
        assert!(matches!(t.next().await, Err(TarError::Invalid(m)) if m.contains("extended header")));
    }

    #[tokio::test]
    async fn refuses_garbage_truncation_and_excess() {
        let mut t = TarStream::new(stream(b"not a tar archive at all".repeat(40), 64), u64::MAX);
        assert!(matches!(t.next().await, Err(TarError::Invalid(_))));
        let data = archive(&[("a", &[1u8; 2000])]);
        let mut t = TarStream::new(stream(data[..1000].to_vec(), 100), u64::MAX);
        let e = t.next().await.unwrap().unwrap();
        assert!(matches!(t.skip(e.size).await, Err(TarError::Invalid(_))));
        let mut t = TarStream::new(stream(data, 512), 1024);
        let r = async {
            let e = t.next().await?.unwrap();
            t.skip(e.size).await
        };
        assert!(matches!(r.await, Err(TarError::TooLarge)));
    }
}
