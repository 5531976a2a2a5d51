//! The server-to-client direction goes through untouched; the layer only watches it for
//! SETTINGS_HEADER_TABLE_SIZE, the bound on the client's HPACK table that the layer decodes.

use std::collections::VecDeque;

use super::frame::{self, DEFAULT_HEADER_TABLE_SIZE, FrameHeader, HEADER_LEN};

/// The dynamic table size the client's encoder may use: the server's SETTINGS value, in force
/// once the client acknowledges it (RFC 9113 6.5.3). While SETTINGS are unacknowledged the
/// larger of the old and new values is allowed, since the client may already use either.
#[derive(Debug)]
pub struct TableSizes {
    acked: usize,
    /// One entry per server SETTINGS frame the client has not acknowledged yet, in order.
    pending: VecDeque<Option<usize>>,
}

impl Default for TableSizes {
    fn default() -> Self {
        Self {
            acked: DEFAULT_HEADER_TABLE_SIZE,
            pending: VecDeque::new(),
        }
    }
}

impl TableSizes {
    pub fn allowed(&self) -> usize {
        self.pending
            .iter()
            .flatten()
            .copied()
            .fold(self.acked, usize::max)
    }

    fn server_sent(&mut self, header_table_size: Option<usize>) {
        self.pending.push_back(header_table_size);
    }

    pub fn client_acked(&mut self) {
        if let Some(Some(size)) = self.pending.pop_front() {
            self.acked = size;
        }
    }
}

/// Follows the frames the server writes, however its writes split them.
#[derive(Default)]
pub struct Outbound {
    head: [u8; HEADER_LEN],
    head_len: usize,
    /// Payload bytes of the current frame still to come.
    remaining: usize,
    /// The payload of a SETTINGS frame being read (None: the current payload is skipped).
    settings: Option<Vec<u8>>,
}

impl Outbound {
    pub fn observe(&mut self, mut data: &[u8], sizes: &mut TableSizes) {
        while !data.is_empty() {
            if self.remaining == 0 && self.settings.is_none() {
                let n = (HEADER_LEN - self.head_len).min(data.len());
                self.head[self.head_len..self.head_len + n].copy_from_slice(&data[..n]);
                self.head_len += n;
                data = &data[n..];
                if self.head_len < HEADER_LEN {
                    return;
                }
                self.head_len = 0;
                let head = FrameHeader::parse(&self.head);
                self.remaining = head.len;
                if head.kind == frame::SETTINGS && head.flags & frame::FLAG_ACK == 0 {
                    self.settings = Some(Vec::with_capacity(head.len));
                }
            }
            let n = self.remaining.min(data.len());
            if let Some(buf) = &mut self.settings {
                buf.extend_from_slice(&data[..n]);
            }
            data = &data[n..];
            self.remaining -= n;
            if self.remaining == 0
                && let Some(payload) = self.settings.take()
            {
                sizes.server_sent(header_table_size(&payload));
            }
        }
    }
}

/// The last SETTINGS_HEADER_TABLE_SIZE in a SETTINGS payload (6-byte entries).
fn header_table_size(payload: &[u8]) -> Option<usize> {
    payload
        .chunks_exact(6)
        .rev()
        .find(|e| u16::from_be_bytes([e[0], e[1]]) == frame::SETTINGS_HEADER_TABLE_SIZE)
        .map(|e| u32::from_be_bytes([e[2], e[3], e[4], e[5]]) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(entries: &[(u16, u32)]) -> Vec<u8> {
        let mut f = vec![
            0,
            0,
            (entries.len() * 6) as u8,
            frame::SETTINGS,
            0,
            0,
            0,
            0,
            0,
        ];
        for (id, v) in entries {
            f.extend_from_slice(&id.to_be_bytes());
            f.extend_from_slice(&v.to_be_bytes());
        }
        f
    }

    #[test]
    fn table_size_follows_server_settings_split_anywhere_and_applies_on_ack() {
        let mut out = Outbound::default();
        let mut sizes = TableSizes::default();
        let mut bytes = settings(&[(0x3, 100), (0x1, 8192)]);
        // A DATA frame and an ACK in between must not be taken for SETTINGS.
        bytes.extend_from_slice(&[0, 0, 2, 0x0, 0, 0, 0, 0, 1, 0xaa, 0xbb]);
        bytes.extend_from_slice(&[0, 0, 0, frame::SETTINGS, frame::FLAG_ACK, 0, 0, 0, 0]);
        bytes.extend(settings(&[(0x1, 1024)]));
        for b in &bytes {
            out.observe(std::slice::from_ref(b), &mut sizes);
        }
        assert_eq!(
            sizes.allowed(),
            8192,
            "either may be in use before the client's ACKs"
        );
        sizes.client_acked();
        assert_eq!(sizes.allowed(), 8192);
        sizes.client_acked();
        assert_eq!(sizes.allowed(), 1024);
    }

    #[test]
    fn settings_without_a_table_size_keep_the_default() {
        let mut out = Outbound::default();
        let mut sizes = TableSizes::default();
        out.observe(&settings(&[(0x4, 65_535)]), &mut sizes);
        out.observe(&settings(&[]), &mut sizes);
        sizes.client_acked();
        sizes.client_acked();
        assert_eq!(sizes.allowed(), DEFAULT_HEADER_TABLE_SIZE);
    }
}
