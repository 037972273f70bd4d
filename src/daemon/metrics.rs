//! Metrics: what the daemon knows about each login, in Prometheus text format, served on a
//! loopback port for a scraper. The daemon records into a shared [`Metrics`]; [`serve`] answers
//! `GET /metrics` with no HTTP framework: each connection on a small thread of its own, its whole
//! request bounded by one deadline, and at most [`MAX_CONNECTIONS`] at once, so idle or slow
//! clients can neither delay a scrape nor pile up threads. Nothing here holds a token.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// What is known about one provider's login.
#[derive(Clone, Debug, Default)]
pub struct LoginMetrics {
    /// When the access token expires, in seconds since the Unix epoch.
    pub access_expiry: Option<i64>,
    /// When the login itself (the refresh token) ends, when the provider says.
    pub login_expiry: Option<i64>,
    /// Refresh outcomes by result: "refreshed", "adopted", "failed", "dead".
    pub refresh_total: BTreeMap<&'static str, u64>,
    pub dead: bool,
}

/// Shown as 0 before the first of each happens, so a rate over them works from the start.
const RESULTS: [&str; 4] = ["adopted", "dead", "failed", "refreshed"];

/// What is known about one access-only copy of a login (`[[mirror]]`).
#[derive(Clone, Debug, Default)]
pub struct CopyMetrics {
    /// When the copy last held the owner's current token (written, or found so), in ms since
    /// the Unix epoch: its age is the time since.
    pub current_at: Option<i64>,
    /// When the access token the copy holds expires, in seconds since the Unix epoch.
    pub access_expiry: Option<i64>,
    /// The copy cannot be written now.
    pub failing: bool,
}

/// The logins' metrics by provider, and the copies' by (login, path), shared between the
/// daemon and the server.
#[derive(Clone, Default)]
pub struct Metrics(
    Arc<Mutex<BTreeMap<String, LoginMetrics>>>,
    Arc<Mutex<BTreeMap<(String, String), CopyMetrics>>>,
);

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    pub fn update(&self, provider: &str, f: impl FnOnce(&mut LoginMetrics)) {
        let mut logins = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(logins.entry(provider.to_string()).or_default());
    }

    pub fn update_copy(&self, login: &str, path: &str, f: impl FnOnce(&mut CopyMetrics)) {
        let mut copies = self.1.lock().unwrap_or_else(PoisonError::into_inner);
        f(copies
            .entry((login.to_string(), path.to_string()))
            .or_default());
    }

    /// Keeps the copies `keep` says to keep (a folder pattern's copy whose folder is gone is not).
    pub fn retain_copies(&self, keep: impl Fn(&str, &str) -> bool) {
        let mut copies = self.1.lock().unwrap_or_else(PoisonError::into_inner);
        copies.retain(|(login, path), _| keep(login, path));
    }

    /// Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        self.render_at(crate::login::now_ms())
    }

    fn render_at(&self, now: i64) -> String {
        let logins = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, i64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        };
        let each = |f: fn(&LoginMetrics) -> Option<i64>| -> Vec<(String, i64)> {
            let labelled = |(p, m): (&String, &LoginMetrics)| {
                f(m).map(|v| (format!("provider=\"{}\"", escape(p)), v))
            };
            logins.iter().filter_map(labelled).collect()
        };
        family(
            "tokenkeeper_access_token_expiry_timestamp_seconds",
            "gauge",
            "When the current access token expires, in seconds since the Unix epoch.",
            each(|m| m.access_expiry),
        );
        family(
            "tokenkeeper_login_expiry_timestamp_seconds",
            "gauge",
            "When the login ends and the person must log in again, in seconds since the Unix epoch.",
            each(|m| m.login_expiry),
        );
        let mut refreshes = Vec::new();
        for (provider, m) in &logins {
            let mut counts: BTreeMap<&str, u64> = RESULTS.iter().map(|r| (*r, 0)).collect();
            counts.extend(&m.refresh_total);
            for (result, n) in counts {
                let labels = format!(
                    "provider=\"{}\",result=\"{}\"",
                    escape(provider),
                    escape(result)
                );
                refreshes.push((labels, i64::try_from(n).unwrap_or(i64::MAX)));
            }
        }
        family(
            "tokenkeeper_refresh_total",
            "counter",
            "Refresh attempts by outcome: refreshed, adopted (another process had refreshed), failed (will retry), dead (login refused).",
            refreshes,
        );
        family(
            "tokenkeeper_login_dead",
            "gauge",
            "1 when the provider refused the login and the person must log in again, else 0.",
            each(|m| Some(i64::from(m.dead))),
        );
        let copies = self
            .1
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if !copies.is_empty() {
            let each = |f: &dyn Fn(&CopyMetrics) -> Option<i64>| -> Vec<(String, i64)> {
                let labelled = |((login, path), m): (&(String, String), &CopyMetrics)| {
                    f(m).map(|v| {
                        let labels =
                            format!("provider=\"{}\",path=\"{}\"", escape(login), escape(path));
                        (labels, v)
                    })
                };
                copies.iter().filter_map(labelled).collect()
            };
            family(
                "tokenkeeper_copy_age_seconds",
                "gauge",
                "Seconds since the access-only copy last held the owner's current token (written, or found so).",
                each(&|m| m.current_at.map(|at| now.saturating_sub(at).max(0) / 1000)),
            );
            family(
                "tokenkeeper_copy_access_token_expiry_timestamp_seconds",
                "gauge",
                "When the access token the copy holds expires, in seconds since the Unix epoch.",
                each(&|m| m.access_expiry),
            );
            family(
                "tokenkeeper_copy_failing",
                "gauge",
                "1 when the copy cannot be written (permissions, a full disk, a login of its own), else 0.",
                each(&|m| Some(i64::from(m.failing))),
            );
        }
        out
    }
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// The running server; dropping it stops the thread and closes the port.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// For a connection's whole request head; shorter in tests so the slow-client tests stay quick.
const READ_TIMEOUT: Duration = if cfg!(test) {
    Duration::from_millis(300)
} else {
    Duration::from_secs(5)
};
const MAX_REQUEST: usize = 8 * 1024;
/// Connections served at once; more are closed at once (a scraper makes one at a time).
pub const MAX_CONNECTIONS: usize = 256;
/// A connection's thread needs little: a request head and the rendered text.
const CONNECTION_STACK: usize = 128 * 1024;

