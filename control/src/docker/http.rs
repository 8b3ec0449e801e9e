//! The small part of HTTP/1.1 a Docker plugin socket needs: requests with a
//! `Content-Length` or chunked body, keep-alive, and JSON answers. Parsing never panics:
//! malformed input is an error that closes the connection.
//!
//! Message framing is strict (RFC 9112 §6): a request whose body length could be read two
//! ways is refused rather than guessed at, so no second request can hide in a body
//! ("request smuggling"). Refused with 400 and the connection closed:
//! * `Transfer-Encoding` together with `Content-Length` (§6.1, §6.3 item 3);
//! * `Transfer-Encoding` whose final coding is not `chunked`, `chunked` applied twice or
//!   with parameters, an empty `Transfer-Encoding`, or `Transfer-Encoding` in an HTTP/1.0
//!   request (§6.1);
//! * more than one `Content-Length` (even with equal values), or one that is not
//!   `1*DIGIT` (§6.3 item 5; RFC 9110 §8.6);
//! * obsolete line folding (§5.2), whitespace between a field name and its colon (§5.1), a
//!   field name that is not a token, control characters or a bare CR in a field line
//!   (RFC 9110 §5.5, RFC 9112 §2.2);
//! * a chunk size that is not `1*HEXDIG`, a malformed chunk extension, a chunk not followed
//!   by its line end, malformed trailer fields (§7.1).
//!
//! A chunked body whose other codings uvlan does not implement (`gzip, chunked`) is refused
//! with 501 (§6.1). The start line and field lines may end in CRLF or a bare LF (§2.2 lets a
//! recipient accept LF there); chunk lines must end in CRLF.

use std::io::{self, BufRead, Read, Write};

/// Largest header block accepted, in bytes.
pub const MAX_HEADER: usize = 64 * 1024;
/// Largest body accepted, in bytes.
pub const MAX_BODY: usize = 1 << 20;
/// Longest chunk-size line (size and extensions) accepted, in bytes.
const MAX_CHUNK_LINE: usize = 1024;
/// Blank lines tolerated before a request line (RFC 9112 §2.2 asks for at least one).
const MAX_BLANK_LINES: usize = 8;

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

/// Why a request could not be read. Every error but [`HttpError::Closed`] is answered with
/// [`HttpError::status`] and the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The peer closed the connection between requests (not an error for keep-alive).
    #[error("connection closed")]
    Closed,
    /// Reading failed.
    #[error("reading the request: {0}")]
    Io(#[from] io::Error),
    /// The request is not HTTP/1.1 as RFC 9112 defines it, or its framing is ambiguous.
    #[error("malformed HTTP request: {0}")]
    Malformed(String),
    /// Well-formed, but uses a transfer coding uvlan does not implement.
    #[error("HTTP request not supported: {0}")]
    NotImplemented(String),
    /// The request is larger than accepted.
    #[error("HTTP request too large: {0}")]
    TooLarge(&'static str),
}

impl HttpError {
    /// The status to answer with before closing: 413 for a request over the limits, 501 for
    /// a transfer coding uvlan does not implement, 400 for everything else.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::TooLarge(_) => 413,
            HttpError::NotImplemented(_) => 501,
            _ => 400,
        }
    }
}

fn malformed(what: impl Into<String>) -> HttpError {
    HttpError::Malformed(what.into())
}

/// `text` quoted for an error message, cut to a readable length.
fn shown(text: &str) -> String {
    const MAX: usize = 80;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}...", text.get(..cut).unwrap_or_default()),
        None => format!("{text:?}"),
    }
}

/// `tchar` of RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A `token` (RFC 9110 §5.6.2): one or more `tchar`.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// Optional whitespace (`OWS`, `BWS`): spaces and horizontal tabs.
const OWS: [char; 2] = [' ', '\t'];

/// How a line may end.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Eol {
    /// CRLF, or a bare LF: RFC 9112 §2.2 lets a recipient accept LF alone in the start line
    /// and field lines.
    CrlfOrLf,
    /// CRLF only: chunk size lines (RFC 9112 §7.1 has no such leniency), where a bare LF
    /// could be read as the end of the line by one parser and as data by another.
    Crlf,
}

