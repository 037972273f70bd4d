//! What one login's refresh is done with, resolved from the config file, the environment and the
//! provider's defaults: the token endpoint and client, the timeouts and retry budget, the lock
//! timeout, the floor a token in hand must clear to be used. Also which token URLs may carry a
//! refresh token at all. A leaf under the providers: it knows their defaults' shape, not them.

use crate::oauth::backoff::RetryPolicy;
use std::path::PathBuf;
use std::time::Duration;

/// A provider's built-in request settings, each overridable in the config file.
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    pub token_url: &'static str,
    pub client_id: &'static str,
    /// Sent with the request when not empty.
    pub scope: &'static str,
    pub user_agent: &'static str,
}

/// Everything a refresh needs to know besides the login itself.
#[derive(Clone, Debug)]
pub struct Settings {
    pub token_url: String,
    pub client_id: String,
    /// A `Secret`, so that no debug print of the settings can show it.
    pub client_secret: Option<crate::secret::Secret>,
    pub scope: String,
    pub user_agent: String,
    pub min_ttl: Duration,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    pub lock_timeout: Duration,
    /// `exec` and `token` run with the token in hand when a refresh cannot be done and it has at
    /// least this much left (default 5 minutes).
    pub usable_floor: Duration,
    /// The config file, for messages that say where to set something.
    pub config_path: PathBuf,
}

/// Below this much life left a token is not worth starting a run with (Claude Code refreshes at
/// 5 minutes on its own).
pub const DEFAULT_USABLE_FLOOR: Duration = Duration::from_secs(300);

/// A token URL we can send a refresh token to: `https://`, or `http://` to this machine (a local
/// proxy, the tests' stand-in), or `http://` anywhere with `allow_http = true`. Anything else is
/// a configuration error found before any request, not a network failure to retry.
pub fn check_token_url(url: &str, allow_http: bool) -> Result<(), String> {
    let example = "set it like \"https://auth.example.com/oauth/token\"";
    let shown = crate::oauth::endpoint::printable(url);
    if url.trim().is_empty() {
        return Err(format!("is empty; {example}"));
    }
    if let Some((scheme, _)) = url.split_once("://")
        && !scheme.eq_ignore_ascii_case("http")
        && !scheme.eq_ignore_ascii_case("https")
    {
        let scheme = crate::oauth::endpoint::printable(scheme);
        return Err(format!(
            "`{shown}` is a {scheme}: URL; tokenkeeper speaks only https (http on this machine); {example}"
        ));
    }
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|_| format!("`{shown}` is not a URL; {example}"))?;
    let host = uri.host().filter(|h| !h.is_empty());
    match (uri.scheme_str(), host) {
        (Some("https"), Some(_)) => Ok(()),
        (Some("http"), Some(host)) if allow_http || is_loopback(host) => Ok(()),
        (Some("http"), Some(_)) => Err(format!(
            "`{shown}` would send the refresh token in clear text to another machine; use https, or set `allow_http = true` in the provider's table if that network is trusted"
        )),
        (Some(scheme @ ("http" | "https")), None) => Err(format!(
            "`{shown}` has no host after {scheme}://; {example}"
        )),
        (Some(scheme), _) => Err(format!(
            "`{shown}` is a {scheme}: URL; tokenkeeper speaks only https (http on this machine); {example}"
        )),
        (None, _) => Err(format!("`{shown}` is not an http(s) URL; {example}")),
    }
}

/// `localhost`, 127.0.0.0/8 or ::1: a plain `http://` there never leaves the machine.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_urls_that_cannot_carry_a_refresh_token_are_refused() {
        for ok in [
            "https://platform.claude.com/v1/oauth/token",
            "http://127.0.0.1:8080/token",
            "http://localhost/token",
            "http://[::1]:9/t",
        ] {
            assert_eq!(check_token_url(ok, false), Ok(()), "{ok}");
        }
        for (bad, words) in [
            ("", "is empty"),
            ("   ", "is empty"),
            ("ftp://auth.example.com/token", "ftp: URL"),
            ("file:///etc/passwd", "file: URL"),
            ("auth.example.com/token", "not a URL"),
            ("https://", "not a URL"),
            ("http://auth.example.com/token", "clear text"),
            ("http://10.0.0.1/token", "clear text"),
            ("https://a b/", "not a URL"),
        ] {
            let why = check_token_url(bad, false).expect_err(bad);
            assert!(why.contains(words), "{bad}: {why}");
        }
        assert_eq!(
            check_token_url("http://auth.example.com/token", true),
            Ok(())
        );
    }
}
