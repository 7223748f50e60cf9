//! Reading and writing control-protocol frames ([`mesh_proto::control`]'s framing) on any
//! async byte stream, with a per-reader size limit.
//!
//! [`FrameReader::next`] is cancel-safe: partial frames stay in the reader's buffer, so a
//! session can `select!` on it alongside netmap updates. The buffer never holds more than
//! one frame, so memory per connection is bounded by the limit.

use std::future::Future;
use std::io;

use bytes::Bytes;

use mesh_proto::control::{body_len, decode, encode, FrameError, MAX_FRAME};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Buffer capacity kept between frames; a larger buffer is released after its frame.
const KEEP_CAPACITY: usize = 16 * 1024;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream failed.
    #[error("reading: {0}")]
    Io(#[from] io::Error),
    /// The frame is malformed or above the protocol limit.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The frame is above this reader's limit.
    #[error("frame of {len} bytes exceeds the {limit}-byte limit for this message")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The reader's limit.
        limit: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
}

/// Why a frame could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The stream failed.
    #[error("writing: {0}")]
    Io(#[from] io::Error),
    /// The message does not fit in one frame.
    #[error("message of {0} bytes exceeds the {MAX_FRAME}-byte frame limit")]
    TooLarge(usize),
}

/// Reads frames from `R`, one at a time.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    limit: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader refusing bodies above `limit` (and above [`MAX_FRAME`] in any case).
    pub fn new(inner: R, limit: usize) -> FrameReader<R> {
        FrameReader {
            inner,
            buf: Vec::new(),
            limit: limit.min(MAX_FRAME),
        }
    }

    /// Changes the limit for the frames that follow (capped at [`MAX_FRAME`]).
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.min(MAX_FRAME);
    }

    /// The next message, or `None` when the stream ended cleanly between frames.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ReadError> {
        self.next_with(|body| Ok(decode(body)?)).await
    }

    /// The next message from a coordinator as member `me` reads it (JSON or binary, see
    /// [`mesh_proto::control::decode_server`]); for tests and tools that play a node.
    pub async fn next_server(
        &mut self,
        me: &mesh_proto::Key,
    ) -> Result<Option<mesh_proto::control::ServerMsg>, ReadError> {
        self.next_with(|body| Ok(mesh_proto::control::decode_server(body, me)?))
            .await
    }

    async fn next_with<T>(
        &mut self,
        decode: impl Fn(&[u8]) -> Result<T, ReadError>,
    ) -> Result<Option<T>, ReadError> {
        loop {
            let want = if self.buf.len() >= 4 {
                let header = [self.buf[0], self.buf[1], self.buf[2], self.buf[3]];
                let len = body_len(header)?;
                if len > self.limit {
                    return Err(ReadError::TooLarge {
                        len,
                        limit: self.limit,
                    });
                }
                if self.buf.len() == 4 + len {
                    let msg = decode(&self.buf[4..]);
                    if self.buf.capacity() > KEEP_CAPACITY {
                        // Do not hold on to the memory of one large frame.
                        self.buf = Vec::new();
                    } else {
                        self.buf.clear();
                    }
                    return Ok(Some(msg?));
                }
                4 + len - self.buf.len()
            } else {
                4 - self.buf.len()
            };
            // Read at most the rest of this frame, so the buffer holds one frame only.
            let mut chunk = [0u8; 4096];
            let n = want.min(chunk.len());
            let got = self.inner.read(&mut chunk[..n]).await?;
            if got == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
            }
            self.buf.extend_from_slice(&chunk[..got]);
        }
    }
}

