//! gRPC over unix sockets, the transport of the device-plugin protocol.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::{Channel, Endpoint};

use crate::authority::AuthorityFix;

/// Opens a channel to the gRPC server on the unix socket at `path`.
///
/// The URI is a placeholder that tonic requires; every connection goes to `path`. The channel
/// connects eagerly so that a missing socket is reported here, with its path.
pub async fn connect(path: impl AsRef<Path>) -> Result<Channel, ConnectError> {
    let path: PathBuf = path.as_ref().to_path_buf();
    let target = path.clone();
    Endpoint::try_from("http://[::]:50051")
        .expect("static URI parses")
        .connect_with_connector(tower::service_fn(move |_| {
            let target = target.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(target).await?)) }
        }))
        .await
        .map_err(|source| ConnectError {
            path,
            source: Box::new(source),
        })
}

/// Like [`connect`], giving up after `timeout` (the kubelet dials plugins with 10 s).
pub async fn connect_timeout(
    path: impl AsRef<Path>,
    timeout: std::time::Duration,
) -> Result<Channel, ConnectError> {
    let p = path.as_ref().to_path_buf();
    match tokio::time::timeout(timeout, connect(&p)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError {
            path: p,
            source: Box::new(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("timed out after {timeout:?}"),
            )),
        }),
    }
}

/// A failed dial of a unix socket, naming the socket.
#[derive(Debug)]
pub struct ConnectError {
    pub path: PathBuf,
    pub source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot connect to {}: {}",
            self.path.display(),
            self.source
        )?;
        let mut cause = self.source.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// Binds a unix listener at `path` for a tonic server, replacing a stale socket file left by an
/// earlier run, and sets the socket's mode (the agent uses 0o600: only root on the node may talk
/// to it). Every accepted connection goes through [`AuthorityFix`], so clients whose `:authority`
/// h2 would reject (grpcio's percent-encoded path, grpc-java's raw path, an empty one) are served
/// as the kubelet serves them.
pub fn bind(path: impl AsRef<Path>, mode: u32) -> io::Result<Incoming> {
    Ok(Incoming {
        listener: bind_listener(path.as_ref(), mode)?,
    })
}

/// [`bind`] without the `:authority` layer: tonic exactly as it comes, which resets the streams
/// of grpcio, grpc-java and older kubelets. Only a baseline for tests and benchmarks.
pub fn bind_raw(
    path: impl AsRef<Path>,
    mode: u32,
) -> io::Result<tokio_stream::wrappers::UnixListenerStream> {
    Ok(tokio_stream::wrappers::UnixListenerStream::new(
        bind_listener(path.as_ref(), mode)?,
    ))
}

fn bind_listener(path: &Path, mode: u32) -> io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("removing stale socket {}: {e}", path.display()),
            ));
        }
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| io::Error::new(e.kind(), format!("binding {}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("setting mode {mode:o} on {}: {e}", path.display()),
        )
    })?;
    Ok(listener)
}

/// The connections accepted on a socket from [`bind`], each wrapped in [`AuthorityFix`]; pass it
/// to tonic's `serve_with_incoming`.
pub struct Incoming {
    listener: UnixListener,
}

impl Incoming {
    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }
}

impl tokio_stream::Stream for Incoming {
    type Item = io::Result<AuthorityFix<UnixStream>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let accepted = ready!(self.listener.poll_accept(cx));
        Poll::Ready(Some(accepted.map(|(stream, _)| AuthorityFix::new(stream))))
    }
}
