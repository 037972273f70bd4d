//! The token endpoint: one HTTP client, the refresh request, and the classification of every
//! possible answer into new tokens, a transient failure (try again later) or a permanent
//! rejection (the login is dead). Classification is pure and tested without a network; no part
//! of a server's reply other than its error code and description ever reaches a message.

use crate::login::EpochMs;
use crate::oauth::request::{RejectionRule, TokenRequest};
use crate::secret::Secret;
use serde_json::Value;
use std::time::Duration;

/// A successful token response.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenResponse {
    pub access_token: Secret,
    /// Absent when the provider keeps the old refresh token.
    pub refresh_token: Option<Secret>,
    /// Seconds; absent when the provider does not say (Codex: the access token's JWT does).
    pub expires_in: Option<u64>,
    pub scope: Option<String>,
    pub refresh_token_expires_in: Option<u64>,
    /// OpenID Connect's identity token (Codex and Gemini keep one).
    pub id_token: Option<Secret>,
}

impl TokenResponse {
    /// When the new access token expires: `now + expires_in`, else the `exp` claim of the access
    /// token when it is a JWT, else `now + unknown`; never later than `now + longest`, the
    /// provider's longest real lifetime with a margin. A server that claims more (`expires_in` of
    /// 1e30, say) would otherwise have us store a time that never comes and never refresh again;
    /// that is said once per process.
    pub fn expires_at(&self, now: EpochMs, unknown: Duration, longest: Duration) -> EpochMs {
        let claimed = match self.expires_in {
            Some(secs) => now.saturating_add(secs_to_ms(secs)),
            None => crate::oauth::jwt::expiry_ms(self.access_token.expose())
                .unwrap_or_else(|| now.saturating_add(secs_to_ms(unknown.as_secs()))),
        };
        crate::oauth::lifetime::believed_expiry(claimed, now, longest, "the token endpoint says")
    }
}

fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000)
}

/// What one attempt came to.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Tokens(TokenResponse),
    /// Worth retrying: network trouble, timeout, 5xx, 429, a proxy's HTML page.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The refresh token (or client) was refused: retrying cannot help.
    Rejected {
        code: String,
        description: String,
    },
}

/// Error codes that mean the login is dead.
const PERMANENT: &[&str] = &["invalid_grant", "invalid_client", "unauthorized_client"];
const MAX_BODY: u64 = 1 << 20;

/// Classifies a complete HTTP answer. `retry_after` is the raw header value; `rule` says which
/// error answers mean the login is dead.
pub fn classify(status: u16, retry_after: Option<&str>, body: &[u8], rule: RejectionRule) -> Reply {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let retry_after = retry_after.and_then(parse_retry_after);
    if (200..300).contains(&status) {
        return match json.as_ref().and_then(token_response) {
            Some(tokens) => Reply::Tokens(tokens),
            None => Reply::Transient {
                reason: format!("HTTP {status} without tokens ({})", describe_body(body)),
                retry_after,
            },
        };
    }
    let (code, description) = json.as_ref().map(error_of).unwrap_or_default();
    if matches!(status, 400 | 401 | 403) && PERMANENT.contains(&code.as_str()) {
        return Reply::Rejected { code, description };
    }
    // Only the endpoint's own OAuth error answer proves the login dead: a proxy's HTML page or
    // an empty 401 says nothing about the refresh token, and refusing it for good would end a
    // login that works again once the proxy does.
    let oauth_error = json.as_ref().is_some_and(|v| v.get("error").is_some());
    if status == 401 && rule == RejectionRule::OAuthOrAny401 && oauth_error {
        let code = if code.is_empty() {
            "HTTP 401".to_string()
        } else {
            code
        };
        return Reply::Rejected { code, description };
    }
    let detail = if code.is_empty() {
        describe_body(body)
    } else if description.is_empty() {
        code
    } else {
        format!("{code}: {description}")
    };
    Reply::Transient {
        reason: format!("HTTP {status} ({detail})"),
        retry_after,
    }
}