/// Binds `addr` and answers on one thread until the returned server is dropped.
pub fn serve(addr: SocketAddr, metrics: Metrics) -> std::io::Result<MetricsServer> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let open = Arc::new(AtomicUsize::new(0));
    let thread = std::thread::Builder::new()
        .name("tokenkeeper-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                match conn {
                    Ok(stream) => answer_aside(stream, &metrics, &open),
                    Err(e) => {
                        // Out of descriptors, say: pause rather than spin.
                        tracing::debug!("metrics: accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(MetricsServer {
        addr,
        stop,
        thread: Some(thread),
    })
}

impl MetricsServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // A blocking accept wakes only for a connection, so make one.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => [127, 0, 0, 1].into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let woken = TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok();
        match self.thread.take() {
            Some(thread) if woken => {
                let _ = thread.join();
            }
            _ => tracing::debug!("metrics: could not wake the server thread; leaving it"),
        }
    }
}

/// Answers on a thread of its own, unless [`MAX_CONNECTIONS`] are open already: then the
/// connection is closed at once rather than queued behind them.
fn answer_aside(stream: TcpStream, metrics: &Metrics, open: &Arc<AtomicUsize>) {
    if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
        open.fetch_sub(1, Ordering::SeqCst);
        tracing::debug!("metrics: {MAX_CONNECTIONS} connections open; closing a new one");
        return;
    }
    let (metrics, held) = (metrics.clone(), open.clone());
    let spawned = std::thread::Builder::new()
        .name("tokenkeeper-metrics-conn".into())
        .stack_size(CONNECTION_STACK)
        .spawn(move || {
            answer(stream, &metrics);
            held.fetch_sub(1, Ordering::SeqCst);
        });
    if let Err(e) = spawned {
        tracing::debug!("metrics: could not start a thread for a connection: {e}");
        open.fetch_sub(1, Ordering::SeqCst);
    }
}