/// Reads one line of at most `limit` bytes, without its terminator (`eol`). A CR anywhere
/// else is an error. `Ok(None)` at a clean end of stream before any byte. `what` names the
/// line in errors, `too_large` is the error when the line is longer than `limit`.
fn read_line(
    r: &mut impl BufRead,
    limit: usize,
    eol: Eol,
    what: &str,
    too_large: &'static str,
) -> Result<Option<String>, HttpError> {
    let mut buf = Vec::new();
    let n = r.take(limit as u64 + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if n > limit {
            HttpError::TooLarge(too_large)
        } else {
            malformed(format!("the connection ended inside the {what}"))
        });
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    } else if eol == Eol::Crlf {
        return Err(malformed(format!(
            "the {what} ends in a bare LF, not CRLF (RFC 9112 §7.1)"
        )));
    }
    if buf.contains(&b'\r') {
        return Err(malformed(format!(
            "a bare CR (not followed by LF) in the {what} (RFC 9112 §2.2)"
        )));
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| malformed(format!("the {what} is not UTF-8")))
}

/// Reads one byte; the connection ending first is a malformed request.
fn read_byte(r: &mut impl BufRead) -> Result<u8, HttpError> {
    let mut b = [0u8; 1];
    match r.read_exact(&mut b) {
        Ok(()) => Ok(b[0]),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(malformed(
            "the connection ended after a chunk's data, before its CRLF",
        )),
        Err(e) => Err(e.into()),
    }
}

/// Reads the CRLF that ends a chunk's data.
fn read_chunk_end(r: &mut impl BufRead) -> Result<(), HttpError> {
    match read_byte(r)? {
        b'\r' if read_byte(r)? == b'\n' => Ok(()),
        _ => Err(malformed(
            "a chunk's data is not followed by CRLF: the chunk size does not match the data \
             (RFC 9112 §7.1)",
        )),
    }
}

/// Reads `n` body bytes onto `body`; a connection that ends first is a malformed request.
fn read_body_bytes(r: &mut impl BufRead, n: usize, body: &mut Vec<u8>) -> Result<(), HttpError> {
    let got = r.take(n as u64).read_to_end(body)?;
    if got < n {
        return Err(malformed(format!(
            "the connection ended after {got} of the {n} announced body bytes"
        )));
    }
    Ok(())
}

/// Splits a field line (RFC 9112 §5) into its name and its value without the surrounding
/// whitespace, refusing what could be read two ways: obsolete line folding, whitespace
/// before the colon, a name that is not a token, control characters in the value.
fn field_line(line: &str) -> Result<(&str, &str), HttpError> {
    if line.starts_with(OWS) {
        return Err(malformed(format!(
            "obsolete line folding: the field line {} starts with whitespace (RFC 9112 §5.2)",
            shown(line)
        )));
    }
    let (name, value) = line.split_once(':').ok_or_else(|| {
        malformed(format!(
            "the field line {} has no colon (NAME: VALUE)",
            shown(line)
        ))
    })?;
    if !is_token(name) {
        let trimmed = name.trim_end_matches(OWS);
        return Err(malformed(if trimmed != name && is_token(trimmed) {
            format!(
                "whitespace between the field name {} and its colon (RFC 9112 §5.1)",
                shown(trimmed)
            )
        } else {
            format!(
                "the field name {} is not a token (RFC 9110 §5.1)",
                shown(name)
            )
        }));
    }
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(malformed(format!(
            "a control character in the value of {} (RFC 9110 §5.5)",
            shown(name)
        )));
    }
    Ok((name, value.trim_matches(OWS)))
}

/// A `Content-Length` value: `1*DIGIT` (RFC 9110 §8.6), nothing else (no sign, no list).
fn content_length(value: &str) -> Result<usize, HttpError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(format!(
            "Content-Length {} is not a number of bytes (1*DIGIT, RFC 9110 §8.6)",
            shown(value)
        )));
    }
    // Only digits: the one way this parse fails is a number too large for usize.
    value
        .parse()
        .map_err(|_| HttpError::TooLarge(BODY_TOO_LARGE))
}

