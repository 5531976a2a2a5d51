//! `fake-kubelet ctl`: sends one [`Command`] to a running fake kubelet's control socket and
//! prints the answer. Plain blocking I/O: one request, one answer line.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Command, Response, control_socket_path};

/// How `ctl` ended, mapped to the process exit code by [`CtlError::exit_code`].
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The kubelet refused or failed the command (exit 1); the text is the kubelet's.
    #[error("{0}")]
    Failed(String),
    /// The request was malformed (exit 2).
    #[error("{0}")]
    BadRequest(String),
    /// No control socket, or it did not answer (exit 2).
    #[error("control socket {}: {message}", path.display())]
    Connection { path: PathBuf, message: String },
}

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Failed(_) => 1,
            CtlError::BadRequest(_) | CtlError::Connection { .. } => 2,
        }
    }
}

/// What a successful command printed: the result object and its human-readable lines.
#[derive(Debug, Clone, PartialEq)]
pub struct CtlAnswer {
    pub result: serde_json::Value,
    pub text: Vec<String>,
}

/// Sends `command` to `<dir>/fake-kubelet.ctl` and waits up to `timeout` for the answer.
pub fn ctl(dir: &Path, command: &Command, timeout: Duration) -> Result<CtlAnswer, CtlError> {
    let path = control_socket_path(dir);
    let conn_err = |message: String| CtlError::Connection {
        path: path.clone(),
        message,
    };
    let mut stream = UnixStream::connect(&path).map_err(|e| {
        if dir.is_dir() {
            conn_err(format!(
                "{e} (is `fake-kubelet --dir {}` running?)",
                dir.display()
            ))
        } else {
            conn_err(format!("{e} (no directory {})", dir.display()))
        }
    })?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| conn_err(format!("setting timeouts: {e}")))?;
    let mut request = serde_json::to_string(command)
        .map_err(|e| CtlError::BadRequest(format!("serializing {command:?}: {e}")))?;
    request.push('\n');
    stream
        .write_all(request.as_bytes())
        .map_err(|e| conn_err(format!("sending the request: {e}")))?;
    let mut line = String::new();
    let read = BufReader::new(&stream).read_line(&mut line);
    match read {
        Ok(0) => return Err(conn_err("closed without answering".into())),
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return Err(conn_err(format!("no answer within {timeout:?}")));
        }
        Err(e) => return Err(conn_err(format!("reading the answer: {e}"))),
    }
    match serde_json::from_str::<Response>(&line) {
        Ok(Response::Ok { result, text }) => Ok(CtlAnswer { result, text }),
        Ok(Response::Failed { error }) => Err(CtlError::Failed(error)),
        Ok(Response::BadRequest { error }) => Err(CtlError::BadRequest(error)),
        Err(e) => Err(conn_err(format!(
            "unreadable answer {:?}: {e}",
            line.trim_end()
        ))),
    }
}
