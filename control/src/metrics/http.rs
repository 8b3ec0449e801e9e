//! A minimal HTTP/1.x server for `/metrics`, on its own thread.
//!
//! - Event-driven: one `poll(2)` over the listener, a wake-up socket and the open
//!   connections. With no connection open it sleeps without a timeout; with some, until the
//!   nearest connection deadline. Nothing wakes periodically.
//! - Robust: sockets are nonblocking; a request may be at most [`MAX_REQUEST`] bytes and must
//!   arrive, and its answer leave, within [`DEADLINE`]; at most [`MAX_CONNECTIONS`] are
//!   served at once (more are closed at once). A slow client delays nobody else, and the
//!   daemon never waits for this thread (it only reads the counters when a request came).
//! - `GET /metrics` (or `HEAD`): OpenMetrics when the `Accept` header asks for it
//!   (`application/openmetrics-text`), else the Prometheus text format 0.0.4. `GET /`: a
//!   line pointing to `/metrics`. Anything else: 404 or 405. Every answer closes the
//!   connection.
//! - By default only a loopback address is accepted: serving the counters (endpoint names,
//!   traffic volumes) to other hosts needs `--metrics-allow-remote`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::api::StatsReport;

/// Largest request (line and headers) accepted.
pub const MAX_REQUEST: usize = 8192;
/// Time a connection has to send its request and take its answer.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;

/// Where the counters come from: called once per scrape.
pub type Source = Box<dyn Fn() -> Result<StatsReport, String> + Send>;

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A non-loopback address without the explicit permission.
    #[error(
        "--metrics {0}: not a loopback address; the counters name endpoints and networks, so \
         serving them to other hosts needs --metrics-allow-remote"
    )]
    NotLoopback(SocketAddr),
    /// The socket could not be set up.
    #[error("--metrics {addr}: {source}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
}

/// The running server; dropping it stops the thread.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    wake: UnixStream,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `addr` (refused unless loopback or `allow_remote`) and serves `/metrics`
    /// from `source` on a thread of its own.
    pub fn start(
        addr: SocketAddr,
        allow_remote: bool,
        source: Source,
    ) -> Result<MetricsServer, MetricsError> {
        if !addr.ip().is_loopback() && !allow_remote {
            return Err(MetricsError::NotLoopback(addr));
        }
        let io = |source| MetricsError::Io { addr, source };
        let listener = TcpListener::bind(addr).map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        let bound = listener.local_addr().map_err(io)?;
        let (wake, wake_rx) = UnixStream::pair().map_err(io)?;
        let thread = std::thread::Builder::new()
            .name("uvlan-metrics".into())
            .spawn(move || serve(&listener, &wake_rx, &*source))
            .map_err(io)?;
        Ok(MetricsServer {
            addr: bound,
            wake,
            thread: Some(thread),
        })
    }

    /// The address served (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        let _ = self.wake.write_all(&[1]);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Conn {
    stream: TcpStream,
    deadline: Instant,
    request: Vec<u8>,
    /// The answer, once the request is complete; and how much of it is written.
    answer: Option<(Vec<u8>, usize)>,
}

fn response(status: &str, content_type: &str, body: &[u8], head: bool) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head {
        r.extend_from_slice(body);
    }
    r
}

/// The answer to a complete request (line and headers).
fn answer(request: &[u8], source: &dyn Fn() -> Result<StatsReport, String>) -> Vec<u8> {
    let text = String::from_utf8_lossy(request);
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or("");
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let head = method == "HEAD";
    if method != "GET" && !head {
        return response("405 Method Not Allowed", "text/plain", b"GET only\n", false);
    }
    let plain = "text/plain; charset=utf-8";
    match path {
        "/metrics" => {}
        "/" => {
            return response(
                "200 OK",
                plain,
                b"uvlan: the counters are on /metrics\n",
                head,
            )
        }
        _ => return response("404 Not Found", plain, b"not found: try /metrics\n", head),
    }
    let openmetrics = lines.any(|h| {
        h.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("accept") && v.contains("application/openmetrics-text")
        })
    });
    match source() {
        Ok(report) if openmetrics => response(
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            super::openmetrics(&report).as_bytes(),
            head,
        ),
        Ok(report) => response(
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            super::prometheus_text(&report).as_bytes(),
            head,
        ),
        Err(e) => response(
            "503 Service Unavailable",
            plain,
            format!("{e}\n").as_bytes(),
            head,
        ),
    }
}

fn complete(request: &[u8]) -> bool {
    request.windows(4).any(|w| w == b"\r\n\r\n") || request.windows(2).any(|w| w == b"\n\n")
}