fn token_response(v: &Value) -> Option<TokenResponse> {
    let access = v.get("access_token")?.as_str().filter(|s| !s.is_empty())?;
    let expires_in = v.get("expires_in").and_then(|e| {
        e.as_u64()
            .or_else(|| e.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .or_else(|| e.as_str().and_then(|s| s.parse().ok()))
    });
    Some(TokenResponse {
        access_token: Secret::new(access),
        refresh_token: v
            .get("refresh_token")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(Secret::new),
        expires_in,
        scope: v.get("scope").and_then(Value::as_str).map(str::to_string),
        refresh_token_expires_in: v.get("refresh_token_expires_in").and_then(Value::as_u64),
        id_token: v
            .get("id_token")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(Secret::new),
    })
}

/// OAuth's `{"error":"invalid_grant","error_description":"…"}`, Anthropic's
/// `{"type":"error","error":{"type":"…","message":"…"}}` or OpenAI's
/// `{"error":{"code":"refresh_token_reused","message":"…"}}`.
fn error_of(v: &Value) -> (String, String) {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(clean).unwrap_or_default();
    match v.get("error") {
        Some(Value::String(code)) => (clean(code), text(v.get("error_description"))),
        Some(Value::Object(e)) => {
            let code = text(e.get("code"));
            let code = if code.is_empty() {
                text(e.get("type"))
            } else {
                code
            };
            (code, text(e.get("message")))
        }
        _ => Default::default(),
    }
}

/// A URL or other untrusted text made fit for a message (see [`clean`]).
pub fn printable(s: &str) -> String {
    clean(s)
}

/// Printable, one line, at most 200 characters: fit for a message. A server's text may hold
/// terminal escapes or bidirectional overrides (U+202E turns the rest of a line around); those
/// are shown escaped (`\u{1b}`), never passed to a terminal, a log or an alert as they are.
pub(crate) fn clean(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() >= 200 {
            break;
        }
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() || is_bidi_control(c) => {
                out.extend(c.escape_unicode());
            }
            c => out.push(c),
        }
    }
    let mut end = out.len().min(200);
    while !out.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].trim().to_string()
}

/// The Unicode characters that reorder text on screen (Trojan Source).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn describe_body(body: &[u8]) -> String {
    let head = String::from_utf8_lossy(&body[..body.len().min(512)]).to_ascii_lowercase();
    if body.is_empty() {
        "empty body".into()
    } else if head.contains("<html") || head.contains("<!doctype") {
        "an HTML page, likely from a proxy or firewall".into()
    } else {
        "an unexpected body".into()
    }
}

/// `Retry-After: 120` or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = jiff::fmt::rfc2822::parse(v).ok()?.timestamp();
    let wait = when.duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// What every HTTP client of ours starts from: rustls with the platform's roots and the CA file
/// a person added ([`crate::tls`]), proxies from the environment, non-2xx answers
/// returned for our own classification, no idle connections kept, and no redirect followed: a
/// token endpoint that redirects is answered by us, never by whatever host it points at (which
/// would otherwise be sent a request and have its answer written over the login).
pub fn client_config() -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(crate::tls::ureq_roots())
        .build();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls)
        .max_idle_connections(0)
        .max_redirects(0)
}

/// A 3xx answer from the token endpoint: a failure that names where it pointed, never followed.
/// Transient, since captive portals and proxies redirect; the hint says what to do when the
/// endpoint really moved.
pub fn classify_redirect(status: u16, location: Option<&str>) -> Option<Reply> {
    if !(300..400).contains(&status) {
        return None;
    }
    let to = location.map_or_else(|| "nowhere".to_string(), |l| format!("`{}`", clean(l)));
    Some(Reply::Transient {
        reason: format!(
            "HTTP {status} redirect to {to}, not followed (tokenkeeper sends a refresh token only to the configured token URL; if the endpoint moved, set `token_url`)"
        ),
        retry_after: None,
    })
}

/// The one HTTP client: rustls with the platform's roots and the CA file a person added,
/// proxies from the environment, our own classification of non-2xx answers.
///
/// The client is built on the first request: the fast path, which makes none, never pays for it.
pub struct TokenEndpoint {
    agent: std::sync::OnceLock<ureq::Agent>,
    url: String,
    user_agent: String,
}

impl TokenEndpoint {
    pub fn new(url: &str, user_agent: &str) -> TokenEndpoint {
        TokenEndpoint {
            agent: std::sync::OnceLock::new(),
            url: url.to_string(),
            user_agent: user_agent.to_string(),
        }
    }

