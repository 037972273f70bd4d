//! A token endpoint and a webhook behind TLS whose certificate a throw-away CA signed, as a
//! proxy that inspects TLS presents them: without the CA file the refresh fails naming the TLS
//! handshake and the fix; with it (`TOKENKEEPER_CA_FILE`, `--ca-file` or `[tls] ca_file`), added
//! to the platform's roots, it succeeds. A bad CA file stops the command (exit 78) naming it.
//! Also how a refused connection reads, and what `-v` adds: the whole cause chain.

use crate::daemon::webhook_receiver;
use crate::util::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A throw-away CA and a TLS front on a loopback port, signed by it for 127.0.0.1 and
/// localhost, that hands each request (one per connection) to a plain-HTTP `backend` and its
/// answer back.
struct TlsFront {
    addr: SocketAddr,
    ca_pem: String,
}

impl TlsFront {
    fn start(backend: SocketAddr) -> TlsFront {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tokenkeeper test proxy CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let config = Arc::clone(&config);
                std::thread::spawn(move || {
                    let _ = relay(conn, config, backend);
                });
            }
        });
        TlsFront {
            addr,
            ca_pem: ca_cert.pem(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }
}

/// One request over TLS, handed to `backend` as it came; the whole answer handed back.
fn relay(
    conn: TcpStream,
    config: Arc<rustls::ServerConfig>,
    backend: SocketAddr,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    let server = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = BufReader::new(rustls::StreamOwned::new(server, conn));
    let mut request = Vec::new();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if tls.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        request.extend_from_slice(line.as_bytes());
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; len];
    tls.read_exact(&mut body)?;
    request.extend_from_slice(&body);
    let mut plain = TcpStream::connect(backend)?;
    plain.set_read_timeout(Some(Duration::from_secs(10)))?;
    plain.write_all(&request)?;
    let mut answer = Vec::new();
    plain.read_to_end(&mut answer)?;
    let tls = tls.get_mut();
    tls.write_all(&answer)?;
    tls.conn.send_close_notify();
    tls.flush()
}

/// A sandbox whose token endpoint is the stand-in behind a TLS front, with a one-second retry
/// budget (a certificate nobody trusts does not get better by waiting).
fn behind_tls() -> (Sandbox, TlsFront, PathBuf) {
    let s = Sandbox::new();
    let front = TlsFront::start(s.server.addr());
    let ca = s.dir.path().join("proxy-ca.pem");
    std::fs::write(&ca, &front.ca_pem).unwrap();
    s.config("[claude]\nretry_total = \"1s\"\n");
    (s, front, ca)
}

