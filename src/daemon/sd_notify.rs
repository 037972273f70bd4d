//! Telling systemd how the daemon is doing (`sd_notify`): `READY=1` once it watches, `WATCHDOG=1`
//! pings at half the unit's `WatchdogSec`, `STOPPING=1` on the way out. A datagram to
//! `$NOTIFY_SOCKET`; without that variable (not under systemd, or not on Linux), every call does
//! nothing.

#[cfg(target_os = "linux")]
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

#[cfg(target_os = "linux")]
type Socket = (UnixDatagram, SocketAddr);
/// No systemd here: there is never a socket.
#[cfg(not(target_os = "linux"))]
type Socket = std::convert::Infallible;

pub struct Notifier {
    socket: Option<Socket>,
    watchdog: Option<Duration>,
}

#[cfg(not(target_os = "linux"))]
fn notify_socket() -> Option<Socket> {
    None
}

#[cfg(target_os = "linux")]
fn notify_socket() -> Option<Socket> {
    std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
        let bytes = path.as_encoded_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name).ok()?
            }
            None => SocketAddr::from_pathname(&path).ok()?,
        };
        Some((UnixDatagram::unbound().ok()?, addr))
    })
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let socket = notify_socket();
        // WATCHDOG_PID, when set, must be ours: the variable may be inherited from a parent.
        let ours = std::env::var("WATCHDOG_PID")
            .map_or(true, |p| p.trim() == std::process::id().to_string());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|us| *us > 0 && ours)
            .map(Duration::from_micros);
        Notifier { socket, watchdog }
    }

    /// How often to ping: half the watchdog interval, when systemd set one.
    pub fn ping_every(&self) -> Option<Duration> {
        self.socket.as_ref().and(self.watchdog).map(|w| w / 2)
    }

    pub fn ready(&self) {
        self.send("READY=1");
    }

    pub fn ping(&self) {
        if self.watchdog.is_some() {
            self.send("WATCHDOG=1");
        }
    }

    pub fn reloading(&self) {
        self.send("RELOADING=1");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    #[cfg(not(target_os = "linux"))]
    fn send(&self, _message: &str) {}

    #[cfg(target_os = "linux")]
    fn send(&self, message: &str) {
        if let Some((socket, addr)) = &self.socket
            && let Err(e) = socket.send_to_addr(message.as_bytes(), addr)
        {
            tracing::debug!("sd_notify failed: {e}");
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            socket: Some((
                UnixDatagram::unbound().unwrap(),
                SocketAddr::from_pathname(&path).unwrap(),
            )),
            watchdog: Some(Duration::from_secs(60)),
        };
        assert_eq!(n.ping_every(), Some(Duration::from_secs(30)));
        n.ready();
        n.ping();
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }
}
