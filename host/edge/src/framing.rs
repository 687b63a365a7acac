//! RFC 4571 framing, as ICE over TCP uses it (RFC 6544 section 3): each STUN message, DTLS
//! record flight or SRTP/SRTCP packet on the stream is preceded by its length, two bytes, big
//! endian. Sans-IO: bytes in, frames out.

use bytes::{Buf, BufMut, BytesMut};

/// The length prefix.
pub const PREFIX: usize = 2;

/// Why a stream's bytes are no frames the edge takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame longer than the edge takes on UDP: no browser sends one, so the stream is junk.
    #[error("a frame of {len} bytes, more than {max}")]
    TooLong { len: usize, max: usize },
    /// A zero-length frame: no STUN, DTLS or RTP packet is empty.
    #[error("an empty frame")]
    Empty,
}

/// Splits a stream's bytes into frames of at most `max` bytes; keeps at most one partial frame.
#[derive(Debug)]
pub struct Decoder {
    buffer: BytesMut,
    max: usize,
}

impl Decoder {
    /// A decoder taking frames of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self { buffer: BytesMut::with_capacity(PREFIX + max), max }
    }

    /// Room for the next read, at most one frame's worth beyond what is buffered: the decoder
    /// never holds more than a prefix and a frame of the largest size.
    pub fn buffer(&mut self) -> &mut BytesMut {
        self.buffer.reserve(PREFIX + self.max);
        &mut self.buffer
    }

    /// Takes `bytes` read from the stream.
    #[cfg(test)]
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole frame, `Ok(None)` until one is buffered, or why the stream is no good.
    pub fn next_frame(&mut self) -> Result<Option<BytesMut>, FrameError> {
        let Some(prefix) = self.buffer.get(..PREFIX) else { return Ok(None) };
        let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
        if len > self.max {
            return Err(FrameError::TooLong { len, max: self.max });
        }
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if self.buffer.len() < PREFIX + len {
            return Ok(None);
        }
        self.buffer.advance(PREFIX);
        Ok(Some(self.buffer.split_to(len)))
    }
}

/// Appends `frame` to `out`, framed; `frame` is at most 65,535 bytes (a datagram's size bounds
/// every packet the edge sends).
pub fn encode(frame: &[u8], out: &mut BytesMut) {
    debug_assert!(frame.len() <= usize::from(u16::MAX));
    out.reserve(PREFIX + frame.len());
    out.put_u16(frame.len() as u16);
    out.put_slice(frame);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_out_whole_however_the_stream_splits_them() {
        let frames: Vec<Vec<u8>> = vec![vec![0, 1, 2], vec![22; 1200], vec![0x80; 40]];
        let mut stream = BytesMut::new();
        for f in &frames {
            encode(f, &mut stream);
        }
        assert_eq!(stream.len(), 3 + 1200 + 40 + 3 * PREFIX);
        for chunk in [1, 2, 7, 500, stream.len()] {
            let mut decoder = Decoder::new(2048);
            let mut out = Vec::new();
            for piece in stream.chunks(chunk) {
                decoder.extend(piece);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    out.push(frame.to_vec());
                }
            }
            assert_eq!(out, frames, "read {chunk} bytes at a time");
        }
    }

    #[test]
    fn a_frame_over_the_bound_or_empty_ends_the_stream() {
        let mut decoder = Decoder::new(2048);
        decoder.extend(&[0x08, 0x01]);
        assert_eq!(decoder.next_frame(), Err(FrameError::TooLong { len: 2049, max: 2048 }), "known from the prefix alone");
        let mut decoder = Decoder::new(2048);
        decoder.extend(&[0, 0, 1]);
        assert_eq!(decoder.next_frame(), Err(FrameError::Empty));
        let mut decoder = Decoder::new(2048);
        decoder.extend(&[0x08]);
        assert_eq!(decoder.next_frame(), Ok(None), "half a prefix");
    }

    #[test]
    fn the_read_buffer_holds_at_most_a_prefix_and_a_frame_beyond_what_is_buffered() {
        let mut decoder = Decoder::new(100);
        let room = decoder.buffer().capacity();
        assert!((PREFIX + 100..PREFIX + 100 + 64).contains(&room), "{room}");
    }
}
