//! The daemon side of the API socket: listening, peer checks, one connection's request
//! and answer, streaming connections.

use super::*;

/// Errors setting up the listening socket.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Another daemon answers on this socket.
    #[error(
        "another uvlan daemon is already listening on {0}: stop it first, or use another \
         --socket"
    )]
    InUse(PathBuf),
    /// A system call failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// Binds the API socket at `path`: creates the directory (0700 if new), removes a stale
/// socket left by a daemon that died (refuses if one still answers), binds, and sets mode
/// 0600.
pub fn listen(path: &Path) -> Result<UnixListener, ListenError> {
    let ioe = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| ListenError::Io {
            op,
            path: p,
            source,
        }
    };
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(ioe("create the socket directory", dir))?;
        }
    }
    if std::fs::symlink_metadata(path).is_ok() {
        if UnixStream::connect(path).is_ok() {
            return Err(ListenError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(ioe("remove the stale socket", path))?;
    }
    let listener = UnixListener::bind(path).map_err(ioe("bind the API socket", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(ioe("set mode 0600 on", path))?;
    Ok(listener)
}

/// The uid of the process at the other end (`SO_PEERCRED`).
pub fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    crate::sys::peer_uid(std::os::fd::AsFd::as_fd(stream))
}

/// What serves the API's requests: one-shot ones and streaming ones.
pub trait Server {
    /// Answers a one-shot request.
    fn answer(&self, req: Request) -> Response;
    /// Serves a streaming request ([`Request::is_streaming`]): answers on `conn`, then
    /// streams as the module docs say.
    fn stream(&self, req: Request, conn: StreamConn);
}

/// A connection whose request line has been read.
#[derive(Debug)]
pub struct StreamConn {
    reader: BufReader<UnixStream>,
    stream: UnixStream,
}

impl StreamConn {
    fn new(stream: UnixStream) -> io::Result<StreamConn> {
        Ok(StreamConn {
            reader: BufReader::new(stream.try_clone()?),
            stream,
        })
    }

    fn read_request(&mut self) -> Result<Request, String> {
        let mut line = String::new();
        self.reader
            .by_ref()
            .take(MAX_REQUEST)
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the request: {e}"))?;
        parse_request(&line)
    }

    /// Writes the answer line.
    pub fn answer(&mut self, r: &Response) -> io::Result<()> {
        self.write_line(r)
    }

    /// Writes one JSON line.
    pub fn write_line<T: Serialize>(&mut self, v: &T) -> io::Result<()> {
        write_json_line(&self.stream, v)
    }

    /// Reads one line of at most [`MAX_REQUEST`] bytes and decodes it; `Ok(None)` when the
    /// client has shut its side down.
    pub fn read_line<T: serde::de::DeserializeOwned>(&mut self) -> io::Result<Option<T>> {
        read_json_line(&mut self.reader)
    }

    /// The connection, for streaming bytes: what the client sends (buffered), and the
    /// socket. No read timeout is left on it.
    pub fn into_parts(self) -> (BufReader<UnixStream>, UnixStream) {
        let _ = self.stream.set_read_timeout(None);
        (self.reader, self.stream)
    }
}

/// Serves one connection: checks the peer is root, reads one request, and answers it with
/// `server` (or hands the connection to it, for a streaming request).
pub fn serve(stream: UnixStream, server: &dyn Server) {
    match peer_uid(&stream) {
        Ok(0) => serve_trusted(stream, server),
        Ok(uid) => refuse(
            stream,
            format!(
                "permission denied: the uvlan API is for root only (you are uid {uid}); run \
                 the command as root"
            ),
        ),
        Err(e) => refuse(
            stream,
            format!("cannot check the peer's credentials (SO_PEERCRED): {e}"),
        ),
    }
}

fn refuse(stream: UnixStream, message: String) {
    let mut w = &stream;
    if let Ok(mut line) = serde_json::to_vec(&Response::Error { message }) {
        line.push(b'\n');
        let _ = w.write_all(&line);
    }
}

/// [`serve`] without the credentials check, for a peer the caller trusts (its own end of a
/// socket pair).
pub fn serve_trusted(stream: UnixStream, server: &dyn Server) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut conn) = StreamConn::new(stream) else {
        return;
    };
    let answer = match conn.read_request() {
        Ok(r) if r.is_streaming() => return server.stream(r, conn),
        Ok(r) => server.answer(r),
        Err(message) => Response::Error { message },
    };
    let _ = conn.answer(&answer);
}

/// Serves one connection with a one-shot handler (streaming requests are refused).
pub fn serve_connection(stream: UnixStream, handle: &dyn Fn(Request) -> Response) {
    struct OneShot<'a>(&'a dyn Fn(Request) -> Response);
    impl Server for OneShot<'_> {
        fn answer(&self, req: Request) -> Response {
            (self.0)(req)
        }
        fn stream(&self, _req: Request, mut conn: StreamConn) {
            let _ = conn.answer(&Response::Error {
                message: "this server does not serve streaming requests".to_string(),
            });
        }
    }
    serve(stream, &OneShot(handle));
}

/// Decodes one request line (the API's JSON); a pure function, also the fuzz target's entry.
pub fn parse_request(line: &str) -> Result<Request, String> {
    serde_json::from_str(line).map_err(|e| {
        format!("malformed request (is the client the same uvlan version as the daemon?): {e}")
    })
}