/// The name of a transfer coding list element (`NAME` or `NAME;PARAM=...`) and whether it
/// has parameters.
fn coding_name(element: &str) -> (&str, bool) {
    match element.split_once(';') {
        Some((name, _)) => (name.trim_end_matches(OWS), true),
        None => (element, false),
    }
}

/// Checks the `Transfer-Encoding` list of a request (RFC 9112 §6.1): it must end in a
/// parameterless `chunked` used once; other codings before it are well-formed but not
/// implemented.
fn check_codings(codings: &[String]) -> Result<(), HttpError> {
    let list = codings.join(", ");
    let Some((last, before)) = codings.split_last() else {
        return Err(malformed(
            "an empty Transfer-Encoding: the body length cannot be determined (RFC 9112 §6.1)",
        ));
    };
    for c in codings {
        let (name, _) = coding_name(c);
        if !is_token(name) {
            return Err(malformed(format!(
                "Transfer-Encoding {}: {} is not a transfer coding (RFC 9112 §6.1)",
                shown(&list),
                shown(c)
            )));
        }
    }
    let (last_name, last_params) = coding_name(last);
    if !last_name.eq_ignore_ascii_case("chunked") {
        return Err(malformed(format!(
            "Transfer-Encoding {} does not end in chunked: the body length cannot be \
             determined (RFC 9112 §6.3)",
            shown(&list)
        )));
    }
    if last_params {
        return Err(malformed(format!(
            "Transfer-Encoding {}: chunked takes no parameters (RFC 9112 §7)",
            shown(&list)
        )));
    }
    if before
        .iter()
        .any(|c| coding_name(c).0.eq_ignore_ascii_case("chunked"))
    {
        return Err(malformed(format!(
            "Transfer-Encoding {}: chunked is applied more than once (RFC 9112 §6.1)",
            shown(&list)
        )));
    }
    if !before.is_empty() {
        return Err(HttpError::NotImplemented(format!(
            "Transfer-Encoding {}: uvlan implements chunked alone",
            shown(&list)
        )));
    }
    Ok(())
}

const HEADERS_TOO_LARGE: &str = "the header section is larger than 64 KiB";
const BODY_TOO_LARGE: &str = "the body is larger than 1 MiB";
const TRAILERS_TOO_LARGE: &str = "the trailer section is larger than 64 KiB";
const CHUNK_LINE_TOO_LARGE: &str = "a chunk size line is longer than 1 KiB";

/// The request line: method, request target, and whether it is HTTP/1.0.
fn request_line(line: &str) -> Result<(&str, &str, bool), HttpError> {
    let bad = || {
        malformed(format!(
            "bad request line {}: it must be METHOD /PATH HTTP/1.1, one space apart \
             (RFC 9112 §3)",
            shown(line)
        ))
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        v => {
            return Err(malformed(format!(
                "unsupported HTTP version {}: uvlan speaks HTTP/1.1 (and 1.0)",
                shown(v)
            )))
        }
    };
    if !is_token(method)
        || !target.starts_with('/')
        || !target.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(bad());
    }
    Ok((method, target, http10))
}

