//! The client-to-server direction: parse frames as bytes arrive, hold back a header block until
//! its END_HEADERS, rewrite it, forward everything else as it came.

use bytes::{Buf, BytesMut};

use super::block::{Block, Rewriter};
use super::frame::{self, FrameHeader, HEADER_LEN};
use super::outbound::TableSizes;

/// A header block larger than this (as sent, all its frames) is not rewritten but handed on as
/// is (the connection then fails in h2). Far above real gRPC metadata (hyper's default limit on
/// a decoded header list is 16 KiB); it bounds what a client can make the layer buffer, and the
/// decoder's work, which grows faster than linearly in the number of fields of one block.
pub const MAX_BLOCK_BYTES: usize = 64 * 1024;

enum Phase {
    /// Bytes of the client preface matched so far.
    Preface(usize),
    Frames,
    /// Not HTTP/2 as expected, or a block that could not be rewritten: from here on every byte
    /// goes through unchanged, so h2 sees the client's own bytes and answers them itself
    /// (usually with the connection error the bytes deserve).
    Passthrough,
}

pub struct Inbound {
    phase: Phase,
    /// Payload bytes of a forwarded frame still to come.
    forward: usize,
    block: Option<Block>,
    pub rewriter: Rewriter,
}

impl Default for Inbound {
    fn default() -> Self {
        Self {
            phase: Phase::Preface(0),
            forward: 0,
            block: None,
            rewriter: Rewriter::default(),
        }
    }
}

impl Inbound {
    pub fn is_passthrough(&self) -> bool {
        matches!(self.phase, Phase::Passthrough)
    }

    /// Moves what can be decided from `input` to `out`. Bytes left in `input` wait for more.
    pub fn process(&mut self, input: &mut BytesMut, out: &mut BytesMut, sizes: &mut TableSizes) {
        loop {
            match self.phase {
                Phase::Passthrough => {
                    out.extend_from_slice(input);
                    input.clear();
                    return;
                }
                Phase::Preface(matched) => {
                    let want = &frame::PREFACE[matched..];
                    let n = want.len().min(input.len());
                    if input[..n] != want[..n] {
                        self.phase = Phase::Passthrough;
                        continue;
                    }
                    out.extend_from_slice(&input[..n]);
                    input.advance(n);
                    if matched + n < frame::PREFACE.len() {
                        self.phase = Phase::Preface(matched + n);
                        return;
                    }
                    self.phase = Phase::Frames;
                }
                Phase::Frames => {
                    if !self.frame(input, out, sizes) {
                        return;
                    }
                }
            }
        }
    }

    /// Handles at most one frame (or part of a forwarded one). False when `input` has too
    /// little to go on.
    fn frame(&mut self, input: &mut BytesMut, out: &mut BytesMut, sizes: &mut TableSizes) -> bool {
        if self.forward > 0 {
            let n = self.forward.min(input.len());
            if n == 0 {
                return false;
            }
            out.extend_from_slice(&input[..n]);
            input.advance(n);
            self.forward -= n;
            return true;
        }
        let Some(head) = input.first_chunk::<HEADER_LEN>() else {
            return false;
        };
        let head = FrameHeader::parse(head);
        let total = HEADER_LEN + head.len;
        let held = self.block.as_ref().map_or(0, |b| b.raw.len());
        let in_block = self.block.is_some();
        let continues = in_block
            && head.kind == frame::CONTINUATION
            && self.block.as_ref().is_some_and(|b| b.stream == head.stream);
        if in_block && !continues {
            // Only CONTINUATION of the same stream may follow an open block (RFC 9113 6.10).
            self.give_up(out);
            return true;
        }
        if continues || head.kind == frame::HEADERS {
            if held + total > MAX_BLOCK_BYTES {
                self.give_up(out);
                return true;
            }
            if input.len() < total {
                input.reserve(total - input.len());
                return false;
            }
            let raw = input.split_to(total);
            if continues {
                let block = self.block.as_mut().expect("checked above");
                block.fragment.extend_from_slice(&raw[HEADER_LEN..]);
                block.raw.extend_from_slice(&raw);
            } else {
                let Some(payload) = frame::headers_payload(head.flags, &raw[HEADER_LEN..]) else {
                    out.extend_from_slice(&raw);
                    self.phase = Phase::Passthrough;
                    return true;
                };
                self.block = Some(Block {
                    stream: head.stream,
                    end_stream: head.flags & frame::FLAG_END_STREAM != 0,
                    priority: payload.priority,
                    fragment: payload.fragment.to_vec(),
                    raw: raw.to_vec(),
                });
            }
            if head.flags & frame::FLAG_END_HEADERS != 0 {
                self.finish(out, sizes);
            }
            return true;
        }
        if head.kind == frame::SETTINGS && head.flags & frame::FLAG_ACK != 0 && head.stream == 0 {
            sizes.client_acked();
        }
        out.extend_from_slice(&input[..HEADER_LEN]);
        input.advance(HEADER_LEN);
        self.forward = head.len;
        true
    }

