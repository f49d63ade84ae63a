//! The write side of a fetch: hash the bytes as they arrive, detect and undo
//! compression, hash the image, and write it sparsely, all in one pass.
//!
//! [`Pipeline`] is synchronous and runs on a blocking thread; the network side
//! hands it chunks through a channel ([`Msg`]). A `Reset` (the server ignored
//! `Range`) truncates the file and starts over.

use crate::decode::{Compression, Decoder, MAGIC_LEN};
use crate::ext::{ExtError, HEAD_LEN};
use crate::sparse::SparseWriter;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

/// What the network side sends to the pipeline.
#[derive(Debug)]
pub enum Msg {
    /// The next bytes of the download.
    Data(Bytes),
    /// Start over from byte 0 (the file is truncated).
    Reset,
    /// The download is complete: finish the image.
    End,
}

/// Why the pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot write the image file")]
    Write(#[source] io::Error),
    #[error("the {0} stream is corrupt or truncated")]
    Corrupt(Compression, #[source] io::Error),
    #[error(transparent)]
    Refused(ExtError),
    #[error("the download stopped before its end")]
    Aborted,
}

/// A check of the image's first [`HEAD_LEN`] bytes, run as soon as they arrive.
pub type HeadCheck = Box<dyn FnMut(&[u8]) -> Result<(), ExtError> + Send>;

/// The result of a complete pass.
#[derive(Debug)]
pub struct Written {
    /// The image file.
    pub file: File,
    /// How the download was compressed.
    pub compression: Compression,
    /// Bytes downloaded (as stored on the server).
    pub stored_len: u64,
    /// sha256 of the bytes as stored.
    pub stored_sha256: String,
    /// Apparent size of the image.
    pub image_len: u64,
    /// sha256 of the image (equal to `stored_sha256` when uncompressed;
    /// `None` when a compressed image was not asked to be hashed).
    pub image_sha256: Option<String>,
    /// Bytes written as data; the rest of the image is holes.
    pub data_bytes: u64,
}

struct ImageSink {
    hasher: Option<Sha256>,
    sparse: SparseWriter,
    failed: bool,
    head: Vec<u8>,
    check: Option<HeadCheck>,
    refused: Option<ExtError>,
}

impl ImageSink {
    /// Collects the head and runs the check once it is complete (or at the end).
    fn run_check(&mut self, buf: &[u8], at_end: bool) -> io::Result<()> {
        if self.check.is_none() {
            return Ok(());
        }
        let take = (HEAD_LEN - self.head.len()).min(buf.len());
        self.head.extend_from_slice(&buf[..take]);
        if self.head.len() < HEAD_LEN && !at_end {
            return Ok(());
        }
        let mut check = self.check.take().expect("checked above");
        if let Err(e) = check(&self.head) {
            self.refused = Some(e);
            return Err(io::Error::other("refused by the early image check"));
        }
        Ok(())
    }
}

impl Write for ImageSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.run_check(buf, false)?;
        if let Some(h) = &mut self.hasher {
            h.update(buf);
        }
        self.sparse.write(buf).inspect_err(|_| self.failed = true)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Stage {
    Detect(Vec<u8>),
    Run(Compression, Box<Decoder<ImageSink>>),
}

/// Hashes, decompresses and sparsely writes one image.
pub struct Pipeline {
    file: File,
    hash_image: bool,
    check: Option<Arc<Mutex<HeadCheck>>>,
    stored: Sha256,
    stored_len: u64,
    stage: Stage,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("stored_len", &self.stored_len)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A pipeline writing into `file` (empty). With `hash_image`, a compressed
    /// image's decompressed bytes are hashed as well.
    pub fn new(file: File, hash_image: bool) -> Self {
        Self {
            file,
            hash_image,
            check: None,
            stored: Sha256::new(),
            stored_len: 0,
            stage: Stage::Detect(Vec::with_capacity(MAGIC_LEN)),
        }
    }

    /// Runs `check` on the image's first [`HEAD_LEN`] bytes as soon as they
    /// are decoded (again after a reset); its error stops the pipeline.
    pub fn with_head_check(mut self, check: HeadCheck) -> Self {
        self.check = Some(Arc::new(Mutex::new(check)));
        self
    }

    /// Feeds the next downloaded bytes.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), PipelineError> {
        self.stored.update(data);
        self.stored_len += data.len() as u64;
        if let Stage::Detect(head) = &mut self.stage {
            let take = (MAGIC_LEN - head.len()).min(data.len());
            head.extend_from_slice(&data[..take]);
            data = &data[take..];
            if head.len() < MAGIC_LEN {
                return Ok(());
            }
            let head = std::mem::take(head);
            self.start(&head)?;
        }
        self.push(data)
    }

    /// Forgets everything and truncates the file.
    pub fn reset(&mut self) -> Result<(), PipelineError> {
        self.file.set_len(0).map_err(PipelineError::Write)?;
        self.stored = Sha256::new();
        self.stored_len = 0;
        self.stage = Stage::Detect(Vec::with_capacity(MAGIC_LEN));
        Ok(())
    }

    /// Ends the stream and returns what was written.
    pub fn finish(mut self) -> Result<Written, PipelineError> {
        if let Stage::Detect(head) = &mut self.stage {
            let head = std::mem::take(head);
            self.start(&head)?;
        }
        let Stage::Run(compression, decoder) = self.stage else {
            unreachable!("started above")
        };
        let result = decoder.finish();
        let mut sink = match result {
            Ok(sink) => sink,
            Err(e) => return Err(PipelineError::Corrupt(compression, e)),
        };
        if sink.run_check(&[], true).is_err() {
            return Err(PipelineError::Refused(sink.refused.take().expect("set")));
        }
        let stored_sha256 = hex::encode(self.stored.finalize());
        let image_sha256 = match (compression, sink.hasher) {
            (Compression::None, _) => Some(stored_sha256.clone()),
            (_, Some(h)) => Some(hex::encode(h.finalize())),
            (_, None) => None,
        };
        let out = sink.sparse.finish().map_err(PipelineError::Write)?;
        Ok(Written {
            file: out.file,
            compression,
            stored_len: self.stored_len,
            stored_sha256,
            image_len: out.len,
            image_sha256,
            data_bytes: out.data_bytes,
        })
    }

    fn start(&mut self, head: &[u8]) -> Result<(), PipelineError> {
        let compression = Compression::detect(head);
        let file = self.file.try_clone().map_err(PipelineError::Write)?;
        let check = self.check.clone().map(|c| {
            Box::new(move |head: &[u8]| (c.lock().unwrap_or_else(|e| e.into_inner()))(head))
                as HeadCheck
        });
        let sink = ImageSink {
            hasher: (self.hash_image && compression != Compression::None).then(Sha256::new),
            sparse: SparseWriter::new(file),
            failed: false,
            head: Vec::new(),
            check,
            refused: None,
        };
        let decoder = Decoder::new(compression, sink).map_err(PipelineError::Write)?;
        self.stage = Stage::Run(compression, Box::new(decoder));
        self.push(head)
    }

    fn push(&mut self, data: &[u8]) -> Result<(), PipelineError> {
        let Stage::Run(compression, decoder) = &mut self.stage else {
            return Ok(());
        };
        if data.is_empty() {
            return Ok(());
        }
        decoder.write_all(data).map_err(|e| {
            if let Some(r) = decoder.refused() {
                PipelineError::Refused(r)
            } else if decoder.inner_failed() {
                PipelineError::Write(e)
            } else {
                PipelineError::Corrupt(*compression, e)
            }
        })
    }
}