    fn agent(&self) -> &ureq::Agent {
        self.agent
            .get_or_init(|| client_config().build().new_agent())
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends `request` to the endpoint with our usual headers, waiting at most `timeout`.
    fn send(
        &self,
        request: &TokenRequest,
        timeout: Duration,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let (content_type, bytes) = request.body.encode();
        let mut builder = self
            .agent()
            .post(&self.url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("Content-Type", content_type)
            .header("Accept", "application/json, text/plain, */*")
            .header("User-Agent", &self.user_agent);
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder.send(&bytes[..])
    }

    /// Posts one token request and classifies the answer. Never fails: transport trouble is a
    /// [`Reply::Transient`].
    pub fn post(&self, request: &TokenRequest, rule: RejectionRule, timeout: Duration) -> Reply {
        let result = self.send(request, timeout);
        let mut response = match result {
            Ok(r) => r,
            Err(e) => return transport_failure(&e, &self.url),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let location = response
            .headers()
            .get("location")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        if let Some(redirect) = classify_redirect(status, location.as_deref()) {
            return redirect;
        }
        let body = match response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
        {
            Ok(b) => b,
            Err(e) => return transport_failure(&e, &self.url),
        };
        classify(status, retry_after.as_deref(), &body, rule)
    }
}

/// The refresh token a [`TokenEndpoint::probe`] sends: obviously not one, so the endpoint
/// answers `invalid_grant` and nothing is spent.
pub const PROBE_REFRESH_TOKEN: &str = "tokenkeeper-doctor-probe";

/// What a probe of the token endpoint got back: any HTTP answer at all.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    pub status: u16,
    /// The answer's `Date` header, as sent (for a clock check).
    pub date: Option<String>,
}

impl TokenEndpoint {
    /// Reaches the endpoint (DNS, connection, TLS, proxy) without spending a refresh token: posts
    /// the refresh request `build` makes from [`PROBE_REFRESH_TOKEN`] (the only secret it is
    /// handed, never a stored login's), and reads only the status and the `Date` header. `Err` is
    /// the transport failure, described as [`TokenEndpoint::post`] describes it (host, step, fix).
    pub fn probe(
        &self,
        build: &dyn Fn(&Secret) -> TokenRequest,
        timeout: Duration,
    ) -> Result<Probe, String> {
        let request = build(&Secret::new(PROBE_REFRESH_TOKEN));
        let response = match self.send(&request, timeout) {
            Ok(r) => r,
            Err(e) => {
                return Err(match transport_failure(&e, &self.url) {
                    Reply::Transient { reason, .. } => reason,
                    other => format!("{other:?}"),
                });
            }
        };
        Ok(Probe {
            status: response.status().as_u16(),
            date: response
                .headers()
                .get("date")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        })
    }
}

/// How far this machine's clock is behind (negative) or ahead (positive) of an HTTP `Date`
/// header, in seconds; `None` when the header is not a date.
pub fn clock_skew_secs(date: &str, now: jiff::Timestamp) -> Option<i64> {
    let theirs = jiff::fmt::rfc2822::parse(date.trim()).ok()?.timestamp();
    Some(now.as_second() - theirs.as_second())
}

fn transport_failure(e: &ureq::Error, url: &str) -> Reply {
    let host = host_of(url);
    // `-v` shows every cause; the one line says which step failed and what fixes it.
    tracing::debug!("the request to {host} failed: {}", cause_chain(e));
    Reply::Transient {
        reason: describe_transport(e, &host),
        retry_after: None,
    }
}

/// `host[:port]` of a URL, for messages (never its path or query).
pub fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    // Credentials in a URL are never shown.
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    clean(host)
}

/// An error and each of its causes, `: `-separated.
fn cause_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    clean(&text)
}

/// Which step of reaching the endpoint failed (name lookup, connection, TLS handshake, proxy,
/// the answer) and the fix a person can make. Pure, so each case is tested without a network.
/// Webhooks use it too.
pub fn describe_transport(e: &ureq::Error, host: &str) -> String {
    const PROXY: &str =
        "if this network needs a proxy, set HTTPS_PROXY (see docs/troubleshooting.md)";
    let dns =
        || format!("cannot resolve {host} (DNS lookup failed); check the network, or {PROXY}");
    match e {
        ureq::Error::Timeout(_) => format!("no answer before the timeout from {host}"),
        ureq::Error::HostNotFound => dns(),
        ureq::Error::ConnectionFailed => format!(
            "cannot connect to {host} (refused or unreachable); check the network and firewall, or {PROXY}"
        ),
        ureq::Error::InvalidProxyUrl => {
            "the proxy named in HTTPS_PROXY, HTTP_PROXY or ALL_PROXY is not a usable URL; fix or unset it".into()
        }
        ureq::Error::Tls(what) => tls_failure(host, what),
        ureq::Error::Io(io) => match io.get_ref() {
            Some(inner) if io.kind() == std::io::ErrorKind::InvalidData => {
                tls_failure(host, &cause_chain(inner))
            }
            _ if io.to_string().contains("failed to lookup address") => dns(),
            _ if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            ) =>
            {
                format!(
                    "cannot connect to {host} ({}); check the network and firewall, or {PROXY}",
                    io.kind()
                )
            }
            _ => format!("network error: {} talking to {host}", io.kind()),
        },
        other => {
            let text = cause_chain(other);
            if text.to_ascii_lowercase().contains("certificate") || text.contains("TLS") {
                tls_failure(host, &text)
            } else {
                format!("the request to {host} failed: {text}")
            }
        }
    }
}