fn answer(mut stream: TcpStream, metrics: &Metrics) {
    let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
    let Some(head) = read_head(&mut stream, std::time::Instant::now() + READ_TIMEOUT) else {
        return;
    };
    let mut words = head.split(' ');
    let (method, target) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let path = target.split('?').next().unwrap_or_default();
    let (status, kind, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        ("GET" | "HEAD", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "tokenkeeper: metrics are at /metrics\n".to_string(),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found\n".into(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET\n".into(),
        ),
    };
    let mut reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        reply.push_str(&body);
    }
    let _ = stream.write_all(reply.as_bytes());
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// The request line, once the whole head has arrived; None at the deadline (however the client
/// trickles its bytes), on EOF or an oversize head.
fn read_head(stream: &mut TcpStream, deadline: std::time::Instant) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.checked_duration_since(std::time::Instant::now())?;
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        let n = stream.read(&mut chunk).ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            return None;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.lines().next().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_logins() -> Metrics {
        let m = Metrics::new();
        m.update("claude", |l| {
            l.access_expiry = Some(1_700_000_000);
            l.login_expiry = Some(1_702_000_000);
            l.refresh_total.insert("refreshed", 3);
            l.refresh_total.insert("failed", 1);
        });
        m.update("co\"dex\\\n", |l| {
            l.access_expiry = Some(1_700_003_600);
            l.dead = true;
            *l.refresh_total.entry("dead").or_default() += 1;
        });
        m
    }

    const EXPECTED: &str = r#"# HELP tokenkeeper_access_token_expiry_timestamp_seconds When the current access token expires, in seconds since the Unix epoch.
