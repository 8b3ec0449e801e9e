//! The small part of HTTP/1.1 a Docker plugin socket needs: requests with a
//! `Content-Length` or chunked body, keep-alive, and JSON answers. Parsing never panics:
//! malformed input is an error that closes the connection.

use std::io::{self, BufRead, Read, Write};

/// Largest header block accepted, in bytes.
pub const MAX_HEADER: usize = 64 * 1024;
/// Largest body accepted, in bytes.
pub const MAX_BODY: usize = 1 << 20;

/// One request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// `POST`, `GET`, ...
    pub method: String,
    /// The path (`/NetworkDriver.Join`), query string included.
    pub path: String,
    /// The body.
    pub body: Vec<u8>,
    /// The client wants the connection closed after the answer (`Connection: close`, or
    /// HTTP/1.0 without keep-alive).
    pub close: bool,
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The peer closed the connection between requests (not an error for keep-alive).
    #[error("connection closed")]
    Closed,
    /// Reading failed.
    #[error("reading the request: {0}")]
    Io(#[from] io::Error),
    /// The request is not HTTP as understood here.
    #[error("malformed HTTP request: {0}")]
    Malformed(String),
    /// The request is larger than accepted.
    #[error("HTTP request too large: {0}")]
    TooLarge(&'static str),
}

fn malformed(what: impl Into<String>) -> HttpError {
    HttpError::Malformed(what.into())
}

/// Reads one CRLF- (or LF-) terminated line of at most `limit` bytes, without the
/// terminator. `Ok(None)` at a clean end of stream before any byte.
fn read_line(r: &mut impl BufRead, limit: usize) -> Result<Option<String>, HttpError> {
    let mut buf = Vec::new();
    let n = r.take(limit as u64 + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if n > limit {
            HttpError::TooLarge("header line")
        } else {
            malformed("the stream ended inside a line")
        });
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| malformed("a header line is not UTF-8"))
}

/// Reads the next request from a connection.
pub fn read_request(r: &mut impl BufRead) -> Result<HttpRequest, HttpError> {
    let mut budget = MAX_HEADER;
    // Tolerate blank lines between requests (RFC 9112 §2.2).
    let start = loop {
        match read_line(r, budget)? {
            None => return Err(HttpError::Closed),
            Some(l) if l.is_empty() => continue,
            Some(l) => break l,
        }
    };
    budget = budget.saturating_sub(start.len());
    let mut parts = start.split(' ');
    let (Some(method), Some(path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(format!("bad request line {start:?}")));
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        v => return Err(malformed(format!("unsupported version {v:?}"))),
    };
    if method.is_empty() || !path.starts_with('/') {
        return Err(malformed(format!("bad request line {start:?}")));
    }
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut close = http10;
    loop {
        let line =
            read_line(r, budget)?.ok_or_else(|| malformed("the stream ended in the headers"))?;
        if line.is_empty() {
            break;
        }
        budget = budget
            .checked_sub(line.len() + 2)
            .ok_or(HttpError::TooLarge("headers"))?;
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| malformed(format!("bad header line {line:?}")))?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                let n: usize = value
                    .parse()
                    .map_err(|_| malformed(format!("bad Content-Length {value:?}")))?;
                if length.is_some_and(|m| m != n) {
                    return Err(malformed("conflicting Content-Length headers"));
                }
                length = Some(n);
            }
            "transfer-encoding" => {
                if value.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                } else {
                    return Err(malformed(format!(
                        "unsupported Transfer-Encoding {value:?}"
                    )));
                }
            }
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.contains("close") {
                    close = true;
                } else if v.contains("keep-alive") {
                    close = false;
                }
            }
            _ => {}
        }
    }
    let body = if chunked {
        read_chunked(r)?
    } else {
        let n = length.unwrap_or(0);
        if n > MAX_BODY {
            return Err(HttpError::TooLarge("body"));
        }
        let mut body = vec![0u8; n];
        r.read_exact(&mut body)?;
        body
    };
    Ok(HttpRequest {
        method: method.to_string(),
        path: path.to_string(),
        body,
        close,
    })
}