    fn finish(&mut self, out: &mut BytesMut, sizes: &TableSizes) {
        let block = self.block.take().expect("a block is open");
        self.rewriter.set_max_allowed_table_size(sizes.allowed());
        if self.rewriter.rewrite(&block, out).is_err() {
            // h2 decodes the same bytes and closes the connection with COMPRESSION_ERROR.
            out.extend_from_slice(&block.raw);
            self.phase = Phase::Passthrough;
        }
    }

    /// Forwards the open block as received and stops interpreting the connection.
    fn give_up(&mut self, out: &mut BytesMut) {
        if let Some(block) = self.block.take() {
            out.extend_from_slice(&block.raw);
        }
        self.phase = Phase::Passthrough;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        FrameHeader {
            len: payload.len(),
            kind,
            flags,
            stream,
        }
        .write(&mut out);
        out.extend_from_slice(payload);
        out.to_vec()
    }

    fn client_bytes() -> Vec<u8> {
        let mut enc = loona_hpack::Encoder::new();
        let mut bytes = frame::PREFACE.to_vec();
        bytes.extend(frame(frame::SETTINGS, 0, 0, &[]));
        for stream in [1u32, 3, 5] {
            let block = enc.encode([
                (&b":method"[..], &b"POST"[..]),
                (b":path", b"/v1beta1.Registration/Register"),
                (b":authority", b"tmp%2Fkubelet.sock"),
            ]);
            let (a, b) = block.split_at(block.len() / 2);
            bytes.extend(frame(frame::HEADERS, 0, stream, a));
            bytes.extend(frame(
                frame::CONTINUATION,
                frame::FLAG_END_HEADERS,
                stream,
                b,
            ));
            bytes.extend(frame(0x0, frame::FLAG_END_STREAM, stream, &[0, 0, 0, 0, 0]));
        }
        bytes
    }

    fn run(chunks: impl Iterator<Item = Vec<u8>>) -> (Vec<u8>, u64) {
        let mut inbound = Inbound::default();
        let mut sizes = TableSizes::default();
        let (mut input, mut out) = (BytesMut::new(), BytesMut::new());
        for c in chunks {
            input.extend_from_slice(&c);
            inbound.process(&mut input, &mut out, &mut sizes);
        }
        assert!(!inbound.is_passthrough(), "passthrough");
        assert!(input.is_empty(), "left {input:?}");
        (out.to_vec(), inbound.rewriter.rewritten())
    }

    #[test]
    fn byte_at_a_time_gives_the_same_bytes_as_all_at_once() {
        let bytes = client_bytes();
        let (whole, n) = run(std::iter::once(bytes.clone()));
        let (split, m) = run(bytes.iter().map(|b| vec![*b]));
        assert_eq!(whole, split);
        assert_eq!((n, m), (3, 3));
        let mut dec = loona_hpack::Decoder::new();
        // Past preface and SETTINGS: the first rewritten block, now one HEADERS frame.
        let first = &whole[24 + 9..];
        let head = FrameHeader::parse(first[..9].try_into().unwrap());
        assert_eq!(head.kind, frame::HEADERS);
        assert_ne!(head.flags & frame::FLAG_END_HEADERS, 0);
        let headers = dec.decode(&first[9..9 + head.len]).unwrap();
        assert!(headers.contains(&(b":authority".to_vec(), b"localhost".to_vec())));
    }

    #[test]
    fn not_http2_goes_through_untouched() {
        let mut inbound = Inbound::default();
        let mut sizes = TableSizes::default();
        let mut input = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
        let mut out = BytesMut::new();
        inbound.process(&mut input, &mut out, &mut sizes);
        assert_eq!(&out[..], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(inbound.is_passthrough());
    }
}