/// Reads the next request from a connection. See the module documentation for what is
/// refused; after any error the caller answers [`HttpError::status`] and closes.
pub fn read_request(r: &mut impl BufRead) -> Result<HttpRequest, HttpError> {
    let mut budget = MAX_HEADER;
    // Tolerate a few blank lines between requests (RFC 9112 §2.2).
    let mut blank = 0;
    let start = loop {
        match read_line(r, budget, Eol::CrlfOrLf, "request line", HEADERS_TOO_LARGE)? {
            None => return Err(HttpError::Closed),
            Some(l) if l.is_empty() => {
                blank += 1;
                if blank > MAX_BLANK_LINES {
                    return Err(malformed("blank lines instead of a request line"));
                }
            }
            Some(l) => break l,
        }
    };
    budget = budget.saturating_sub(start.len() + 2);
    let (method, path, http10) = request_line(&start)?;
    let mut length: Option<usize> = None;
    let mut lengths = 0usize;
    let mut codings: Option<Vec<String>> = None;
    let (mut close_opt, mut keep_alive_opt) = (false, false);
    loop {
        let line = read_line(
            r,
            budget,
            Eol::CrlfOrLf,
            "header section",
            HEADERS_TOO_LARGE,
        )?
        .ok_or_else(|| malformed("the connection ended inside the header section"))?;
        budget = budget
            .checked_sub(line.len() + 2)
            .ok_or(HttpError::TooLarge(HEADERS_TOO_LARGE))?;
        if line.is_empty() {
            break;
        }
        let (name, value) = field_line(&line)?;
        if name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            if lengths > 1 {
                return Err(malformed(
                    "more than one Content-Length: the body length is ambiguous (RFC 9112 §6.3)",
                ));
            }
            length = Some(content_length(value)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Field lines of one name make one comma-separated list (RFC 9110 §5.3);
            // empty elements do not count (§5.6.1).
            codings.get_or_insert_with(Vec::new).extend(
                value
                    .split(',')
                    .map(|c| c.trim_matches(OWS))
                    .filter(|c| !c.is_empty())
                    .map(str::to_string),
            );
        } else if name.eq_ignore_ascii_case("connection") {
            for opt in value.split(',').map(|o| o.trim_matches(OWS)) {
                close_opt |= opt.eq_ignore_ascii_case("close");
                keep_alive_opt |= opt.eq_ignore_ascii_case("keep-alive");
            }
        }
    }
    let close = close_opt || (http10 && !keep_alive_opt);
    let body = match codings {
        Some(codings) => {
            if http10 {
                return Err(malformed(
                    "Transfer-Encoding in an HTTP/1.0 request: its framing cannot be trusted \
                     (RFC 9112 §6.1)",
                ));
            }
            if length.is_some() {
                return Err(malformed(
                    "both Transfer-Encoding and Content-Length: the body length is ambiguous \
                     (RFC 9112 §6.1, §6.3)",
                ));
            }
            check_codings(&codings)?;
            read_chunked(r)?
        }
        None => {
            let n = length.unwrap_or(0);
            if n > MAX_BODY {
                return Err(HttpError::TooLarge(BODY_TOO_LARGE));
            }
            let mut body = Vec::with_capacity(n);
            read_body_bytes(r, n, &mut body)?;
            body
        }
    };
    Ok(HttpRequest {
        method: method.to_string(),
        path: path.to_string(),
        body,
        close,
    })
}

/// Skips `BWS` (spaces and tabs).
fn skip_ws(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
    s.get(n..).unwrap_or_default()
}

/// Skips a `token`; `None` when `s` does not start with one.
fn skip_token(s: &[u8]) -> Option<&[u8]> {
    let n = s.iter().take_while(|b| is_tchar(**b)).count();
    (n > 0).then(|| s.get(n..).unwrap_or_default())
}

/// Skips a `quoted-string` (RFC 9110 §5.6.4); `None` when `s` does not start with a
/// complete one.
fn skip_quoted(s: &[u8]) -> Option<&[u8]> {
    let mut it = s.strip_prefix(b"\"")?.iter().enumerate();
    let text = |b: u8| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80;
    while let Some((i, &b)) = it.next() {
        match b {
            b'"' => return Some(s.get(i + 2..).unwrap_or_default()),
            b'\\' => match it.next() {
                Some((_, &q)) if text(q) => {}
                _ => return None,
            },
            b if text(b) => {}
            _ => return None,
        }
    }
    None
}

/// Checks a chunk's extensions (RFC 9112 §7.1.1): `*( BWS ";" BWS name [ BWS "=" BWS value
/// ] )`, names tokens, values tokens or quoted strings. They carry nothing uvlan uses.
fn check_chunk_ext(line: &str, mut s: &[u8]) -> Result<(), HttpError> {
    let bad = || {
        malformed(format!(
            "bad chunk size line {}: a chunk size is hex digits, then only extensions \
             (;NAME=VALUE) (RFC 9112 §7.1)",
            shown(line)
        ))
    };
    while !s.is_empty() {
        s = skip_ws(s).strip_prefix(b";").ok_or_else(bad)?;
        s = skip_token(skip_ws(s)).ok_or_else(bad)?;
        let after = skip_ws(s);
        if let Some(v) = after.strip_prefix(b"=") {
            let v = skip_ws(v);
            s = if v.starts_with(b"\"") {
                skip_quoted(v)
            } else {
                skip_token(v)
            }
            .ok_or_else(bad)?;
        }
    }
    Ok(())
}