fn read_chunked(r: &mut impl BufRead) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(r, 1024)?.ok_or_else(|| malformed("the stream ended in a chunk"))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| malformed(format!("bad chunk size {size_text:?}")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let t = read_line(r, MAX_HEADER)?
                    .ok_or_else(|| malformed("the stream ended in the trailers"))?;
                if t.is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len().saturating_add(size) > MAX_BODY {
            return Err(HttpError::TooLarge("body"));
        }
        let at = body.len();
        body.resize(at + size, 0);
        let chunk = body
            .get_mut(at..)
            .ok_or_else(|| malformed("chunk bookkeeping"))?;
        r.read_exact(chunk)?;
        let end = read_line(r, 2)?.ok_or_else(|| malformed("the stream ended after a chunk"))?;
        if !end.is_empty() {
            return Err(malformed("a chunk is not followed by CRLF"));
        }
    }
}

/// The Content-Type of every plugin answer.
pub const PLUGIN_CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";

/// Writes one answer with a JSON body.
pub fn write_response(w: &mut impl Write, status: u16, body: &[u8], close: bool) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        413 => "Payload Too Large",
        _ => "Internal Server Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {PLUGIN_CONTENT_TYPE}\r\nContent-Length: \
         {}\r\n{}\r\n",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
    w.write_all(head.as_bytes())?;
    w.write_all(body)?;
    w.flush()
}

/// Parses an HTTP response (status code and body) read to the end of the stream, as
/// answered to an HTTP/1.0 request (no chunking).
pub fn parse_response(raw: &[u8]) -> Result<(u16, &[u8]), HttpError> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| malformed("no end of headers in the answer"))?;
    let head = raw.get(..split).unwrap_or_default();
    let body = raw.get(split + 4..).unwrap_or_default();
    let first = head
        .split(|b| *b == b'\n')
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .ok_or_else(|| malformed("bad status line"))?;
    let code = first
        .split(' ')
        .nth(1)
        .and_then(|c| c.trim().parse::<u16>().ok())
        .ok_or_else(|| malformed(format!("bad status line {first:?}")))?;
    Ok((code, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(raw: &[u8]) -> Result<HttpRequest, HttpError> {
        read_request(&mut io::BufReader::new(raw))
    }

    #[test]
    fn content_length_bodies_and_keep_alive() {
        let raw = b"POST /NetworkDriver.Join HTTP/1.1\r\nHost: plugin\r\nContent-Length: 7\r\n\r\n{\"a\":1}POST /Plugin.Activate HTTP/1.1\r\nConnection: close\r\n\r\n";
        let mut r = io::BufReader::new(&raw[..]);
        let a = read_request(&mut r).unwrap();
        assert_eq!(
            (
                a.method.as_str(),
                a.path.as_str(),
                a.body.as_slice(),
                a.close
            ),
            ("POST", "/NetworkDriver.Join", &b"{\"a\":1}"[..], false)
        );
        let b = read_request(&mut r).unwrap();
        assert_eq!(
            (b.path.as_str(), b.body.len(), b.close),
            ("/Plugin.Activate", 0, true)
        );
        assert!(matches!(read_request(&mut r), Err(HttpError::Closed)));
    }

    #[test]
    fn chunked_bodies() {
        let raw = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(parse(raw).unwrap().body, b"abcde");
    }

    #[test]
    fn http10_closes_and_bad_input_is_an_error() {
        assert!(parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().close);
        for bad in [
            &b"POST /x HTTP/2\r\n\r\n"[..],
            b"POST x HTTP/1.1\r\n\r\n",
            b"POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nab",
            b"POST /x HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab",
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST /x HTTP/1.1\r\nNoColon\r\n\r\n",
            b"POST /x HTTP/1.1\r\nHost: a",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let huge = format!(
            "POST /x HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert!(matches!(
            parse(huge.as_bytes()),
            Err(HttpError::TooLarge(_))
        ));
        let long_header = format!("POST /x HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEADER));
        assert!(matches!(
            parse(long_header.as_bytes()),
            Err(HttpError::TooLarge(_))
        ));
    }

    #[test]
    fn responses_round_trip() {
        let mut out = Vec::new();
        write_response(&mut out, 404, b"{}", true).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text.contains("Content-Type: application/vnd.docker.plugins.v1+json\r\n"));
        assert!(text.contains("Content-Length: 2\r\n"));
        assert_eq!(parse_response(&out).unwrap(), (404, &b"{}"[..]));
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&raw);
            let _ = parse_response(&raw);
        }

        #[test]
        fn arbitrary_headers_never_panic(lines in proptest::collection::vec("[ -~]{0,40}", 0..8), body in "[ -~]{0,40}") {
            let raw = format!("POST /x HTTP/1.1\r\n{}\r\n\r\n{body}", lines.join("\r\n"));
            let _ = parse(raw.as_bytes());
        }
    }
}