/// Reads what is there; `Ok(true)` when the connection should be answered now.
fn read_some(c: &mut Conn) -> io::Result<bool> {
    let mut buf = [0u8; 2048];
    loop {
        match c.stream.read(&mut buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                c.request.extend_from_slice(buf.get(..n).unwrap_or(&[]));
                if c.request.len() > MAX_REQUEST || complete(&c.request) {
                    return Ok(true);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes what the socket takes; `Ok(true)` when everything is written.
fn write_some(c: &mut Conn) -> io::Result<bool> {
    let Some((out, done)) = &mut c.answer else {
        return Ok(false);
    };
    while *done < out.len() {
        match c.stream.write(out.get(*done..).unwrap_or(&[])) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn serve(
    listener: &TcpListener,
    wake: &UnixStream,
    source: &dyn Fn() -> Result<StatsReport, String>,
) {
    let mut conns: Vec<Conn> = Vec::new();
    loop {
        let now = Instant::now();
        let timeout = conns
            .iter()
            .map(|c| c.deadline.saturating_duration_since(now))
            .min()
            .map_or(-1, |d| i32::try_from(d.as_millis() + 1).unwrap_or(i32::MAX));
        let mut fds = vec![
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        for c in &conns {
            let events = if c.answer.is_some() {
                libc::POLLOUT
            } else {
                libc::POLLIN
            };
            fds.push(libc::pollfd {
                fd: c.stream.as_raw_fd(),
                events,
                revents: 0,
            });
        }
        if crate::sys::poll(&mut fds, timeout).is_err() {
            return;
        }
        if fds.get(1).is_some_and(|f| f.revents != 0) {
            return;
        }
        // Serve the open connections first (their fds follow the two fixed ones).
        let now = Instant::now();
        let mut keep = Vec::with_capacity(conns.len());
        for (mut c, fd) in conns.drain(..).zip(fds.iter().skip(2)) {
            let ok = if fd.revents == 0 {
                Ok(false)
            } else if c.answer.is_none() {
                read_some(&mut c).map(|ready| {
                    if ready {
                        let out = if complete(&c.request) {
                            answer(&c.request, source)
                        } else {
                            response(
                                "431 Request Header Fields Too Large",
                                "text/plain",
                                b"request too large\n",
                                false,
                            )
                        };
                        c.answer = Some((out, 0));
                    }
                    false
                })
            } else {
                write_some(&mut c)
            };
            // A connection ready to be answered tries to write at once.
            let ok = match ok {
                Ok(false) if c.answer.is_some() => write_some(&mut c),
                other => other,
            };
            match ok {
                Ok(false) if c.deadline > now => keep.push(c),
                _ => {} // answered, failed or too slow: closed
            }
        }
        conns = keep;
        if fds.first().is_some_and(|f| f.revents != 0) {
            loop {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if conns.len() >= MAX_CONNECTIONS || stream.set_nonblocking(true).is_err() {
                            continue;
                        }
                        conns.push(Conn {
                            stream,
                            deadline: Instant::now() + DEADLINE,
                            request: Vec::new(),
                            answer: None,
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    fn server() -> MetricsServer {
        let scrapes = std::sync::atomic::AtomicU64::new(0);
        MetricsServer::start(
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)),
            false,
            Box::new(move || {
                let n = scrapes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(StatsReport {
                    dataplane: Some(crate::api::LoopStats {
                        iterations: n,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            }),
        )
        .unwrap()
    }

    #[test]
    fn remote_addresses_need_permission() {
        let any = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0);
        let e =
            MetricsServer::start(any, false, Box::new(|| Ok(StatsReport::default()))).unwrap_err();
        assert!(matches!(e, MetricsError::NotLoopback(_)));
        assert!(e.to_string().contains("--metrics-allow-remote"), "{e}");
    }

    #[test]
    fn serves_both_formats_and_refuses_the_rest() {
        let s = server();
        let a = s.local_addr();
        let prom = get(a, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(prom.starts_with("HTTP/1.1 200 OK\r\n"), "{prom}");
        assert!(
            prom.contains("Content-Type: text/plain; version=0.0.4"),
            "{prom}"
        );
        assert!(
            prom.contains("# TYPE uvlan_dataplane_loop_iterations_total counter\n"),
            "{prom}"
        );
        assert!(
            prom.contains("uvlan_dataplane_loop_iterations_total 0\n"),
            "{prom}"
        );
        let om = get(
            a,
            "GET /metrics?x=1 HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n",
        );
        assert!(om.contains("application/openmetrics-text"), "{om}");
        assert!(
            om.contains("uvlan_dataplane_loop_iterations_total 1\n"),
            "{om}"
        );
        assert!(om.ends_with("# EOF\n"), "{om}");
        let head = get(a, "HEAD /metrics HTTP/1.0\r\n\r\n");
        assert!(
            head.starts_with("HTTP/1.1 200 OK") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        assert!(get(a, "GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(a, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        // An oversized request is refused.
        let big = format!(
            "GET /metrics HTTP/1.1\r\nX: {}",
            "a".repeat(MAX_REQUEST + 50)
        );
        let r = get(a, &big);
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
    }

    #[test]
    fn a_silent_client_delays_nobody_and_is_dropped() {
        let s = server();
        let a = s.local_addr();
        // Before the connect: the server may accept it (and start its deadline) before the
        // connect returns here, and a loaded machine can hold this thread back long after.
        let t = Instant::now();
        let mut silent = TcpStream::connect(a).unwrap();
        // Served while the silent one holds its connection.
        assert!(get(a, "GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
        assert!(t.elapsed() < DEADLINE);
        // The silent connection is closed at its deadline.
        silent
            .set_read_timeout(Some(DEADLINE + Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 16];
        assert_eq!(silent.read(&mut b).unwrap(), 0);
        let waited = t.elapsed();
        assert!(
            waited >= DEADLINE,
            "closed after {waited:?}, before its deadline"
        );
        drop(s); // joins the thread
    }
}
