//! Lets every real gRPC client through to a tonic server: rewrites a client's `:authority` that
//! hyper's h2 would reject into `localhost`, on each connection, before h2 reads it.
//!
//! Over unix sockets clients send many authorities: `localhost` (the kubelet, KubeVirt), the
//! percent-encoded socket path (grpc C-core: Python grpcio, C++, Ruby), the raw path
//! (grpc-java, kubelets before 1.26), or none. The kubelet, a grpc-go server, accepts them all;
//! h2 answers every one that is not a valid URI authority with RST_STREAM PROTOCOL_ERROR, so a
//! grpcio plugin could not register with a tonic kubelet, nor a Java kubelet use a tonic plugin.
//!
//! [`AuthorityFix`] wraps the accepted stream. Client bytes are parsed as HTTP/2 frames; each
//! header block (HEADERS + CONTINUATION, padding and priority handled) is HPACK-decoded with the
//! client's state, its `:authority` replaced when invalid (kept when valid), encoded again and
//! cut into frames of at most 16 KiB; every other frame, and everything the server writes, goes
//! through byte for byte. Anything that is not well-formed HTTP/2 is handed on unchanged from
//! that point, so h2 still reports protocol errors itself.

mod block;
mod frame;
mod inbound;
mod outbound;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

pub use block::{MAX_FRAME_PAYLOAD, REPLACEMENT_AUTHORITY, is_valid_authority};
pub use inbound::MAX_BLOCK_BYTES;

/// How much to ask the socket for at a time.
const READ_CHUNK: usize = 16 * 1024;

/// A server-side connection whose client `:authority` is made acceptable to h2.
pub struct AuthorityFix<S> {
    io: S,
    /// Client bytes read but not yet decided on (a partial frame or header block).
    input: BytesMut,
    /// Client bytes decided on, for h2 to read.
    output: BytesMut,
    eof: bool,
    inbound: inbound::Inbound,
    outbound: outbound::Outbound,
    sizes: outbound::TableSizes,
}

impl<S> AuthorityFix<S> {
    pub fn new(io: S) -> Self {
        Self {
            io,
            input: BytesMut::new(),
            output: BytesMut::new(),
            eof: false,
            inbound: inbound::Inbound::default(),
            outbound: outbound::Outbound::default(),
            sizes: outbound::TableSizes::default(),
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// How many `:authority` values this connection has had replaced so far.
    pub fn rewritten(&self) -> u64 {
        self.inbound.rewriter.rewritten()
    }

    /// Whether the layer stopped interpreting this connection (not HTTP/2 as expected).
    pub fn is_passthrough(&self) -> bool {
        self.inbound.is_passthrough()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof || buf.remaining() == 0 {
                // At end of stream a partial frame or block is dropped: h2 would only fail on it.
                return Poll::Ready(Ok(()));
            }
            this.input.reserve(READ_CHUNK);
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.io),
                cx,
                &mut this.input
            ))?;
            if n == 0 {
                this.eof = true;
                continue;
            }
            this.inbound
                .process(&mut this.input, &mut this.output, &mut this.sizes);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.io).poll_write(cx, data))?;
        this.outbound.observe(&data[..n], &mut this.sizes);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for b in bufs {
            if left == 0 {
                break;
            }
            let k = left.min(b.len());
            this.outbound.observe(&b[..k], &mut this.sizes);
            left -= k;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// tonic hands the inner stream's peer information to services, as without the layer.
impl<S: Connected> Connected for AuthorityFix<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
