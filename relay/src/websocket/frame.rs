//! One WebSocket frame's header (RFC 6455 §5.2): read from what a client sent, and written
//! before what the relay sends. A client's frames must be masked; control frames are short
//! and whole; RSV1 marks the first frame of a compressed message, and only when
//! permessage-deflate was negotiated; any other reserved bit or opcode is an error.

use bytes::BufMut;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// The next part of a fragmented data message.
    Continue,
    /// The first (or only) frame of a text message.
    Text,
    /// The first (or only) frame of a binary message.
    Binary,
    /// The close frame.
    Close,
    /// A ping.
    Ping,
    /// A pong.
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Self::Continue,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xa => Self::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Self::Continue => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xa,
        }
    }

    /// Whether this is a control frame (close, ping, pong).
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// Longest payload of a control frame.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A client frame's header, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The last frame of its message.
    pub fin: bool,
    /// RSV1: the message this frame starts is compressed.
    pub compressed: bool,
    /// What the frame carries.
    pub opcode: OpCode,
    /// The key the payload is masked with.
    pub mask: [u8; 4],
    /// Bytes of the header.
    pub header_len: usize,
    /// Bytes of the payload.
    pub payload_len: usize,
}

/// A frame the relay does not accept.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// A reserved bit is set that no extension gives a meaning (close 1002).
    #[error("reserved bits set without an extension defining them")]
    ReservedBits,
    /// The opcode is not one RFC 6455 defines (close 1002).
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    /// A client frame without a mask (close 1002).
    #[error("client frame not masked")]
    Unmasked,
    /// A control frame longer than 125 bytes or fragmented (close 1002).
    #[error("control frame too long or fragmented")]
    BadControl,
    /// A 64-bit length with its top bit set (close 1002).
    #[error("frame length out of range")]
    BadLength,
    /// The payload is longer than the relay accepts (close 1009).
    #[error("frame larger than the message bound")]
    TooBig,
}

/// Reads the header at the start of `buf`: `Ok(None)` until all of it is there. RSV1 is
/// accepted on a text or binary frame only when `deflate` was negotiated; a payload longer
/// than `max_payload` is refused before it is read.
pub fn parse(buf: &[u8], deflate: bool, max_payload: usize) -> Result<Option<Header>, FrameError> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    let fin = first & 0x80 != 0;
    let (rsv1, rsv23) = (first & 0x40 != 0, first & 0x30 != 0);
    let opcode = OpCode::from_bits(first & 0x0f).ok_or(FrameError::UnknownOpcode(first & 0x0f))?;
    if rsv23 || (rsv1 && !(deflate && matches!(opcode, OpCode::Text | OpCode::Binary))) {
        return Err(FrameError::ReservedBits);
    }
    if second & 0x80 == 0 {
        return Err(FrameError::Unmasked);
    }
    let (len, at) = match second & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(b) => (u64::from_be_bytes(b), 10),
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    if len >> 63 != 0 {
        return Err(FrameError::BadLength);
    }
    if opcode.is_control() && (!fin || len > MAX_CONTROL_PAYLOAD as u64) {
        return Err(FrameError::BadControl);
    }
    let payload_len = usize::try_from(len).map_err(|_| FrameError::TooBig)?;
    if payload_len > max_payload {
        return Err(FrameError::TooBig);
    }
    let Some(mask) = buf
        .get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
    else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        compressed: rsv1,
        opcode,
        mask,
        header_len: at + 4,
        payload_len,
    }))
}

/// Unmasks (or masks) `payload` with `mask`.
pub fn apply_mask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// Writes the header of an unmasked, unfragmented server frame of `len` bytes.
pub fn write_header(out: &mut impl BufMut, compressed: bool, opcode: OpCode, len: usize) {
    let rsv1 = if compressed { 0x40 } else { 0 };
    out.put_u8(0x80 | rsv1 | opcode.bits());
    write_length(out, 0, len);
}

/// Writes a frame's second byte (the mask bit `masked`, 0x80 or 0, and the length) and
/// the extended length, in the shortest of the three forms.
pub fn write_length(out: &mut impl BufMut, masked: u8, len: usize) {
    match len {
        0..=125 => out.put_u8(masked | len as u8),
        126..=0xffff => {
            out.put_u8(masked | 126);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(masked | 127);
            out.put_u64(len as u64);
        }
    }
}

/// A whole client frame: `first` (FIN, RSV bits and opcode, as given, valid or not), then
/// `payload` masked with `mask`. What a client sends; for tests and fuzzing.
pub fn client_frame(first: u8, mask: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.put_u8(first);
    write_length(&mut out, 0x80, payload.len());
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame with the given first byte.
    fn client(first: u8, payload: &[u8]) -> Vec<u8> {
        client_frame(first, [1, 2, 3, 4], payload)
    }

    #[test]
    fn reads_the_three_lengths_and_waits_for_a_whole_header() {
        for len in [0, 125, 126, 65535, 65536] {
            let bytes = client(0x81, &vec![b'a'; len]);
            let header = parse(&bytes, false, 1 << 20).unwrap().unwrap();
            assert_eq!(header.payload_len, len);
            assert_eq!(header.header_len + len, bytes.len());
            assert!(header.fin && !header.compressed);
            assert_eq!(header.opcode, OpCode::Text);
            for cut in 0..header.header_len {
                assert_eq!(
                    parse(&bytes[..cut], false, 1 << 20),
                    Ok(None),
                    "{len} {cut}"
                );
            }
        }
    }

    #[test]
    fn refuses_what_rfc_6455_forbids() {
        let refused = |first: u8, payload: &[u8], deflate: bool| {
            parse(&client(first, payload), deflate, 1000).unwrap_err()
        };
        assert_eq!(refused(0x83, b"", false), FrameError::UnknownOpcode(3));
        assert_eq!(refused(0x8b, b"", false), FrameError::UnknownOpcode(0xb));
        assert_eq!(refused(0xc1, b"x", false), FrameError::ReservedBits);
        assert_eq!(refused(0xa1, b"x", true), FrameError::ReservedBits);
        assert_eq!(refused(0x91, b"x", true), FrameError::ReservedBits);
        // RSV1 only on the first frame of a data message.
        assert_eq!(refused(0xc0, b"x", true), FrameError::ReservedBits);
        assert_eq!(refused(0xc9, b"x", true), FrameError::ReservedBits);
        assert_eq!(refused(0x09, b"x", false), FrameError::BadControl);
        assert_eq!(refused(0x89, &[0; 126], false), FrameError::BadControl);
        assert_eq!(refused(0x81, &[0; 1001], false), FrameError::TooBig);
        assert_eq!(
            parse(&[0x81, 0x05, b'h', b'e', b'l', b'l', b'o'], false, 100),
            Err(FrameError::Unmasked)
        );
        let mut huge = vec![0x82, 0xff];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(parse(&huge, false, 100), Err(FrameError::BadLength));
        let header = parse(&client(0xc1, b"x"), true, 1000).unwrap().unwrap();
        assert!(header.compressed);
    }

    #[test]
    fn writes_server_headers_unmasked() {
        for (len, want) in [
            (5, vec![0x81, 5]),
            (126, vec![0x81, 126, 0, 126]),
            (65536, vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let mut out = Vec::new();
            write_header(&mut out, false, OpCode::Text, len);
            assert_eq!(out, want);
        }
        let mut out = Vec::new();
        write_header(&mut out, true, OpCode::Text, 3);
        assert_eq!(out, [0xc1, 3]);
    }
}