# TYPE tokenkeeper_access_token_expiry_timestamp_seconds gauge
tokenkeeper_access_token_expiry_timestamp_seconds{provider="claude"} 1700000000
tokenkeeper_access_token_expiry_timestamp_seconds{provider="co\"dex\\\n"} 1700003600
# HELP tokenkeeper_login_expiry_timestamp_seconds When the login ends and the person must log in again, in seconds since the Unix epoch.
# TYPE tokenkeeper_login_expiry_timestamp_seconds gauge
tokenkeeper_login_expiry_timestamp_seconds{provider="claude"} 1702000000
# HELP tokenkeeper_refresh_total Refresh attempts by outcome: refreshed, adopted (another process had refreshed), failed (will retry), dead (login refused).
# TYPE tokenkeeper_refresh_total counter
tokenkeeper_refresh_total{provider="claude",result="adopted"} 0
tokenkeeper_refresh_total{provider="claude",result="dead"} 0
tokenkeeper_refresh_total{provider="claude",result="failed"} 1
tokenkeeper_refresh_total{provider="claude",result="refreshed"} 3
tokenkeeper_refresh_total{provider="co\"dex\\\n",result="adopted"} 0
tokenkeeper_refresh_total{provider="co\"dex\\\n",result="dead"} 1
tokenkeeper_refresh_total{provider="co\"dex\\\n",result="failed"} 0
tokenkeeper_refresh_total{provider="co\"dex\\\n",result="refreshed"} 0
# HELP tokenkeeper_login_dead 1 when the provider refused the login and the person must log in again, else 0.
# TYPE tokenkeeper_login_dead gauge
tokenkeeper_login_dead{provider="claude"} 0
tokenkeeper_login_dead{provider="co\"dex\\\n"} 1
"#;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        reply
    }

    #[test]
    fn each_copy_shows_its_age_expiry_and_failure() {
        let m = Metrics::new();
        m.update("claude", |l| l.access_expiry = Some(1_700_000_000));
        m.update_copy("claude", "/srv/a1/.credentials.json", |c| {
            c.current_at = Some(1_000_000);
            c.access_expiry = Some(1_700_000_000);
        });
        m.update_copy("claude", "/srv/a2/.credentials.json", |c| c.failing = true);
        let text = m.render_at(1_042_500);
        assert!(text.starts_with(EXPECTED.lines().next().unwrap()), "{text}");
        for line in [
            r#"tokenkeeper_copy_age_seconds{provider="claude",path="/srv/a1/.credentials.json"} 42"#,
            r#"tokenkeeper_copy_access_token_expiry_timestamp_seconds{provider="claude",path="/srv/a1/.credentials.json"} 1700000000"#,
            r#"tokenkeeper_copy_failing{provider="claude",path="/srv/a1/.credentials.json"} 0"#,
            r#"tokenkeeper_copy_failing{provider="claude",path="/srv/a2/.credentials.json"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        assert!(!text.contains(r#"tokenkeeper_copy_age_seconds{provider="claude",path="/srv/a2"#));
        m.retain_copies(|_, path| path.starts_with("/srv/a1"));
        assert!(!m.render_at(0).contains("/srv/a2"));
    }

    #[test]
    fn render_is_prometheus_text_for_every_login() {
        assert_eq!(two_logins().render(), EXPECTED);
    }

    #[test]
    fn metrics_are_served_over_loopback() {
        let server = serve("127.0.0.1:0".parse().unwrap(), two_logins()).unwrap();
        let reply = get(server.local_addr(), "/metrics");
        let (head, body) = reply.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("Content-Type: text/plain; version=0.0.4"),
            "{head}"
        );
        assert!(head.contains("Connection: close"), "{head}");
        assert_eq!(body, EXPECTED);
        assert!(get(server.local_addr(), "/").contains("/metrics"));
    }

    #[test]
    fn other_paths_are_not_found() {
        let server = serve("127.0.0.1:0".parse().unwrap(), Metrics::new()).unwrap();
        assert!(get(server.local_addr(), "/metricsx").starts_with("HTTP/1.1 404 "));
        assert!(get(server.local_addr(), "/favicon.ico").starts_with("HTTP/1.1 404 "));
    }

    #[test]
    fn dropping_the_server_closes_the_port() {
        let server = serve("127.0.0.1:0".parse().unwrap(), Metrics::new()).unwrap();
        let addr = server.local_addr();
        assert!(get(addr, "/metrics").starts_with("HTTP/1.1 200 "));
        drop(server);
        assert!(TcpStream::connect(addr).is_err());
    }

    #[test]
    fn idle_connections_do_not_delay_a_scrape() {
        let server = serve("127.0.0.1:0".parse().unwrap(), two_logins()).unwrap();
        // Served one after another, these would hold a scrape for 60 × 300 ms.
        let idle: Vec<TcpStream> = (0..60)
            .map(|_| TcpStream::connect(server.local_addr()).unwrap())
            .collect();
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply)
            .expect("the scrape is answered beside the idle connections");
        assert!(reply.ends_with(EXPECTED), "{reply}");
        drop(idle);
    }

    #[test]
    fn a_client_that_trickles_bytes_is_cut_off_at_the_deadline() {
        let server = serve("127.0.0.1:0".parse().unwrap(), Metrics::new()).unwrap();
        let mut slow = TcpStream::connect(server.local_addr()).unwrap();
        let started = std::time::Instant::now();
        let mut closed = false;
        // One byte every 100 ms would keep a per-read timeout of 300 ms waiting forever.
        for _ in 0..100 {
            if slow.write_all(b"G").is_err() {
                closed = true;
                break;
            }
            let mut probe = [0u8; 1];
            slow.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            if matches!(slow.read(&mut probe), Ok(0)) {
                closed = true;
                break;
            }
        }
        assert!(closed, "still open after {:?}", started.elapsed());
    }

    #[test]
    fn a_silent_client_does_not_stop_the_server_forever() {
        let server = serve("127.0.0.1:0".parse().unwrap(), Metrics::new()).unwrap();
        let _silent = TcpStream::connect(server.local_addr()).unwrap();
        // Served after the silent one times out.
        assert!(get(server.local_addr(), "/metrics").starts_with("HTTP/1.1 200 "));
    }
}