fn tls_failure(host: &str, why: &str) -> String {
    format!(
        "the TLS handshake with {host} failed ({}); if a proxy or firewall inspects TLS, trust its certificate authority: set TOKENKEEPER_CA_FILE (or ca_file in [tls] of the config file) to its PEM file (see docs/troubleshooting.md)",
        clean(why)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_skew_is_read_from_a_date_header() {
        let now = jiff::Timestamp::from_second(784_111_777).unwrap();
        assert_eq!(
            clock_skew_secs("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(0)
        );
        let later = jiff::Timestamp::from_second(784_111_777 + 90).unwrap();
        assert_eq!(
            clock_skew_secs("Sun, 06 Nov 1994 08:49:37 GMT", later),
            Some(90)
        );
        assert_eq!(clock_skew_secs("soon", now), None);
    }

    #[test]
    fn a_transport_failure_names_the_host_the_step_and_the_fix() {
        let host = host_of("https://user:pw@platform.claude.com:443/v1/oauth/token?x=1");
        assert_eq!(host, "platform.claude.com:443");
        let dns = describe_transport(&ureq::Error::HostNotFound, &host);
        assert!(dns.contains("cannot resolve platform.claude.com") && dns.contains("HTTPS_PROXY"));
        let lookup = std::io::Error::other(
            "failed to lookup address information: Temporary failure in name resolution",
        );
        let dns = describe_transport(&ureq::Error::Io(lookup), &host);
        assert!(dns.contains("DNS lookup failed"), "{dns}");
        let refused = describe_transport(&ureq::Error::ConnectionFailed, &host);
        assert!(
            refused.contains("cannot connect to platform.claude.com"),
            "{refused}"
        );
        let cert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        );
        let tls = describe_transport(&ureq::Error::Io(cert), &host);
        assert!(
            tls.contains("TLS handshake with platform.claude.com")
                && tls.contains("UnknownIssuer")
                && tls.contains("certificate authority"),
            "{tls}"
        );
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let reset = describe_transport(&ureq::Error::Io(reset), &host);
        assert!(reset.contains("network error: connection reset"), "{reset}");
        assert!(!describe_transport(&ureq::Error::HostNotFound, &host).contains("pw"));
    }

    /// The tokens of a 200 with `body`.
    fn granted(body: &[u8]) -> TokenResponse {
        match classify(200, None, body, RejectionRule::OAuth) {
            Reply::Tokens(t) => t,
            _ => panic!("{}", String::from_utf8_lossy(body)),
        }
    }

    #[test]
    fn tokens_are_read_from_a_2xx() {
        let body = br#"{"access_token":"a","refresh_token":"r","expires_in":28800,"scope":"user:inference"}"#;
        let Reply::Tokens(t) = classify(200, None, body, RejectionRule::OAuth) else {
            panic!()
        };
        assert_eq!(t.expires_in, Some(28800));
        assert_eq!(t.refresh_token, Some(Secret::new("r")));
        let t = granted(br#"{"access_token":"a","expires_in":60}"#);
        assert_eq!(t.refresh_token, None);
    }

    #[test]
    fn only_an_oauth_error_body_makes_a_401_fatal_for_openai() {
        let rule = RejectionRule::OAuthOrAny401;
        for body in [
            &br#"{"error":{"code":"refresh_token_expired","message":"x"}}"#[..],
            br#"{"error":{"message":"Your refresh token has already been used"}}"#,
            br#"{"error":"whatever"}"#,
        ] {
            assert!(
                matches!(classify(401, None, body, rule), Reply::Rejected { .. }),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        for body in [
            &b"<html><body>Proxy authentication required</body></html>"[..],
            b"",
            b"401 Unauthorized",
            br#"{"message":"unauthorized"}"#,
        ] {
            assert!(
                matches!(classify(401, None, body, rule), Reply::Transient { .. }),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn rejections_are_permanent() {
        for code in PERMANENT {
            let body = format!(
                r#"{{"error":"{code}","error_description":"Refresh token not found or invalid"}}"#
            );
            assert_eq!(
                classify(400, None, body.as_bytes(), RejectionRule::OAuth),
                Reply::Rejected {
                    code: code.to_string(),
                    description: "Refresh token not found or invalid".into()
                }
            );
        }
    }

    #[test]
    fn everything_else_is_transient() {
        let cases: &[(u16, Option<&str>, &[u8], &str)] = &[
            (500, None, b"oops", "HTTP 500"),
            (503, None, b"", "empty body"),
            (
                429,
                Some("7"),
                br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
                "rate_limit_error: slow down",
            ),
            (
                400,
                None,
                br#"{"type":"error","error":{"type":"invalid_request_error","message":"x"}}"#,
                "invalid_request_error",
            ),
            (200, None, b"<!DOCTYPE html><html>login</html>", "HTML page"),
            (
                502,
                None,
                b"<html><body>Bad gateway</body></html>",
                "HTML page",
            ),
            (200, None, br#"{"access_token":""}"#, "without tokens"),
        ];
        for (status, ra, body, needle) in cases {
            match classify(*status, *ra, body, RejectionRule::OAuth) {
                Reply::Transient {
                    reason,
                    retry_after,
                } => {
                    assert!(reason.contains(needle), "{reason}");
                    if ra.is_some() {
                        assert_eq!(retry_after, Some(Duration::from_secs(7)));
                    }
                }
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    #[test]
    fn terminal_escapes_and_bidi_overrides_from_a_server_are_shown_escaped() {
        let body = r#"{"error":"invalid_grant","error_description":"\u001b[2J\u001b]0;pwned\u0007 token \u202egnp.exe"}"#;
        let Reply::Rejected { description, .. } =
            classify(400, None, body.as_bytes(), RejectionRule::OAuth)
        else {
            panic!()
        };
        for bad in ['\u{1b}', '\u{7}', '\u{202e}'] {
            assert!(!description.contains(bad), "{description:?}");
        }
        assert!(description.contains("\\u{1b}[2J"), "{description}");
        assert!(description.contains("\\u{202e}gnp.exe"), "{description}");
    }

    #[test]
    fn an_absurd_lifetime_is_capped_at_the_longest_real_one() {
        let now = 1_800_000_000_000;
        let (unknown, longest) = (Duration::from_secs(900), Duration::from_secs(86_400));
        for body in [
            r#"{"access_token":"a","expires_in":1e30}"#,
            r#"{"access_token":"a","expires_in":18446744073709551615}"#,
            r#"{"access_token":"a","expires_in":9223372036854775807}"#,
        ] {
            let Reply::Tokens(t) = classify(200, None, body.as_bytes(), RejectionRule::OAuth)
            else {
                panic!("{body}")
            };
            assert_eq!(
                t.expires_at(now, unknown, longest),
                now + 86_400_000,
                "{body}"
            );
        }
        let t = granted(br#"{"access_token":"a","expires_in":28800}"#);
        assert_eq!(t.expires_at(now, unknown, longest), now + 28_800_000);
    }

    #[test]
    fn a_redirect_is_a_failure_naming_where_it_points() {
        let Some(Reply::Transient { reason, .. }) =
            classify_redirect(302, Some("https://elsewhere.example/token\u{1b}[31m"))
        else {
            panic!()
        };
        assert!(reason.contains("HTTP 302"), "{reason}");
        assert!(
            reason.contains("https://elsewhere.example/token"),
            "{reason}"
        );
        assert!(reason.contains("not followed"), "{reason}");
        assert!(!reason.contains('\u{1b}'), "{reason}");
        for status in [301, 303, 307, 308] {
            assert!(classify_redirect(status, None).is_some(), "{status}");
        }
        assert_eq!(classify_redirect(200, Some("x")), None);
        assert_eq!(classify_redirect(400, Some("x")), None);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn server_text_is_reduced_to_one_short_line() {
        let long = "x".repeat(1000);
        let body = format!(r#"{{"error":"invalid_grant","error_description":"a\nb{long}"}}"#);
        let Reply::Rejected { description, .. } =
            classify(400, None, body.as_bytes(), RejectionRule::OAuth)
        else {
            panic!()
        };
        assert!(!description.contains('\n'));
        assert!(description.len() <= 200);
    }
}