/// The size of the next chunk, from its chunk size line.
fn chunk_size(line: &str) -> Result<usize, HttpError> {
    let digits = line.bytes().take_while(u8::is_ascii_hexdigit).count();
    let hex = line.get(..digits).unwrap_or_default();
    if hex.is_empty() {
        return Err(malformed(format!(
            "bad chunk size line {}: it must start with hex digits (RFC 9112 §7.1)",
            shown(line)
        )));
    }
    check_chunk_ext(line, line.as_bytes().get(digits..).unwrap_or_default())?;
    let significant = hex.trim_start_matches('0');
    if significant.is_empty() {
        return Ok(0);
    }
    // Only hex digits: the one way this parse fails is a size too large for usize.
    usize::from_str_radix(significant, 16).map_err(|_| HttpError::TooLarge(BODY_TOO_LARGE))
}

/// Reads a chunked body (RFC 9112 §7.1) up to and including its trailer section, whose
/// fields are checked and ignored (they never change the framing).
fn read_chunked(r: &mut impl BufRead) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(
            r,
            MAX_CHUNK_LINE,
            Eol::Crlf,
            "chunk size line",
            CHUNK_LINE_TOO_LARGE,
        )?
        .ok_or_else(|| malformed("the connection ended before the last chunk"))?;
        let size = chunk_size(&line)?;
        if size == 0 {
            read_trailers(r)?;
            return Ok(body);
        }
        if size > MAX_BODY.saturating_sub(body.len()) {
            return Err(HttpError::TooLarge(BODY_TOO_LARGE));
        }
        read_body_bytes(r, size, &mut body)?;
        read_chunk_end(r)?;
    }
}

