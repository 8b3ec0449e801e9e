//! The client side of the API socket: one request and its answer, or a stream.

use super::*;

/// Client-side errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon listens on the socket.
    #[error("cannot reach the uvlan daemon at {path}: is \"uvlan daemon\" running?")]
    Unreachable {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket exists but this user may not use it.
    #[error(
        "permission denied on {path}: the uvlan API is for root only; run the command as root"
    )]
    Denied {
        /// The socket path.
        path: PathBuf,
    },
    /// The daemon refused or failed the request (Docker prints these with this prefix).
    #[error("Error response from daemon: {0}")]
    Daemon(String),
    /// The conversation broke.
    #[error("talking to the uvlan daemon at {path} failed: {detail}")]
    Protocol {
        /// The socket path.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

fn connect(socket: &Path) -> Result<UnixStream, ClientError> {
    UnixStream::connect(socket).map_err(|e| {
        if e.kind() == io::ErrorKind::PermissionDenied {
            ClientError::Denied {
                path: socket.to_path_buf(),
            }
        } else {
            ClientError::Unreachable {
                path: socket.to_path_buf(),
            }
        }
    })
}

/// Writes the request line and reads the answer line.
fn exchange(
    socket: &Path,
    stream: &UnixStream,
    reader: &mut BufReader<UnixStream>,
    req: &Request,
    half_close: bool,
) -> Result<serde_json::Value, ClientError> {
    let proto = |detail: String| ClientError::Protocol {
        path: socket.to_path_buf(),
        detail,
    };
    let mut line = serde_json::to_vec(req).map_err(|e| proto(e.to_string()))?;
    line.push(b'\n');
    let mut w = stream;
    w.write_all(&line)
        .map_err(|e| proto(format!("sending the request: {e}")))?;
    if half_close {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let mut answer = String::new();
    reader
        .by_ref()
        .take(MAX_REQUEST)
        .read_line(&mut answer)
        .map_err(|e| proto(format!("reading the answer: {e}")))?;
    if answer.is_empty() {
        return Err(proto(
            "the daemon closed the connection without answering (see its log)".to_string(),
        ));
    }
    match serde_json::from_str::<Response>(&answer) {
        Ok(Response::Ok { result }) => Ok(result),
        Ok(Response::Error { message }) => Err(ClientError::Daemon(message)),
        Err(e) => Err(proto(format!("malformed answer: {e}"))),
    }
}

/// Sends one request and returns the result (or the daemon's error).
pub fn call(socket: &Path, req: &Request) -> Result<serde_json::Value, ClientError> {
    let stream = connect(socket)?;
    let read_half = stream.try_clone().map_err(|e| ClientError::Protocol {
        path: socket.to_path_buf(),
        detail: e.to_string(),
    })?;
    exchange(socket, &stream, &mut BufReader::new(read_half), req, true)
}

/// The client's side of a streaming request, after the daemon's `ok` answer.
#[derive(Debug)]
pub struct ClientStream {
    /// What the daemon sends (buffered: bytes after the answer line may already be here).
    pub reader: BufReader<UnixStream>,
    /// The connection, for writing and for shutting down.
    pub stream: UnixStream,
}

impl ClientStream {
    /// Writes one JSON line.
    pub fn write_line<T: Serialize>(&mut self, v: &T) -> io::Result<()> {
        write_json_line(&self.stream, v)
    }

    /// Reads one JSON line; `Ok(None)` when the daemon closed the connection.
    pub fn read_line<T: serde::de::DeserializeOwned>(&mut self) -> io::Result<Option<T>> {
        read_json_line(&mut self.reader)
    }
}

/// Sends a streaming request ([`Request::is_streaming`]) and returns the daemon's answer
/// with the open connection.
pub fn open_stream<T: serde::de::DeserializeOwned>(
    socket: &Path,
    req: &Request,
) -> Result<(T, ClientStream), ClientError> {
    start_stream(socket, connect(socket)?, req)
}

/// [`open_stream`] on a connection already made (`socket` names it in errors).
pub fn start_stream<T: serde::de::DeserializeOwned>(
    socket: &Path,
    stream: UnixStream,
    req: &Request,
) -> Result<(T, ClientStream), ClientError> {
    let proto = |detail: String| ClientError::Protocol {
        path: socket.to_path_buf(),
        detail,
    };
    let read_half = stream.try_clone().map_err(|e| proto(e.to_string()))?;
    let mut reader = BufReader::new(read_half);
    let v = exchange(socket, &stream, &mut reader, req, false)?;
    let start =
        serde_json::from_value(v).map_err(|e| proto(format!("unexpected result shape: {e}")))?;
    Ok((start, ClientStream { reader, stream }))
}

/// Sends one request and decodes a typed result.
pub fn call_typed<T: serde::de::DeserializeOwned>(
    socket: &Path,
    req: &Request,
) -> Result<T, ClientError> {
    let v = call(socket, req)?;
    serde_json::from_value(v).map_err(|e| ClientError::Protocol {
        path: socket.to_path_buf(),
        detail: format!("unexpected result shape: {e}"),
    })
}
