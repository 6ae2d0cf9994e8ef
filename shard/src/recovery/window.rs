//! A forward-moving window over a segment file, filled by large aligned
//! reads: what the recovery scan reads through.

use crate::{
    error::Result,
    format::segment::{align_up, BLOCK_SIZE},
    storage::StorageFile,
};

/// Bytes read from a segment per I/O during recovery.
const SCAN_CHUNK: usize = 1 << 20;

/// A forward-moving window over a file, filled by large aligned reads.
pub(super) struct Window<'a, F: StorageFile> {
    file: &'a F,
    pub(super) file_len: u64,
    /// File position of `bytes[0]`; block aligned.
    start: u64,
    bytes: Vec<u8>,
    /// Bytes read from disk so far.
    pub(super) read: u64,
}

impl<'a, F: StorageFile> Window<'a, F> {
    pub(super) async fn new(file: &'a F) -> Result<Self> {
        Ok(Window {
            file_len: file.size().await?,
            file,
            start: 0,
            bytes: Vec::with_capacity(SCAN_CHUNK * 2),
            read: 0,
        })
    }

    /// Up to `len` bytes at `pos`: fewer only at the end of the file.
    pub(super) async fn get(&mut self, pos: u64, len: usize) -> Result<&[u8]> {
        let want_end = (pos + len as u64).min(self.file_len).max(pos);
        let have_end = self.start + self.bytes.len() as u64;
        if pos < self.start || want_end > have_end {
            let keep_from = pos - pos % BLOCK_SIZE;
            if keep_from >= self.start && keep_from <= have_end {
                self.bytes.drain(..(keep_from - self.start) as usize);
            } else {
                self.bytes.clear();
            }
            self.start = keep_from;
            while self.start + (self.bytes.len() as u64) < want_end {
                let at = self.start + self.bytes.len() as u64;
                let n = (align_up(want_end - at) as usize).max(SCAN_CHUNK);
                let chunk = self.file.read_at(at, n).await?;
                if chunk.is_empty() {
                    break;
                }
                self.read += chunk.len() as u64;
                self.bytes.extend_from_slice(&chunk);
            }
        }
        let from = ((pos - self.start) as usize).min(self.bytes.len());
        let to = ((want_end - self.start) as usize).min(self.bytes.len());
        Ok(&self.bytes[from..to])
    }
}