fn refresh(s: &Sandbox, front: &TlsFront, env: &[(&str, &PathBuf)], args: &[&str]) -> Run {
    let mut cmd = s.cmd(&[&["refresh", "--force"], args].concat());
    cmd.env("TOKENKEEPER_TOKEN_URL", front.url("/v1/oauth/token"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let run = Run::from(cmd.output().unwrap());
    s.assert_no_leak(&run, false);
    run
}

#[test]
fn a_token_endpoint_behind_an_inspecting_proxy_needs_its_ca_file_added() {
    let (s, front, ca) = behind_tls();
    let login = s.login(8 * 3_600_000);
    let before = s.read_creds();

    let run = refresh(&s, &front, &[], &[]);
    assert_eq!(run.code, 69, "{run:?}");
    assert!(
        run.stderr.contains("TLS handshake with 127.0.0.1")
            && run.stderr.contains("TOKENKEEPER_CA_FILE")
            && run.stderr.contains("[tls]"),
        "the TLS problem and its fix: {run:?}"
    );
    assert_eq!(s.read_creds(), before);
    assert_eq!(s.server.stats().token_requests, 0);
    // `-v` adds the whole cause chain, down to rustls's reason.
    let chain = format!("the request to 127.0.0.1:{} failed:", front.addr.port());
    assert!(!run.stderr.contains(&chain), "{run:?}");
    let verbose = refresh(&s, &front, &[], &["-v"]);
    let line = verbose
        .stderr
        .lines()
        .find(|l| l.contains(&chain))
        .unwrap_or_else(|| panic!("no cause chain: {verbose:?}"));
    assert!(line.contains("UnknownIssuer"), "{line}");

    let run = refresh(&s, &front, &[("TOKENKEEPER_CA_FILE", &ca)], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_ne!(
        s.creds_json()["claudeAiOauth"]["refreshToken"],
        login.refresh_token.as_str()
    );
    assert_eq!(s.server.stats().token_requests, 1);

    // The flag, and [tls] ca_file in the config file, do the same.
    let run = refresh(&s, &front, &[], &["--ca-file", ca.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    s.config(&format!(
        "[claude]\nretry_total = \"1s\"\n\n[tls]\nca_file = \"{}\"\n",
        ca.display()
    ));
    let run = refresh(&s, &front, &[], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    // A relative ca_file is taken from the config file's folder, as key_file is.
    let config = s.config("[claude]\nretry_total = \"1s\"\n\n[tls]\nca_file = \"proxy-ca.pem\"\n");
    std::fs::copy(&ca, config.with_file_name("proxy-ca.pem")).unwrap();
    let run = refresh(&s, &front, &[], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(s.server.stats().token_requests, 4);
}

#[test]
fn the_ca_file_adds_to_the_platforms_roots_for_webhooks_too() {
    let (s, _, _) = behind_tls();
    s.login(8 * 3_600_000);
    let (plain, bodies) = webhook_receiver();
    let backend: SocketAddr = plain
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let front = TlsFront::start(backend);
    let ca = s.dir.path().join("webhook-ca.pem");
    std::fs::write(&ca, &front.ca_pem).unwrap();
    let hook = front.url("/hook");
    let test_alert = |env: &[(&str, &PathBuf)]| {
        let mut cmd = s.cmd(&["daemon", "--test-alert", "--webhook", &hook]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let run = run_within(&mut cmd, Duration::from_secs(30));
        s.assert_no_leak(&run, false);
        run
    };
    let run = test_alert(&[]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("TLS handshake"), "{run:?}");
    assert!(bodies.try_recv().is_err(), "nothing got through");

    let run = test_alert(&[("TOKENKEEPER_CA_FILE", &ca)]);
    assert_eq!(run.code, 0, "{run:?}");
    let body = bodies
        .recv_timeout(Duration::from_secs(5))
        .expect("webhook call");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["event"], "test");
}

#[test]
fn a_bad_ca_file_stops_the_command_naming_it_and_changes_nothing() {
    let (s, front, _) = behind_tls();
    s.login(60_000);
    let before = s.read_creds();
    let missing = s.dir.path().join("no-such-ca.pem");
    let not_pem = s.dir.path().join("notes.txt");
    std::fs::write(&not_pem, "ask IT for the proxy certificate\n").unwrap();
    for (path, words) in [
        (&missing, "does not exist"),
        (&not_pem, "holds no certificate"),
    ] {
        let run = refresh(&s, &front, &[("TOKENKEEPER_CA_FILE", path)], &[]);
        assert_eq!(run.code, 78, "{run:?}");
        assert!(
            run.stderr
                .contains(&format!("the CA file {}", path.display()))
                && run.stderr.contains("TOKENKEEPER_CA_FILE")
                && run.stderr.contains(words),
            "{run:?}"
        );
        assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    }
    s.config(&format!("[tls]\nca_file = \"{}\"\n", missing.display()));
    let run = refresh(&s, &front, &[], &[]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr.contains("[tls] ca_file")
            && run.stderr.contains(&missing.display().to_string())
            && run.stderr.contains("config.toml"),
        "{run:?}"
    );
    assert_eq!(s.read_creds(), before, "nothing changed on disk");
    assert_eq!(s.server.stats().token_requests, 0);
}

#[test]
fn doctor_names_the_ca_file_in_use() {
    let (s, front, ca) = behind_tls();
    s.login(8 * 3_600_000);
    let doctor = |env: &[(&str, &PathBuf)]| {
        let mut cmd = s.cmd(&["doctor", "--json"]);
        cmd.env("TOKENKEEPER_TOKEN_URL", front.url("/v1/oauth/token"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let run = run_within(&mut cmd, Duration::from_secs(60));
        s.assert_no_leak(&run, false);
        let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
        let checks = v["checks"].as_array().unwrap().clone();
        let find = |name: &str| {
            checks
                .iter()
                .find(|c| c["name"] == name)
                .cloned()
                .unwrap_or_else(|| panic!("no {name} check: {run:?}"))
        };
        (find("tls"), find("endpoint claude"))
    };
    let (tls, endpoint) = doctor(&[]);
    assert!(
        tls["detail"].as_str().unwrap().contains("no CA file"),
        "{tls}"
    );
    assert_eq!(endpoint["status"], "fail", "{endpoint}");
    let (tls, endpoint) = doctor(&[("TOKENKEEPER_CA_FILE", &ca)]);
    assert_eq!(tls["status"], "ok", "{tls}");
    assert!(
        tls["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("CA file {} (1 certificate)", ca.display())),
        "{tls}"
    );
    assert_ne!(endpoint["status"], "fail", "{endpoint}");
}

#[test]
fn a_refused_connection_names_the_host_the_step_and_the_fix() {
    let s = Sandbox::new();
    s.login(60_000);
    s.config("[claude]\nretry_total = \"1s\"\n");
    // A port nothing listens on: bound, then let go.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = s.cmd(&["refresh", "--force"]);
    cmd.env(
        "TOKENKEEPER_TOKEN_URL",
        format!("https://127.0.0.1:{port}/v1/oauth/token"),
    );
    let run = Run::from(cmd.output().unwrap());
    s.assert_no_leak(&run, false);
    assert_eq!(run.code, 69, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("cannot connect to 127.0.0.1:{port}"))
            && run.stderr.contains("HTTPS_PROXY"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("uncategorized"), "{run:?}");
}
