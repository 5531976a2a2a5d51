//! One client header block: decode it with the client's HPACK state, replace an `:authority` that
//! h2 would reject, encode it again for h2 and cut it into HEADERS + CONTINUATION frames.

use bytes::BytesMut;
use loona_hpack::decoder::DecoderError;
use loona_hpack::{Decoder, Encoder};

use super::frame::{self, FrameHeader};

/// What an invalid `:authority` becomes: what the kubelet itself and KubeVirt send.
pub const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

/// Every peer accepts frames of this size (the smallest SETTINGS_MAX_FRAME_SIZE allowed), so
/// splitting at it never depends on what the server advertised.
pub const MAX_FRAME_PAYLOAD: usize = 16_384;

/// Whether h2 accepts `value` as a request's `:authority`. h2's server runs exactly this parse
/// (`Authority::from_maybe_shared`) and resets the stream with PROTOCOL_ERROR when it fails.
pub fn is_valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// A header block gathered from a HEADERS frame and its CONTINUATION frames.
pub struct Block {
    pub stream: u32,
    pub end_stream: bool,
    /// The PRIORITY fields (exclusive bit + dependency, weight), kept as sent.
    pub priority: Option<[u8; 5]>,
    /// The HPACK bytes: every fragment, padding removed.
    pub fragment: Vec<u8>,
    /// The frames exactly as received, forwarded instead when the block cannot be rewritten.
    pub raw: Vec<u8>,
}

/// The HPACK state of one connection, both ways through the layer.
///
/// The decoder mirrors the client's encoder, so every block is decoded, even one that needs no
/// change: skipping one would leave later indexed references pointing at the wrong entries.
/// The encoder writes for h2's decoder with a dynamic table of size 0 (announced by a size
/// update at the start of the first block): nothing it sends is ever indexed, so h2's table stays
/// empty and cannot drift from ours whatever SETTINGS_HEADER_TABLE_SIZE the server announces.
/// Compression does not matter on this hop: h2 reads the bytes from memory.
pub struct Rewriter {
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
    announced_zero_table: bool,
    scratch: Vec<u8>,
    rewritten: u64,
}

impl Default for Rewriter {
    fn default() -> Self {
        let mut encoder = Encoder::new();
        encoder.set_max_table_size(0);
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(frame::DEFAULT_HEADER_TABLE_SIZE);
        Self {
            decoder,
            encoder,
            announced_zero_table: false,
            scratch: Vec::new(),
            rewritten: 0,
        }
    }
}

impl Rewriter {
    /// The largest dynamic table the client may ask for (what the server announced and the
    /// client acknowledged, or is about to).
    pub fn set_max_allowed_table_size(&mut self, size: usize) {
        self.decoder.set_max_allowed_table_size(size);
    }

    /// How many `:authority` values were replaced on this connection.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Appends the block, re-encoded, as frames to `out`. On a decoding error nothing is
    /// appended and the decoder's state is no longer the client's.
    pub fn rewrite(&mut self, block: &Block, out: &mut BytesMut) -> Result<(), DecoderError> {
        let mut encoded = std::mem::take(&mut self.scratch);
        encoded.clear();
        if !self.announced_zero_table {
            // Dynamic table size update to 0 (RFC 7541 6.3), allowed at the start of a block.
            encoded.push(0x20);
        }
        let encoder = &mut self.encoder;
        let mut replaced = 0;
        let decoded = self.decoder.decode_with_cb(&block.fragment, |name, value| {
            let value: &[u8] = if name.as_ref() == b":authority" && !is_valid_authority(&value) {
                replaced += 1;
                REPLACEMENT_AUTHORITY
            } else {
                &value
            };
            // Writing into a Vec cannot fail.
            let _ = encoder.encode_header_into((&name, value), &mut encoded);
        });
        if let Err(e) = decoded {
            self.scratch = encoded;
            return Err(e);
        }
        self.announced_zero_table = true;
        self.rewritten += replaced;
        write_frames(block, &encoded, out);
        self.scratch = encoded;
        Ok(())
    }
}

/// HEADERS (with the block's END_STREAM and PRIORITY, never PADDED) then CONTINUATION frames,
/// each payload at most [`MAX_FRAME_PAYLOAD`], END_HEADERS on the last.
fn write_frames(block: &Block, encoded: &[u8], out: &mut BytesMut) {
    let prio_len = if block.priority.is_some() { 5 } else { 0 };
    let first_len = encoded.len().min(MAX_FRAME_PAYLOAD - prio_len);
    let (first, mut rest) = encoded.split_at(first_len);
    let mut flags = 0;
    if block.end_stream {
        flags |= frame::FLAG_END_STREAM;
    }
    if rest.is_empty() {
        flags |= frame::FLAG_END_HEADERS;
    }
    if block.priority.is_some() {
        flags |= frame::FLAG_PRIORITY;
    }
    out.reserve(encoded.len() + prio_len + 9 * (2 + encoded.len() / MAX_FRAME_PAYLOAD));
    FrameHeader {
        len: first.len() + prio_len,
        kind: frame::HEADERS,
        flags,
        stream: block.stream,
    }
    .write(out);
    if let Some(p) = &block.priority {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let n = rest.len().min(MAX_FRAME_PAYLOAD);
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        FrameHeader {
            len: n,
            kind: frame::CONTINUATION,
            flags: if rest.is_empty() {
                frame::FLAG_END_HEADERS
            } else {
                0
            },
            stream: block.stream,
        }
        .write(out);
        out.extend_from_slice(chunk);
    }
}
