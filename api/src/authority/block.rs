//! One client header block: decode it with the client's HPACK state, replace an `:authority` that
//! h2 would reject, encode it again for h2 and cut it into HEADERS + CONTINUATION frames.

use bytes::BytesMut;
use httlib_hpack::{Decoder, Encoder};

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
/// The encoder writes for h2's decoder and never indexes (static-table references and literals
/// without indexing, never-indexed fields kept never-indexed); a size update to 0 at the start of
/// the first block empties h2's table for good, so it cannot drift from ours whatever
/// SETTINGS_HEADER_TABLE_SIZE the server announces. No Huffman coding either: h2 reads these
/// bytes from memory, so smaller would only be slower.
pub struct Rewriter {
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
    announced_zero_table: bool,
    fields: Vec<(Vec<u8>, Vec<u8>, u8)>,
    rewritten: u64,
}

impl Default for Rewriter {
    fn default() -> Self {
        Self {
            decoder: Decoder::with_dynamic_size(frame::DEFAULT_HEADER_TABLE_SIZE as u32),
            encoder: Encoder::default(),
            announced_zero_table: false,
            fields: Vec::new(),
            rewritten: 0,
        }
    }
}

impl Rewriter {
    /// The largest dynamic table the client may ask for (what the server announced and the
    /// client acknowledged, or is about to).
    pub fn set_max_allowed_table_size(&mut self, size: usize) {
        self.decoder
            .set_max_dynamic_size(u32::try_from(size).unwrap_or(u32::MAX));
    }

    /// How many `:authority` values were replaced on this connection.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Appends the block, re-encoded, as frames to `out`. On an error nothing is appended and
    /// the decoder's state is no longer the client's.
    pub fn rewrite(&mut self, block: &Block, out: &mut BytesMut) -> Result<(), RewriteError> {
        let mut fragment = block.fragment.clone();
        self.fields.clear();
        self.decoder
            .decode(&mut fragment, &mut self.fields)
            .map_err(RewriteError::Decode)?;
        let mut encoded = Vec::with_capacity(block.fragment.len() + 64);
        if !self.announced_zero_table {
            // Dynamic table size update to 0 (RFC 7541 6.3), allowed at the start of a block.
            encoded.push(0x20);
        }
        for (name, mut value, flags) in self.fields.drain(..) {
            if name == b":authority" && !is_valid_authority(&value) {
                self.rewritten += 1;
                value = REPLACEMENT_AUTHORITY.to_vec();
            }
            let flags = Encoder::BEST_FORMAT | (flags & Decoder::NEVER_INDEXED);
            self.encoder
                .encode((name, value, flags), &mut encoded)
                .map_err(RewriteError::Encode)?;
        }
        self.announced_zero_table = true;
        write_frames(block, &encoded, out);
        Ok(())
    }
}

/// Why a block was handed on unchanged; only ever shown through `Debug`.
#[derive(Debug)]
#[allow(dead_code)]
pub enum RewriteError {
    Decode(httlib_hpack::DecoderError),
    Encode(httlib_hpack::EncoderError),
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
