//! HTTP/2 framing (RFC 9113 section 4): just the frame header and the constants the layer reads.

use bytes::{BufMut, BytesMut};

/// What every client sends before its first frame (RFC 9113 section 3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADER_LEN: usize = 9;

pub const HEADERS: u8 = 0x1;
pub const SETTINGS: u8 = 0x4;
pub const CONTINUATION: u8 = 0x9;

pub const FLAG_END_STREAM: u8 = 0x1;
pub const FLAG_ACK: u8 = 0x1;
pub const FLAG_END_HEADERS: u8 = 0x4;
pub const FLAG_PADDED: u8 = 0x8;
pub const FLAG_PRIORITY: u8 = 0x20;

pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
/// The HPACK dynamic table size before any SETTINGS (RFC 9113 section 6.5.2).
pub const DEFAULT_HEADER_TABLE_SIZE: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHeader {
    pub fn parse(b: &[u8; HEADER_LEN]) -> Self {
        Self {
            len: (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            // The reserved high bit is ignored on receipt.
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    pub fn write(&self, out: &mut BytesMut) {
        debug_assert!(self.len < 1 << 24);
        out.put_u8((self.len >> 16) as u8);
        out.put_u8((self.len >> 8) as u8);
        out.put_u8(self.len as u8);
        out.put_u8(self.kind);
        out.put_u8(self.flags);
        out.put_u32(self.stream);
    }
}

/// The payload of a HEADERS frame without its padding, and its PRIORITY fields.
pub struct HeadersPayload<'a> {
    pub priority: Option<[u8; 5]>,
    pub fragment: &'a [u8],
}

/// Splits a HEADERS payload; `None` when the padding or priority fields do not fit, which h2
/// answers with a connection error of its own.
pub fn headers_payload(flags: u8, payload: &[u8]) -> Option<HeadersPayload<'_>> {
    let mut body = payload;
    let mut pad = 0;
    if flags & FLAG_PADDED != 0 {
        let (&n, rest) = body.split_first()?;
        pad = usize::from(n);
        body = rest;
    }
    let mut priority = None;
    if flags & FLAG_PRIORITY != 0 {
        let fields: [u8; 5] = body.get(..5)?.try_into().ok()?;
        priority = Some(fields);
        body = &body[5..];
    }
    let fragment = body.get(..body.len().checked_sub(pad)?)?;
    Some(HeadersPayload { priority, fragment })
}