/// Reads the trailer section after the last chunk, up to its empty line.
fn read_trailers(r: &mut impl BufRead) -> Result<(), HttpError> {
    let mut budget = MAX_HEADER;
    loop {
        let line = read_line(
            r,
            budget,
            Eol::CrlfOrLf,
            "trailer section",
            TRAILERS_TOO_LARGE,
        )?
        .ok_or_else(|| malformed("the connection ended inside the trailer section"))?;
        budget = budget
            .checked_sub(line.len() + 2)
            .ok_or(HttpError::TooLarge(TRAILERS_TOO_LARGE))?;
        if line.is_empty() {
            return Ok(());
        }
        field_line(&line)?;
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
        501 => "Not Implemented",
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

    /// The status a request is refused with (panics when it is accepted).
    fn refused(raw: &[u8]) -> u16 {
        match parse(raw) {
            Ok(r) => panic!("accepted {:?}: {r:?}", String::from_utf8_lossy(raw)),
            Err(e) => e.status(),
        }
    }

    fn with_headers(headers: &str, body: &str) -> Vec<u8> {
        format!("POST /x HTTP/1.1\r\nHost: plugin\r\n{headers}\r\n{body}").into_bytes()
    }

    #[test]
    fn a_request_smuggled_in_a_chunked_body_is_refused() {
        // The report's case: a front end going by Content-Length sees one request whose body
        // is the second; going by chunked, the second request follows an empty body.
        let raw = b"POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\nContent-Length: 52\r\n\
                    Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
                    POST /NetworkDriver.Leave HTTP/1.1\r\nX: 1\r\n\r\n";
        let mut r = io::BufReader::new(&raw[..]);
        let e = read_request(&mut r).unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(
            e.to_string()
                .contains("both Transfer-Encoding and Content-Length"),
            "{e}"
        );
        // The order of the two fields does not matter, nor their case.
        assert_eq!(
            refused(&with_headers(
                "transfer-encoding: CHUNKED\r\ncontent-length: 0\r\n",
                "0\r\n\r\n"
            )),
            400
        );
    }

    #[test]
    fn transfer_encoding_must_end_in_one_plain_chunked() {
        let ok = |te: &str| {
            let raw = with_headers(&format!("{te}\r\n"), "3\r\nabc\r\n0\r\n\r\n");
            parse(&raw).map(|r| r.body)
        };
        assert_eq!(ok("Transfer-Encoding: Chunked").unwrap(), b"abc");
        assert_eq!(ok("Transfer-Encoding: , chunked ,").unwrap(), b"abc");
        for (te, status) in [
            ("Transfer-Encoding: gzip", 400),
            ("Transfer-Encoding: chunked, gzip", 400),
            ("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip", 400),
            ("Transfer-Encoding: chunked, chunked", 400),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
                400,
            ),
            ("Transfer-Encoding: chunked;q=1", 400),
            ("Transfer-Encoding: chunked ;q=1", 400),
            ("Transfer-Encoding:", 400),
            ("Transfer-Encoding: ,", 400),
            ("Transfer-Encoding: chu nked", 400),
            ("Transfer-Encoding: \"chunked\"", 400),
            ("Transfer-Encoding: gzip, chunked", 501),
            ("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked", 501),
        ] {
            let e = ok(te).expect_err(te);
            assert_eq!(e.status(), status, "{te}: {e}");
        }
        let e =
            parse(b"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").unwrap_err();
        assert!(e.to_string().contains("HTTP/1.0"), "{e}");
    }

    #[test]
    fn content_length_is_one_field_of_digits() {
        let body = |cl: &str| parse(&with_headers(&format!("{cl}\r\n"), "hello")).map(|r| r.body);
        assert_eq!(body("Content-Length: 5").unwrap(), b"hello");
        assert_eq!(body("Content-Length:005").unwrap(), b"hello");
        assert_eq!(body("Content-Length: \t5\t ").unwrap(), b"hello");
        for cl in [
            "Content-Length: 5\r\nContent-Length: 5",
            "Content-Length: 5, 5",
            "Content-Length: +5",
            "Content-Length: -5",
            "Content-Length: 5 5",
            "Content-Length: 0x5",
            "Content-Length: 5.0",
            "Content-Length:",
            "Content-Length: ５",
        ] {
            assert_eq!(
                refused(&with_headers(&format!("{cl}\r\n"), "hello")),
                400,
                "{cl}"
            );
        }
        assert_eq!(
            refused(&with_headers(
                "Content-Length: 99999999999999999999999999\r\n",
                ""
            )),
            413
        );
        let short = parse(&with_headers("Content-Length: 9\r\n", "hello")).unwrap_err();
        assert!(short.to_string().contains("5 of the 9"), "{short}");
    }

    #[test]
    fn field_lines_that_could_be_read_two_ways_are_refused() {
        for (fields, why) in [
            ("X: a\r\n b\r\n", "obsolete line folding"),
            (" X: a\r\n", "obsolete line folding"),
            ("\tContent-Length: 5\r\n", "obsolete line folding"),
            (
                "Content-Length : 5\r\n",
                "whitespace between the field name",
            ),
            (
                "Transfer-Encoding\t: chunked\r\n",
                "whitespace between the field name",
            ),
            ("X Y: a\r\n", "not a token"),
            (": a\r\n", "not a token"),
            ("X: a\x00b\r\n", "control character"),
            ("X: a\x0bb\r\n", "control character"),
            ("X: a\rb\r\n", "bare CR"),
            ("X: a\r\r\n", "bare CR"),
            ("NoColon\r\n", "no colon"),
        ] {
            let e = parse(&with_headers(fields, "")).expect_err(fields);
            assert_eq!(e.status(), 400, "{fields:?}");
            assert!(e.to_string().contains(why), "{fields:?}: {e}");
        }
        assert_eq!(refused(b"POST /x HTTP/1.1\rHost: a\r\n\r\n"), 400);
        assert_eq!(refused(b"POST  /x HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(refused(b"POST /x\tHTTP/1.1\r\n\r\n"), 400);
        assert_eq!(refused(b"P(ST /x HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(refused(b"POST /\x7f HTTP/1.1\r\n\r\n"), 400);
    }

    #[test]
    fn chunk_sizes_and_extensions_are_strict() {
        let body = |chunks: &str| {
            parse(&with_headers("Transfer-Encoding: chunked\r\n", chunks)).map(|r| r.body)
        };
        assert_eq!(
            body("5 ;a=b ; c = \"q\\\"x\"\r\nhello\r\n0\r\n\r\n").unwrap(),
            b"hello"
        );
        assert_eq!(body("0005\r\nhello\r\n000\r\n\r\n").unwrap(), b"hello");
        assert_eq!(body("A\r\n0123456789\r\n0\r\n\r\n").unwrap(), b"0123456789");
        for chunks in [
            "+5\r\nhello\r\n0\r\n\r\n",
            " 5\r\nhello\r\n0\r\n\r\n",
            "5 \r\nhello\r\n0\r\n\r\n",
            "0x5\r\nhello\r\n0\r\n\r\n",
            "5;\r\nhello\r\n0\r\n\r\n",
            "5;a=\r\nhello\r\n0\r\n\r\n",
            "5;a=\"x\r\nhello\r\n0\r\n\r\n",
            "5;a b\r\nhello\r\n0\r\n\r\n",
            "4\r\nhello\r\n0\r\n\r\n",
            "6\r\nhello\r\n0\r\n\r\n",
            "5\r\nhelloXY0\r\n\r\n",
            "5\nhello\r\n0\r\n\r\n",
            "5\r\nhello\n0\r\n\r\n",
            "5\r\nhello\r\n0\n\r\n",
            "5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
            "5\r\nhello\r\n0\r\n X: folded\r\n\r\n",
            "5\r\nhello\r\n",
            "5\r\nhello\r\n0\r\n",
        ] {
            assert_eq!(
                body(chunks).map_err(|e| e.status()).expect_err(chunks),
                400,
                "{chunks:?}"
            );
        }
        // Trailer fields are checked, then ignored: they never change the framing.
        assert_eq!(
            body("5\r\nhello\r\n0\r\nContent-Length: 99\r\n\r\n").unwrap(),
            b"hello"
        );
        assert_eq!(
            body("fffffffffffffffff\r\n")
                .map_err(|e| e.status())
                .unwrap_err(),
            413
        );
        assert_eq!(body("100001\r\n").map_err(|e| e.status()).unwrap_err(), 413);
    }

    #[test]
    fn connection_options_and_blank_lines() {
        let close = |c: &str| {
            parse(format!("POST /x HTTP/1.1\r\nConnection: {c}\r\n\r\n").as_bytes())
                .unwrap()
                .close
        };
        assert!(close("keep-alive, Close"));
        assert!(!close("xclosex"));
        assert!(!close("keep-alive"));
        let keep10 = parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert!(!keep10.close);
        let a_few = format!("{}GET / HTTP/1.1\r\n\r\n", "\r\n".repeat(MAX_BLANK_LINES));
        assert!(parse(a_few.as_bytes()).is_ok());
        let too_many = format!(
            "{}GET / HTTP/1.1\r\n\r\n",
            "\r\n".repeat(MAX_BLANK_LINES + 1)
        );
        assert_eq!(refused(too_many.as_bytes()), 400);
        assert!(matches!(parse(b"\r\n\r\n"), Err(HttpError::Closed)));
    }

    proptest! {
        /// A body reads the same whether it is sent with Content-Length or chunked, however
        /// it is cut into chunks.
        #[test]
        fn content_length_and_chunked_bodies_agree(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            cuts in proptest::collection::vec(1usize..64, 0..12),
        ) {
            let mut cl = format!("POST /x HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            cl.extend_from_slice(&body);
            let mut chunked = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            let mut rest = &body[..];
            for c in cuts.iter().cycle().take(body.len()) {
                if rest.is_empty() {
                    break;
                }
                let (chunk, tail) = rest.split_at((*c).min(rest.len()));
                chunked.extend_from_slice(format!("{:x};e=1\r\n", chunk.len()).as_bytes());
                chunked.extend_from_slice(chunk);
                chunked.extend_from_slice(b"\r\n");
                rest = tail;
            }
            if !rest.is_empty() {
                chunked.extend_from_slice(format!("{:X}\r\n", rest.len()).as_bytes());
                chunked.extend_from_slice(rest);
                chunked.extend_from_slice(b"\r\n");
            }
            chunked.extend_from_slice(b"0\r\n\r\n");
            prop_assert_eq!(&parse(&cl).unwrap().body, &body);
            prop_assert_eq!(&parse(&chunked).unwrap().body, &body);
        }

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