impl Decoder<ImageSink> {
    fn sink_mut(&mut self) -> &mut ImageSink {
        match self {
            Decoder::None(w) => w,
            Decoder::Zstd(d) => d.get_mut(),
            Decoder::Gzip(d) => d.get_mut(),
            Decoder::Xz(d) => d.get_mut(),
        }
    }

    fn refused(&mut self) -> Option<ExtError> {
        self.sink_mut().refused.take()
    }

    fn inner_failed(&self) -> bool {
        match self {
            Decoder::None(w) => w.failed,
            Decoder::Zstd(d) => d.get_ref().failed,
            Decoder::Gzip(d) => d.get_ref().failed,
            Decoder::Xz(d) => d.get_ref().failed,
        }
    }
}

/// Runs `pipeline` over the messages of `rx` until [`Msg::End`]; a sender
/// that goes away before it means the download failed ([`PipelineError::Aborted`]).
pub fn run_channel(
    mut pipeline: Pipeline,
    mut rx: tokio::sync::mpsc::Receiver<Msg>,
) -> Result<Written, PipelineError> {
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Data(b) => pipeline.feed(&b)?,
            Msg::Reset => pipeline.reset()?,
            Msg::End => return pipeline.finish(),
        }
    }
    Err(PipelineError::Aborted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{compress, sha256_hex};

    fn run(data: &[u8], piece: usize, hash_image: bool) -> (Written, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let mut p = Pipeline::new(File::create(&path).unwrap(), hash_image);
        for c in data.chunks(piece) {
            p.feed(c).unwrap();
        }
        let w = p.finish().unwrap();
        (w, std::fs::read(&path).unwrap())
    }

    fn sample() -> Vec<u8> {
        let mut v = vec![0u8; 1 << 20];
        v.extend((0..50_000u32).map(|i| (i * 7 % 256) as u8));
        v.extend(vec![0u8; 300_000]);
        v
    }

    #[test]
    fn raw_bytes_are_hashed_once_and_written_sparse() {
        let data = sample();
        let (w, back) = run(&data, 3, false);
        assert_eq!(back, data);
        assert_eq!(w.compression, Compression::None);
        assert_eq!(w.stored_sha256, sha256_hex(&data));
        assert_eq!(w.image_sha256.as_deref(), Some(w.stored_sha256.as_str()));
        assert!(w.data_bytes < 60_000, "{}", w.data_bytes);
    }

    #[test]
    fn compressed_bytes_are_decoded_and_both_digests_computed() {
        let data = sample();
        for c in [Compression::Zstd, Compression::Gzip, Compression::Xz] {
            let packed = compress(&data, c);
            let (w, back) = run(&packed, 1000, true);
            assert_eq!(back, data, "{c}");
            assert_eq!(w.compression, c);
            assert_eq!(w.stored_sha256, sha256_hex(&packed));
            assert_eq!(w.image_sha256, Some(sha256_hex(&data)));
            assert_eq!(w.image_len, data.len() as u64);
        }
    }

    #[test]
    fn tiny_and_empty_streams() {
        assert_eq!(run(b"abc", 1, true).1, b"abc");
        let (w, back) = run(b"", 1, true);
        assert!(back.is_empty());
        assert_eq!(w.stored_sha256, sha256_hex(b""));
    }

    #[test]
    fn reset_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let mut p = Pipeline::new(File::create(&path).unwrap(), true);
        p.feed(&compress(b"garbage garbage", Compression::Gzip)[..10])
            .unwrap();
        p.reset().unwrap();
        p.feed(b"hello world").unwrap();
        let w = p.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
        assert_eq!(w.stored_sha256, sha256_hex(b"hello world"));
    }

    #[test]
    fn the_head_check_sees_the_first_decoded_bytes_and_can_stop_the_pass() {
        let data = sample();
        let packed = compress(&data, Compression::Gzip);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let dir = tempfile::tempdir().unwrap();
        let p = Pipeline::new(File::create(dir.path().join("i")).unwrap(), false);
        let mut p = p.with_head_check(Box::new(move |head| {
            s2.lock().unwrap().push(head.to_vec());
            Err(ExtError::NotExt)
        }));
        let err = p.feed(&packed).err().or_else(|| p.finish().err()).unwrap();
        assert!(
            matches!(err, PipelineError::Refused(ExtError::NotExt)),
            "{err}"
        );
        assert_eq!(*seen.lock().unwrap(), [data[..HEAD_LEN].to_vec()]);

        let mut p = Pipeline::new(File::create(dir.path().join("j")).unwrap(), false)
            .with_head_check(Box::new(|_| Ok(())));
        p.feed(b"short").unwrap();
        assert_eq!(
            p.finish().unwrap().image_len,
            5,
            "an accepting check changes nothing"
        );
    }

    #[test]
    fn corrupt_compressed_data_is_reported_as_such() {
        let mut packed = compress(&sample(), Compression::Zstd)[..4].to_vec();
        packed.extend([0xff; 4096]);
        let dir = tempfile::tempdir().unwrap();
        let mut p = Pipeline::new(File::create(dir.path().join("i")).unwrap(), true);
        let err = p.feed(&packed).err().or_else(|| p.finish().err()).unwrap();
        assert!(
            matches!(err, PipelineError::Corrupt(Compression::Zstd, _)),
            "{err}"
        );
    }
}