/// Writes one message as a frame and flushes.
pub async fn write<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), WriteError> {
    let frame = encode(msg);
    if frame.len() - 4 > MAX_FRAME {
        return Err(WriteError::TooLarge(frame.len() - 4));
    }
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

/// Where a session writes whole frames (length prefix included). Frames are `Bytes` so
/// one encoding can go to every session: a QUIC stream ([`QuicWriter`]) queues the shared
/// buffer itself; any other `AsyncWrite` (tests' in-memory pipes) copies it.
pub trait FrameSink {
    /// Writes `frames` in order, then flushes.
    fn send_frames(&mut self, frames: Vec<Bytes>) -> impl Future<Output = io::Result<()>> + Send;
}

impl<W: AsyncWrite + Unpin + Send> FrameSink for W {
    async fn send_frames(&mut self, frames: Vec<Bytes>) -> io::Result<()> {
        for f in &frames {
            self.write_all(f).await?;
        }
        self.flush().await
    }
}

/// A QUIC send stream as a [`FrameSink`]: `write_all_chunks` hands quinn the shared
/// buffers (no copy until they are packetised).
#[derive(Debug)]
pub struct QuicWriter(pub quinn::SendStream);

impl FrameSink for QuicWriter {
    async fn send_frames(&mut self, mut frames: Vec<Bytes>) -> io::Result<()> {
        self.0
            .write_all_chunks(&mut frames)
            .await
            .map_err(io::Error::from)
    }
}

/// Encodes `msg` as a JSON frame for a [`FrameSink`].
pub fn json_frame<T: Serialize>(msg: &T) -> Result<Bytes, WriteError> {
    let frame = encode(msg);
    if frame.len() - 4 > MAX_FRAME {
        return Err(WriteError::TooLarge(frame.len() - 4));
    }
    Ok(Bytes::from(frame))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::control::ServerMsg;

    fn pending(s: &str) -> ServerMsg {
        ServerMsg::Pending { message: s.into() }
    }

    #[tokio::test]
    async fn reads_frames_in_pieces_and_ends_cleanly() {
        let (mut a, b) = tokio::io::duplex(64);
        let mut r = FrameReader::new(b, 1024);
        let mut bytes = encode(&pending("one"));
        bytes.extend(encode(&pending("two")));
        let writer = tokio::spawn(async move {
            for piece in bytes.chunks(3) {
                a.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        assert_eq!(r.next::<ServerMsg>().await.unwrap(), Some(pending("one")));
        assert_eq!(r.next::<ServerMsg>().await.unwrap(), Some(pending("two")));
        writer.await.unwrap();
        assert!(r.next::<ServerMsg>().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn refuses_oversized_truncated_and_malformed_frames() {
        let mut r = FrameReader::new(&[0u8, 0, 4, 1][..], 1024);
        assert!(matches!(
            r.next::<ServerMsg>().await,
            Err(ReadError::TooLarge { len: 1025, .. })
        ));
        let mut r = FrameReader::new(&[0xffu8, 0xff, 0xff, 0xff][..], usize::MAX);
        assert!(matches!(
            r.next::<ServerMsg>().await,
            Err(ReadError::Frame(FrameError::TooLarge(_)))
        ));
        let mut r = FrameReader::new(&[0u8, 0, 0, 9, b'{'][..], 1024);
        assert!(matches!(
            r.next::<ServerMsg>().await,
            Err(ReadError::Truncated)
        ));
        let mut r = FrameReader::new(&[0u8, 0, 0, 2, b'{', b'}'][..], 1024);
        assert!(matches!(
            r.next::<ServerMsg>().await,
            Err(ReadError::Frame(FrameError::Json(_)))
        ));
    }

    #[tokio::test]
    async fn next_is_cancel_safe() {
        let (mut a, b) = tokio::io::duplex(64);
        let mut r = FrameReader::new(b, 1024);
        let frame = encode(&pending("x"));
        a.write_all(&frame[..5]).await.unwrap();
        // Cancelled halfway through a frame: nothing is lost.
        let cancelled =
            tokio::time::timeout(std::time::Duration::from_millis(20), r.next::<ServerMsg>()).await;
        assert!(cancelled.is_err());
        a.write_all(&frame[5..]).await.unwrap();
        assert_eq!(r.next::<ServerMsg>().await.unwrap(), Some(pending("x")));
    }
}
