//! A strict loopback stand-in for a provider's OAuth token endpoint and API, used by the
//! integration tests and by `tokenkeeper demo`; it is not a production server. It behaves like the
//! real endpoint where that matters to a refresher (single-use refresh tokens, reuse detection that
//! revokes the whole login, a refresh revoking the previous access token, access tokens that expire)
//! and can be told to misbehave on demand (status codes, rate limits, hangs, resets, HTML pages,
//! OAuth errors) so every failure path can be driven over real TCP. It binds 127.0.0.1 only, serves
//! one request per connection on its own thread, and speaks HTTP/1.1 with std sockets alone: no
//! HTTP crate, no async runtime.
//!
//! For the soak's chaos loop (`tests/soak/soak.rs`) it also has a gate,
//! [`StandinServer::hold_token_requests`]: while it is held no token request is being served, so a
//! process killed then cannot lose a rotation whose reply was on its way. Nothing else uses it.

use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub const TOKEN_PATH: &str = "/v1/oauth/token";
pub const API_PATH: &str = "/v1/messages";
const MAX_BODY_BYTES: usize = 1024 * 1024;
const MAX_HEAD_BYTES: u64 = 64 * 1024;
// A client that stalls mid-request must not pin a thread forever.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const TOKEN_RANDOM_CHARS: usize = 86;
const TOKEN_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const DEFAULT_SCOPE: &str = "user:profile user:inference user:sessions:claude_code \
                             user:mcp_servers user:file_upload user:plugins";
const CAPTIVE_PORTAL_PAGE: &str = "<!DOCTYPE html><html><head><title>Network login required</title>\
    </head><body><h1>Please sign in to continue</h1></body></html>";
const BAD_GATEWAY_PAGE: &str = "<html><head><title>502 Bad Gateway</title></head><body>\
    <center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>";

#[derive(Clone, Debug)]
pub struct StandinConfig {
    pub client_id: String,
    pub access_ttl_secs: u64,
    /// Lifetime of the whole login; when set it is reported on every refresh and enforced.
    pub refresh_token_expires_in: Option<u64>,
    /// Leave `refresh_token` out of responses; the presented one then stays valid.
    pub omit_refresh_token: bool,
    /// Scope to answer with; `None` echoes the requested scope.
    pub scope_response: Option<String>,
    pub access_prefix: String,
    pub refresh_prefix: String,
    /// Whose token endpoint to play: the shape of its tokens, answers and errors.
    pub flavor: Flavor,
    /// When set, requests must carry this `client_secret` (Google's installed-app clients).
    pub client_secret: Option<String>,
}

/// Whose token endpoint the stand-in plays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Flavor {
    /// Anthropic's: opaque tokens, `expires_in`, OAuth errors with 400.
    #[default]
    Anthropic,
    /// OpenAI's (Codex CLI): access and id tokens are JWTs whose `exp` is the only expiry (no
    /// `expires_in`); a reused or unknown refresh token gets a 401 with an error `code`.
    OpenAi,
    /// Google's (Gemini CLI): `ya29.` access tokens, an `id_token`, `expires_in`; errors are
    /// OAuth's `invalid_grant` with 400.
    Google,
}

impl Default for StandinConfig {
    fn default() -> Self {
        StandinConfig {
            client_id: "9d1c250a-e61b-44d9-88ed-5944d1962f5e".to_string(),
            access_ttl_secs: 28800,
            refresh_token_expires_in: None,
            omit_refresh_token: false,
            scope_response: None,
            access_prefix: "sk-ant-oat01-".to_string(),
            refresh_prefix: "sk-ant-ort01-".to_string(),
            flavor: Flavor::Anthropic,
            client_secret: None,
        }
    }
}

impl StandinConfig {
    /// OpenAI's endpoint as Codex CLI uses it, with its client id.
    pub fn openai() -> StandinConfig {
        StandinConfig {
            client_id: "app_EMoamEEZ73f0CkXaXp7hrann".to_string(),
            access_ttl_secs: 10 * 86_400,
            access_prefix: String::new(),
            refresh_prefix: "rt_".to_string(),
            flavor: Flavor::OpenAi,
            ..StandinConfig::default()
        }
    }

    /// Google's endpoint as Gemini CLI uses it: its client id, a client secret, 1 h tokens, and
    /// refresh tokens that do not rotate.
    pub fn google(client_secret: &str) -> StandinConfig {
        StandinConfig {
            client_id: "681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com"
                .to_string(),
            access_ttl_secs: 3599,
            omit_refresh_token: true,
            scope_response: Some(
                "https://www.googleapis.com/auth/cloud-platform openid".to_string(),
            ),
            access_prefix: "ya29.".to_string(),
            refresh_prefix: "1//".to_string(),
            flavor: Flavor::Google,
            client_secret: Some(client_secret.to_string()),
            ..StandinConfig::default()
        }
    }
}

/// A misbehaviour of the token endpoint. Every fault except `Delay` and `ExpiresIn` leaves all
/// tokens untouched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 500 answers with a JSON error, 502 and 504 with an nginx HTML page, others with plain text.
    Status(u16),
    RateLimited {
        retry_after_secs: Option<u64>,
    },
    /// Read the request, send nothing for this long, then close.
    Hang(Duration),
    /// Read the request, then close with a TCP RST.
    Reset,
    /// Read the request, then close without a reply.
    Close,
    /// 200 with a captive-portal HTML page (a 502 HTML page is `Status(502)`).
    Html,
    InvalidGrant,
    InvalidGrantExpired,
    InvalidClient,
    UnauthorizedClient,
    /// 400 `invalid_request_error`, which the real endpoint sends transiently.
    InvalidRequest,
    /// Wait this long, then answer normally (the refresh token is consumed).
    Delay(Duration),
    /// 302 to this location (another host's token endpoint, say).
    Redirect(std::borrow::Cow<'static, str>),
    /// This status with a proxy's HTML page (an HTML 401 from a proxy in front of the endpoint).
    HtmlStatus(u16),
    /// Answer normally (the refresh token is consumed, new tokens issued), with `expires_in` set
    /// to this JSON number as written (`0`, `1e30`): a server whose lifetimes cannot be used.
    ExpiresIn(std::borrow::Cow<'static, str>),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StandinStats {
    /// Every POST to the token path, faulted or not.
    pub token_requests: u64,
    pub refreshes_ok: u64,
    pub reused_refresh_tokens: u64,
    pub revoked_families: u64,
    /// Refresh tokens never issued, or current ones of an already revoked family.
    pub unknown_refresh_tokens: u64,
    pub api_ok: u64,
    pub api_unauthorized: u64,
    pub faults_served: u64,
}

/// See [`StandinServer::after_token_reply`].
pub type AfterReply = Box<dyn Fn(Instant) + Send>;

#[derive(Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// The request target as sent, query included.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// When the whole request had arrived.
    pub received: Instant,
    /// When the reply had been handed to the connection (written, or failed to be: the client
    /// was gone); `None` while it is being served, or when none was sent (a hang, a reset).
    pub answered: Option<Instant>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

// Bodies and Authorization headers carry tokens, which must never reach a log.
impl fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("RecordedRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("header_names", &names)
            .field("body_len", &self.body.len())
            .finish()
    }
}

#[derive(Clone)]
pub struct IssuedLogin {
    pub family: u64,
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in_secs: u64,
}

impl fmt::Debug for IssuedLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedLogin")
            .field("family", &self.family)
            .field("access_token", &"REDACTED")
            .field("refresh_token", &"REDACTED")
            .field("expires_in_secs", &self.expires_in_secs)
            .finish()
    }
}

pub struct StandinServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept_thread: Mutex<Option<JoinHandle<()>>>,
}

impl StandinServer {
    pub fn start(config: StandinConfig) -> io::Result<StandinServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            stopping: AtomicBool::new(false),
            stats: Mutex::new(StandinStats::default()),
            book: Mutex::new(TokenBook::default()),
            faults: Mutex::new(FaultPlan::default()),
            requests: Mutex::new(Vec::new()),
            gate: RwLock::new(()),
            gate_used: AtomicBool::new(false),
            last_token_response: Mutex::new(None),
            after_token_reply: Mutex::new(None),
            api_delay: Mutex::new(Duration::ZERO),
            account_uuid: random_uuid(),
            organization_uuid: random_uuid(),
        });
        let accept_shared = Arc::clone(&shared);
        let accept_thread = thread::Builder::new()
            .name("standin-accept".to_string())
            .spawn(move || accept_loop(listener, accept_shared))?;
        Ok(StandinServer {
            shared,
            addr,
            accept_thread: Mutex::new(Some(accept_thread)),
        })
    }

    /// Stops accepting connections; requests already being served finish on their own threads.
    pub fn shutdown(&self) {
        let Some(handle) = lock(&self.accept_thread).take() else {
            return;
        };
        self.shared.stopping.store(true, Ordering::SeqCst);
        // accept() has no timeout, so a connection of our own wakes it to see the flag. If that
        // connect fails the thread is left detached rather than risking a hang on join.
        if TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok() {
            let _ = handle.join();
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.base_url())
    }

    pub fn api_url(&self) -> String {
        format!("{}{API_PATH}", self.base_url())
    }

    /// Starts a new login family, as an interactive login would.
    pub fn issue_login(&self) -> IssuedLogin {
        let config = &self.shared.config;
        let mut book = lock(&self.shared.book);
        let (access_token, refresh_token) = book.mint_pair(config);
        let family = book.families.len() as u64;
        book.access_tokens.insert(access_token.clone(), family);
        book.refresh_tokens
            .insert(refresh_token.clone(), (family, false));
        book.families.push(Family {
            access: access_token.clone(),
            access_issued: Instant::now(),
            refresh: refresh_token.clone(),
            started: Instant::now(),
            revoked: false,
        });
        IssuedLogin {
            family,
            access_token,
            refresh_token,
            expires_in_secs: config.access_ttl_secs,
        }
    }

    /// Queues a fault for the next token request (first in, first out; each used once).
    pub fn push_fault(&self, fault: Fault) {
        lock(&self.shared.faults).queue.push_back(fault);
    }

    /// A fault for every token request while the queue is empty; `None` clears it.
    pub fn set_default_fault(&self, fault: Option<Fault>) {
        lock(&self.shared.faults).default = fault;
    }

    /// With probability `rate`, a token request gets a fault picked at random from `faults`.
    pub fn set_fault_rate(&self, rate: f64, faults: Vec<Fault>) {
        let mut plan = lock(&self.shared.faults);
        plan.rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        plan.random_pool = faults;
    }

    /// Makes every API call take `delay` before its token is checked, as a real API's round
    /// trip does: a token revoked meanwhile fails the call.
    pub fn set_api_delay(&self, delay: Duration) {
        *lock(&self.shared.api_delay) = delay;
    }

    pub fn stats(&self) -> StandinStats {
        lock(&self.shared.stats).clone()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Every access and refresh token ever issued, for scanning output and files for secrets.
    pub fn all_issued_tokens(&self) -> Vec<String> {
        lock(&self.shared.book).issued.clone()
    }

    pub fn is_live_access(&self, token: &str) -> bool {
        self.shared.is_live_access(token)
    }

    /// The family's latest pair, even when revoked; `is_live_access` tells whether it still works.
    pub fn current_tokens(&self, family: u64) -> Option<(String, String)> {
        let book = lock(&self.shared.book);
        let found = book.families.get(usize::try_from(family).ok()?)?;
        Some((found.access.clone(), found.refresh.clone()))
    }

    /// Revokes the family that issued this refresh token (current or used); false if unknown.
    pub fn revoke_family_of(&self, refresh_token: &str) -> bool {
        let mut book = lock(&self.shared.book);
        let Some(&(family, _)) = book.refresh_tokens.get(refresh_token) else {
            return false;
        };
        if book.revoke(family) {
            self.shared.count(|s| &mut s.revoked_families);
        }
        true
    }

    /// The chaos gate. Every token request is served under the read side of a lock, from the
    /// moment it has been read until its reply is written (a hang lets go before it waits); this
    /// takes the write side, so while the returned guard lives no token request is between
    /// "read" and "answered", and none starts. A process killed while it is held therefore
    /// cannot lose a reply that rotated its login: either the reply was already written (see
    /// [`TokenGate::since_last_token_response`] for how long ago) or its request is served only
    /// after the guard is dropped. For that second case, once this has been called the server
    /// drops a token request unserved (not recorded, not counted) when its sender has already
    /// closed the connection, as the kernel does for a killed process; so kill the process and
    /// wait for it to be gone before dropping the guard. Hold it briefly: token requests wait.
    /// Has `hook` called on the serving thread right after each reply to a token request has
    /// been written (before the connection is closed), with the moment it was written; `None`
    /// removes it. For measuring what happens to a client in the moments after a reply.
    pub fn after_token_reply(&self, hook: Option<AfterReply>) {
        *lock(&self.shared.after_token_reply) = hook;
    }

    pub fn hold_token_requests(&self) -> TokenGate<'_> {
        self.shared.gate_used.store(true, Ordering::SeqCst);
        let held = self.shared.gate.write().unwrap_or_else(|e| e.into_inner());
        let last_response = *lock(&self.shared.last_token_response);
        TokenGate {
            _held: held,
            last_response,
        }
    }
}

/// Held by [`StandinServer::hold_token_requests`]: no token request is being served meanwhile.
pub struct TokenGate<'a> {
    _held: RwLockWriteGuard<'a, ()>,
    last_response: Option<Instant>,
}

impl TokenGate<'_> {
    /// How long ago the last reply to a token request was written (`None`: no reply yet). Its
    /// reader may still be parsing it and saving the tokens it carries.
    pub fn since_last_token_response(&self) -> Option<Duration> {
        self.last_response.map(|at| at.elapsed())
    }
}

impl Drop for StandinServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Shared {
    config: StandinConfig,
    stopping: AtomicBool,
    stats: Mutex<StandinStats>,
    book: Mutex<TokenBook>,
    faults: Mutex<FaultPlan>,
    requests: Mutex<Vec<RecordedRequest>>,
    /// The chaos gate: token requests are served under its read side.
    gate: RwLock<()>,
    /// Set by the first `hold_token_requests`: token requests from senders gone are dropped.
    gate_used: AtomicBool,
    /// When the last reply to a token request was written.
    last_token_response: Mutex<Option<Instant>>,
    /// Called right after each reply to a token request is written (see `after_token_reply`).
    after_token_reply: Mutex<Option<AfterReply>>,
    /// How long an API call takes before its token is checked (the real API's round trip).
    api_delay: Mutex<Duration>,
    account_uuid: String,
    organization_uuid: String,
}

impl Shared {
    fn is_live_access(&self, token: &str) -> bool {
        let book = lock(&self.book);
        let Some(&family) = book.access_tokens.get(token) else {
            return false;
        };
        let ttl = Duration::from_secs(self.config.access_ttl_secs);
        book.families
            .get(family as usize)
            .is_some_and(|f| !f.revoked && f.access == token && f.access_issued.elapsed() < ttl)
    }

    fn next_fault(&self) -> Option<Fault> {
        let mut plan = lock(&self.faults);
        if let Some(fault) = plan.queue.pop_front() {
            return Some(fault);
        }
        if plan.default.is_some() {
            return plan.default.clone();
        }
        if plan.random_pool.is_empty() || fastrand::f64() >= plan.rate {
            return None;
        }
        Some(plan.random_pool[fastrand::usize(..plan.random_pool.len())].clone())
    }

    /// Sleeps in slices so a shutdown does not wait out a long hang.
    fn sleep_unless_stopping(&self, duration: Duration) {
        let deadline = Instant::now() + duration;
        while !self.stopping.load(Ordering::SeqCst) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            thread::sleep(left.min(Duration::from_millis(20)));
        }
    }

    fn count(&self, counter: fn(&mut StandinStats) -> &mut u64) {
        *counter(&mut lock(&self.stats)) += 1;
    }
}

#[derive(Default)]
struct FaultPlan {
    queue: VecDeque<Fault>,
    default: Option<Fault>,
    rate: f64,
    random_pool: Vec<Fault>,
}

struct Family {
    access: String,
    access_issued: Instant,
    refresh: String,
    started: Instant,
    revoked: bool,
}

#[derive(Default)]
struct TokenBook {
    families: Vec<Family>,
    /// Refresh token → (family, already used).
    refresh_tokens: HashMap<String, (u64, bool)>,
    access_tokens: HashMap<String, u64>,
    issued: Vec<String>,
}

enum RefreshOutcome {
    Granted {
        access: String,
        refresh: Option<String>,
        login_left_secs: Option<u64>,
    },
    Unknown,
    Reused {
        newly_revoked: bool,
    },
    LoginExpired,
}

impl TokenBook {
    fn mint(&mut self, prefix: &str) -> String {
        loop {
            let mut token = String::with_capacity(prefix.len() + TOKEN_RANDOM_CHARS);
            token.push_str(prefix);
            token.extend(
                (0..TOKEN_RANDOM_CHARS)
                    .map(|_| char::from(TOKEN_ALPHABET[fastrand::usize(..TOKEN_ALPHABET.len())])),
            );
            if !self.access_tokens.contains_key(&token) && !self.refresh_tokens.contains_key(&token)
            {
                self.issued.push(token.clone());
                return token;
            }
        }
    }

    /// An access token: opaque, or for OpenAI a JWT whose `exp` says when it expires.
    fn mint_access(&mut self, config: &StandinConfig) -> String {
        let opaque = self.mint(&config.access_prefix);
        if config.flavor != Flavor::OpenAi {
            return opaque;
        }
        self.issued.pop();
        let token = unsigned_jwt(&json!({
            "exp": unix_secs().saturating_add(config.access_ttl_secs),
            "iat": unix_secs(),
            "jti": opaque,
            "https://api.openai.com/auth": {"chatgpt_account_id": "acct-standin"},
        }));
        self.issued.push(token.clone());
        token
    }

    fn mint_pair(&mut self, config: &StandinConfig) -> (String, String) {
        (self.mint_access(config), self.mint(&config.refresh_prefix))
    }

    /// Returns true when the family was live until now.
    fn revoke(&mut self, family: u64) -> bool {
        self.families
            .get_mut(family as usize)
            .is_some_and(|f| !std::mem::replace(&mut f.revoked, true))
    }

    fn refresh(&mut self, presented: &str, config: &StandinConfig) -> RefreshOutcome {
        let Some(&(family_id, used)) = self.refresh_tokens.get(presented) else {
            return RefreshOutcome::Unknown;
        };
        if used {
            return RefreshOutcome::Reused {
                newly_revoked: self.revoke(family_id),
            };
        }
        let Some(family) = self.families.get(family_id as usize) else {
            return RefreshOutcome::Unknown;
        };
        if family.revoked {
            return RefreshOutcome::Unknown;
        }
        let login_age = family.started.elapsed();
        let login_left_secs = match config.refresh_token_expires_in {
            Some(lifetime) if login_age >= Duration::from_secs(lifetime) => {
                return RefreshOutcome::LoginExpired;
            }
            Some(lifetime) => Some(lifetime.saturating_sub(login_age.as_secs())),
            None => None,
        };
        let access = self.mint_access(config);
        self.access_tokens.insert(access.clone(), family_id);
        let refresh = if config.omit_refresh_token {
            None
        } else {
            let refresh = self.mint(&config.refresh_prefix);
            self.refresh_tokens
                .insert(presented.to_string(), (family_id, true));
            self.refresh_tokens
                .insert(refresh.clone(), (family_id, false));
            Some(refresh)
        };
        if let Some(family) = self.families.get_mut(family_id as usize) {
            family.access = access.clone();
            family.access_issued = Instant::now();
            if let Some(refresh) = &refresh {
                family.refresh = refresh.clone();
            }
        }
        RefreshOutcome::Granted {
            access,
            refresh,
            login_left_secs,
        }
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn random_uuid() -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        fastrand::u32(..),
        fastrand::u16(..),
        fastrand::u16(..0x1000),
        0x8000 | fastrand::u16(..0x4000),
        fastrand::u64(..1 << 48)
    )
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else {
            // Out of descriptors and the like: back off instead of spinning.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let conn_shared = Arc::clone(&shared);
        let _ = thread::Builder::new()
            .name("standin-conn".to_string())
            .spawn(move || serve_connection(&conn_shared, stream));
    }
}

struct Reply {
    status: u16,
    content_type: &'static str,
    extra_headers: Vec<(&'static str, String)>,
    body: String,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply::with_type(status, "application/json", body.to_string())
    }

    fn with_type(status: u16, content_type: &'static str, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type,
            extra_headers: Vec::new(),
            body: body.into(),
        }
    }

    fn api_error(status: u16, kind: &str, message: &str) -> Reply {
        Reply::json(
            status,
            json!({"type": "error", "error": {"type": kind, "message": message}}),
        )
    }

    /// OpenAI's shape: a 401 whose `error` is an object with a `code`.
    fn openai_error(code: &str, message: &str) -> Reply {
        Reply::json(
            401,
            json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}}),
        )
    }

    fn oauth_error(status: u16, error: &str, description: &str) -> Reply {
        Reply::json(
            status,
            json!({"error": error, "error_description": description}),
        )
    }
}

enum Outcome {
    Reply(Reply),
    Hang(Duration),
    Reset,
    Close,
}

enum ReadError {
    /// The peer left before sending anything, or the socket failed; nobody to answer.
    Gone,
    /// A status and the reason to answer with.
    Reject(u16, &'static str),
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Gone
    }
}

fn serve_connection(shared: &Shared, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    // The chaos gate's read side, held while a token request is served (see hold_token_requests).
    let mut gate: Option<RwLockReadGuard<'_, ()>> = None;
    // Where this request is in the record, to note when it was answered.
    let mut index = None;
    let outcome = match read_request(&stream) {
        Ok(request) => {
            if request.method == "POST" && route_path(&request) == TOKEN_PATH {
                gate = Some(shared.gate.read().unwrap_or_else(|e| e.into_inner()));
                if shared.gate_used.load(Ordering::SeqCst) && peer_gone(&stream) {
                    return;
                }
            }
            let mut requests = lock(&shared.requests);
            requests.push(request.clone());
            index = Some(requests.len() - 1);
            drop(requests);
            route(shared, &request)
        }
        Err(ReadError::Gone) => return,
        Err(ReadError::Reject(status, why)) => {
            Outcome::Reply(Reply::api_error(status, "invalid_request_error", why))
        }
    };
    match outcome {
        Outcome::Reply(reply) => {
            let written = write_reply(&mut stream, &reply).is_ok();
            let answered = Instant::now();
            if let Some(i) = index
                && let Some(r) = lock(&shared.requests).get_mut(i)
            {
                r.answered = Some(answered);
            }
            if gate.take().is_some() {
                *lock(&shared.last_token_response) = Some(answered);
                if let Some(hook) = lock(&shared.after_token_reply).as_ref() {
                    hook(answered);
                }
            }
            if written {
                close_gracefully(&stream);
            }
        }
        Outcome::Hang(duration) => {
            drop(gate);
            shared.sleep_unless_stopping(duration);
        }
        Outcome::Reset => set_linger_zero(&stream),
        Outcome::Close => {}
    }
}

/// Whether the client has closed its end of the connection (nothing more to read, or a reset).
fn peer_gone(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let gone = match stream.peek(&mut [0u8; 1]) {
        Ok(read) => read == 0,
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ),
    };
    let _ = stream.set_nonblocking(false);
    gone
}

fn read_request(stream: &TcpStream) -> Result<RecordedRequest, ReadError> {
    let mut reader = BufReader::new(stream);
    let mut head_budget = MAX_HEAD_BYTES;
    let request_line = match read_head_line(&mut reader, &mut head_budget)? {
        Some(line) => line,
        None => return Err(ReadError::Gone),
    };
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(ReadError::Reject(400, "malformed request line"));
    };
    let method_ok = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    if !method_ok || !target.starts_with('/') || !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return Err(ReadError::Reject(400, "malformed request line"));
    }
    let mut headers = Vec::new();
    loop {
        let line = read_head_line(&mut reader, &mut head_budget)?
            .ok_or(ReadError::Reject(400, "request head ended early"))?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ReadError::Reject(400, "header line without a colon"));
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ReadError::Reject(400, "invalid header name"));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    if find_header(&headers, "transfer-encoding").is_some() {
        let why = "chunked bodies are not supported; send Content-Length";
        return Err(ReadError::Reject(411, why));
    }
    let mut lengths = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"));
    let length = match lengths.next() {
        None => 0,
        Some((_, value)) => {
            let length: usize = value
                .parse()
                .map_err(|_| ReadError::Reject(400, "invalid Content-Length"))?;
            if lengths.any(|(_, other)| other != value) {
                return Err(ReadError::Reject(400, "conflicting Content-Length headers"));
            }
            length
        }
    };
    if length > MAX_BODY_BYTES {
        return Err(ReadError::Reject(413, "body larger than 1 MiB"));
    }
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .map_err(|_| ReadError::Reject(400, "body shorter than Content-Length"))?;
    let body = String::from_utf8(body).map_err(|_| ReadError::Reject(400, "body is not UTF-8"))?;
    Ok(RecordedRequest {
        method: method.to_string(),
        path: target.to_string(),
        headers,
        body,
        received: Instant::now(),
        answered: None,
    })
}

/// One head line without its line ending; `None` at end of stream before any byte.
fn read_head_line(
    reader: &mut impl BufRead,
    budget: &mut u64,
) -> Result<Option<String>, ReadError> {
    let mut line = Vec::new();
    let read = reader.by_ref().take(*budget).read_until(b'\n', &mut line)?;
    *budget -= read as u64;
    if read == 0 && *budget > 0 {
        return Ok(None);
    }
    if line.pop() != Some(b'\n') {
        let status = if *budget == 0 { 431 } else { 400 };
        return Err(ReadError::Reject(
            status,
            "request head too long or cut short",
        ));
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| ReadError::Reject(400, "head is not UTF-8"))
}

fn write_reply(stream: &mut TcpStream, reply: &Reply) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
         Cache-Control: no-store\r\n",
        reply.status,
        reason_phrase(reply.status),
        reply.content_type,
        reply.body.len()
    );
    for (name, value) in &reply.extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(reply.body.as_bytes());
    stream.write_all(&bytes)?;
    stream.flush()
}

// Closing with unread input makes the kernel send RST, which can destroy the reply before the
// client reads it; sending FIN first and draining briefly avoids that.
fn close_gracefully(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < MAX_BODY_BYTES {
        match (&mut &*stream).read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

#[cfg(unix)]
fn set_linger_zero(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the descriptor is open for the lifetime of `stream`, and the option value points to
    // a live `linger` whose exact size is passed.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

// Elsewhere a reset degrades to a plain close.
#[cfg(not(unix))]
fn set_linger_zero(_stream: &TcpStream) {}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// The request target without its query.
fn route_path(request: &RecordedRequest) -> &str {
    request
        .path
        .split_once('?')
        .map_or(request.path.as_str(), |(p, _)| p)
}

fn route(shared: &Shared, request: &RecordedRequest) -> Outcome {
    let path = route_path(request);
    let method = request.method.as_str();
    let reply = match (path, method) {
        (TOKEN_PATH, "POST") => return token_endpoint(shared, request),
        (API_PATH, "GET" | "POST") => api_endpoint(shared, request),
        (TOKEN_PATH | API_PATH, _) => {
            Reply::api_error(405, "invalid_request_error", "method not allowed")
        }
        _ => Reply::api_error(404, "not_found_error", "Not found"),
    };
    Outcome::Reply(reply)
}

fn api_endpoint(shared: &Shared, request: &RecordedRequest) -> Reply {
    let delay = *lock(&shared.api_delay);
    if !delay.is_zero() {
        thread::sleep(delay);
    }
    let token = request
        .header("authorization")
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    if token.is_some_and(|token| shared.is_live_access(token)) {
        shared.count(|s| &mut s.api_ok);
        Reply::json(200, json!({"ok": true}))
    } else {
        shared.count(|s| &mut s.api_unauthorized);
        Reply::api_error(
            401,
            "authentication_error",
            "Invalid authentication credentials",
        )
    }
}

fn token_endpoint(shared: &Shared, request: &RecordedRequest) -> Outcome {
    shared.count(|s| &mut s.token_requests);
    if let Some(fault) = shared.next_fault() {
        shared.count(|s| &mut s.faults_served);
        if let Fault::ExpiresIn(number) = &fault {
            return Outcome::Reply(with_expires_in(grant(shared, request), number));
        }
        if let Some(outcome) = fault_outcome(shared, fault) {
            return outcome;
        }
    }
    Outcome::Reply(grant(shared, request))
}

/// A granted reply with `expires_in` replaced by `number` as written (a JSON number no Rust
/// integer holds, such as `1e30`, included); other replies as they are.
fn with_expires_in(mut reply: Reply, number: &str) -> Reply {
    let Ok(Value::Object(mut body)) = serde_json::from_str::<Value>(&reply.body) else {
        return reply;
    };
    if reply.status != 200 || !body.contains_key("access_token") {
        return reply;
    }
    body.remove("expires_in");
    let rest = Value::Object(body).to_string();
    reply.body = format!("{},\"expires_in\":{number}}}", &rest[..rest.len() - 1]);
    reply
}

/// What a fault answers instead of the real thing; `None` once a delay has passed.
fn fault_outcome(shared: &Shared, fault: Fault) -> Option<Outcome> {
    let reply = match fault {
        Fault::Status(500) => Reply::api_error(500, "api_error", "Internal server error"),
        Fault::Status(status @ (502 | 504)) => {
            Reply::with_type(status, "text/html", BAD_GATEWAY_PAGE)
        }
        Fault::Status(status) => Reply::with_type(
            status,
            "text/plain; charset=utf-8",
            format!("{status} {}", reason_phrase(status)),
        ),
        Fault::RateLimited { retry_after_secs } => {
            let mut reply = Reply::api_error(
                429,
                "rate_limit_error",
                "Rate limited. Please try again later.",
            );
            if let Some(secs) = retry_after_secs {
                reply.extra_headers.push(("Retry-After", secs.to_string()));
            }
            reply
        }
        Fault::Hang(duration) => return Some(Outcome::Hang(duration)),
        Fault::Reset => return Some(Outcome::Reset),
        Fault::Close => return Some(Outcome::Close),
        Fault::Html => Reply::with_type(200, "text/html; charset=utf-8", CAPTIVE_PORTAL_PAGE),
        Fault::InvalidGrant => {
            Reply::oauth_error(400, "invalid_grant", "Refresh token not found or invalid")
        }
        Fault::InvalidGrantExpired => {
            Reply::oauth_error(400, "invalid_grant", "Refresh token expired")
        }
        Fault::InvalidClient => {
            Reply::oauth_error(401, "invalid_client", "Client authentication failed")
        }
        Fault::UnauthorizedClient => Reply::oauth_error(
            400,
            "unauthorized_client",
            "The client is not authorized to use this grant type",
        ),
        Fault::InvalidRequest => Reply::api_error(
            400,
            "invalid_request_error",
            "Invalid request. Please try again.",
        ),
        Fault::Delay(duration) => {
            shared.sleep_unless_stopping(duration);
            return None;
        }
        Fault::HtmlStatus(status) => Reply::with_type(
            status,
            "text/html",
            format!(
                "<html><head><title>{status} {reason}</title></head><body><center><h1>{status} {reason}</h1></center><hr><center>nginx</center></body></html>",
                reason = reason_phrase(status)
            ),
        ),
        // Served by `token_endpoint`, which answers normally first.
        Fault::ExpiresIn(_) => return None,
        Fault::Redirect(location) => {
            let mut reply = Reply::with_type(302, "text/plain; charset=utf-8", "Found");
            reply
                .extra_headers
                .push(("Location", location.into_owned()));
            reply
        }
    };
    Some(Outcome::Reply(reply))
}

fn grant(shared: &Shared, request: &RecordedRequest) -> Reply {
    let config = &shared.config;
    let Some(params) = parse_params(request) else {
        return Reply::api_error(
            400,
            "invalid_request_error",
            "body is not a JSON object or form",
        );
    };
    let param = |name: &str| params.get(name).map(String::as_str);
    if param("client_id") != Some(config.client_id.as_str())
        || config
            .client_secret
            .as_deref()
            .is_some_and(|secret| param("client_secret") != Some(secret))
    {
        return Reply::oauth_error(401, "invalid_client", "Client authentication failed");
    }
    if param("grant_type") != Some("refresh_token") {
        return Reply::oauth_error(
            400,
            "unsupported_grant_type",
            "grant_type must be refresh_token",
        );
    }
    let Some(presented) = param("refresh_token").filter(|t| !t.is_empty()) else {
        return Reply::oauth_error(400, "invalid_request", "refresh_token is required");
    };
    let outcome = lock(&shared.book).refresh(presented, config);
    let not_found = || match config.flavor {
        Flavor::Anthropic => {
            Reply::oauth_error(400, "invalid_grant", "Refresh token not found or invalid")
        }
        Flavor::OpenAi => Reply::openai_error(
            "refresh_token_invalidated",
            "Your refresh token has been invalidated. Please try signing in again.",
        ),
        Flavor::Google => {
            Reply::oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
        }
    };
    let reused = || match config.flavor {
        Flavor::OpenAi => Reply::openai_error(
            "refresh_token_reused",
            "Your refresh token has already been used to generate a new access token. Please try signing in again.",
        ),
        _ => not_found(),
    };
    let (access, refresh, login_left_secs) = match outcome {
        RefreshOutcome::Granted {
            access,
            refresh,
            login_left_secs,
        } => (access, refresh, login_left_secs),
        RefreshOutcome::Unknown => {
            shared.count(|s| &mut s.unknown_refresh_tokens);
            return not_found();
        }
        RefreshOutcome::Reused { newly_revoked } => {
            shared.count(|s| &mut s.reused_refresh_tokens);
            if newly_revoked {
                shared.count(|s| &mut s.revoked_families);
            }
            return reused();
        }
        RefreshOutcome::LoginExpired if config.flavor == Flavor::OpenAi => {
            return Reply::openai_error(
                "refresh_token_expired",
                "Your refresh token has expired. Please try signing in again.",
            );
        }
        RefreshOutcome::LoginExpired => {
            return Reply::oauth_error(400, "invalid_grant", "Refresh token expired");
        }
    };
    match config.flavor {
        Flavor::Anthropic => {}
        Flavor::OpenAi => {
            let mut body = json!({
                "id_token": unsigned_jwt(&json!({"exp": unix_secs() + 3600, "email": "dev@example.test"})),
                "access_token": access,
            });
            if let Some(refresh) = refresh {
                body["refresh_token"] = json!(refresh);
            }
            shared.count(|s| &mut s.refreshes_ok);
            return Reply::json(200, body);
        }
        Flavor::Google => {
            let mut body = json!({
                "access_token": access,
                "expires_in": config.access_ttl_secs,
                "scope": config.scope_response.as_deref().unwrap_or("openid"),
                "token_type": "Bearer",
                "id_token": unsigned_jwt(&json!({"exp": unix_secs() + 3600, "email": "dev@example.test"})),
            });
            if let Some(refresh) = refresh {
                body["refresh_token"] = json!(refresh);
            }
            shared.count(|s| &mut s.refreshes_ok);
            return Reply::json(200, body);
        }
    }
    shared.count(|s| &mut s.refreshes_ok);
    let scope = config
        .scope_response
        .as_deref()
        .or(param("scope"))
        .unwrap_or(DEFAULT_SCOPE);
    let mut body = json!({"token_type": "Bearer", "access_token": access});
    if let Some(refresh) = refresh {
        body["refresh_token"] = json!(refresh);
    }
    body["expires_in"] = json!(config.access_ttl_secs);
    if let Some(left) = login_left_secs {
        body["refresh_token_expires_in"] = json!(left);
    }
    body["scope"] = json!(scope);
    body["account"] = json!({"uuid": shared.account_uuid, "email_address": "dev@example.test"});
    body["organization"] = json!({"uuid": shared.organization_uuid});
    Reply::json(200, body)
}

/// The request's string parameters from a JSON object or a urlencoded form.
fn parse_params(request: &RecordedRequest) -> Option<HashMap<String, String>> {
    let content_type = request.header("content-type").unwrap_or_default();
    if content_type
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return request
            .body
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                Some((percent_decode(name)?, percent_decode(value)?))
            })
            .collect();
    }
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(&request.body) else {
        return None;
    };
    let strings = object
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.as_str()?.to_string())));
    Some(strings.collect())
}

fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut input = text.bytes();
    while let Some(byte) = input.next() {
        bytes.push(match byte {
            b'+' => b' ',
            b'%' => {
                let high = char::from(input.next()?).to_digit(16)?;
                let low = char::from(input.next()?).to_digit(16)?;
                (high * 16 + low) as u8
            }
            other => other,
        });
    }
    String::from_utf8(bytes).ok()
}

/// A JWT with the given claims and a dummy signature (what tokenkeeper's own `oauth::jwt` reads).
fn unsigned_jwt(claims: &Value) -> String {
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.c2lnbmF0dXJl",
        engine.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
        engine.encode(claims.to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON_TYPE: &str = "Content-Type: application/json\r\n";

    struct Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Response {
        fn header(&self, name: &str) -> Option<&str> {
            find_header(&self.headers, name)
        }

        fn json(&self) -> Value {
            serde_json::from_str(&self.body).expect("JSON body")
        }
    }

    /// Sends raw bytes and reads until the server closes; an empty answer is an error.
    fn exchange(addr: SocketAddr, raw: &[u8], timeout: Duration) -> io::Result<Response> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(raw)?;
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes)?;
        if bytes.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let text = String::from_utf8(bytes).expect("UTF-8 reply");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let status = head[9..12].parse().expect("status code");
        let headers = head
            .split("\r\n")
            .skip(1)
            .map(|l| l.split_once(": ").unwrap())
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        Ok(Response {
            status,
            headers,
            body: body.to_string(),
        })
    }

    fn send(
        server: &StandinServer,
        method: &str,
        path: &str,
        extra: &str,
        body: &str,
    ) -> io::Result<Response> {
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            server.addr(),
            body.len()
        );
        exchange(server.addr(), raw.as_bytes(), Duration::from_secs(5))
    }

    fn refresh_body(refresh_token: &str) -> String {
        json!({"grant_type": "refresh_token", "refresh_token": refresh_token,
               "client_id": StandinConfig::default().client_id, "scope": "user:inference"})
        .to_string()
    }

    fn refresh(server: &StandinServer, refresh_token: &str) -> io::Result<Response> {
        send(
            server,
            "POST",
            TOKEN_PATH,
            JSON_TYPE,
            &refresh_body(refresh_token),
        )
    }

    fn api_status(server: &StandinServer, access_token: &str) -> u16 {
        let auth = format!("Authorization: Bearer {access_token}\r\n");
        send(server, "GET", API_PATH, &auth, "").unwrap().status
    }

    fn server() -> StandinServer {
        StandinServer::start(StandinConfig::default()).unwrap()
    }

    #[test]
    fn rotation_returns_new_tokens_and_kills_old_access() {
        let server = server();
        let login = server.issue_login();
        assert_eq!(api_status(&server, &login.access_token), 200);
        let reply = refresh(&server, &login.refresh_token).unwrap();
        assert_eq!(reply.status, 200);
        let body = reply.json();
        let access = body["access_token"].as_str().unwrap();
        let refresh_token = body["refresh_token"].as_str().unwrap();
        assert!(access.starts_with("sk-ant-oat01-") && access.len() >= 13 + 43);
        assert!(refresh_token.starts_with("sk-ant-ort01-") && refresh_token != login.refresh_token);
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 28800);
        assert_eq!(body["scope"], "user:inference");
        assert_eq!(body["account"]["email_address"], "dev@example.test");
        assert!(body["organization"]["uuid"].is_string());
        assert!(body.get("refresh_token_expires_in").is_none());
        assert_eq!(api_status(&server, &login.access_token), 401);
        assert_eq!(api_status(&server, access), 200);
        assert_eq!(
            server.current_tokens(login.family),
            Some((access.into(), refresh_token.into()))
        );
        assert_eq!(server.all_issued_tokens().len(), 4);
        assert_eq!(server.stats().refreshes_ok, 1);
        assert_eq!(
            server.requests()[1].header("content-type"),
            Some("application/json")
        );
    }

    #[test]
    fn reused_refresh_token_revokes_whole_family() {
        let server = server();
        let other = server.issue_login();
        let login = server.issue_login();
        let rotated = refresh(&server, &login.refresh_token).unwrap().json();
        let reply = refresh(&server, &login.refresh_token).unwrap();
        assert_eq!(reply.status, 400);
        assert_eq!(reply.json()["error"], "invalid_grant");
        assert_eq!(
            reply.json()["error_description"],
            "Refresh token not found or invalid"
        );
        assert!(!server.is_live_access(rotated["access_token"].as_str().unwrap()));
        assert_eq!(
            refresh(&server, rotated["refresh_token"].as_str().unwrap())
                .unwrap()
                .status,
            400
        );
        assert!(server.is_live_access(&other.access_token));
        let stats = server.stats();
        assert_eq!(
            (stats.reused_refresh_tokens, stats.revoked_families),
            (1, 1)
        );
    }

    #[test]
    fn unknown_refresh_token_revokes_nothing() {
        let server = server();
        let login = server.issue_login();
        let reply = refresh(&server, "sk-ant-ort01-never-issued").unwrap();
        assert_eq!(
            (reply.status, reply.json()["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        assert!(server.is_live_access(&login.access_token));
        assert_eq!(refresh(&server, &login.refresh_token).unwrap().status, 200);
        assert_eq!(server.stats().unknown_refresh_tokens, 1);
    }

    #[test]
    fn wrong_client_id_is_invalid_client_and_consumes_nothing() {
        let server = server();
        let login = server.issue_login();
        let body = refresh_body(&login.refresh_token).replace("9d1c", "0000");
        let reply = send(&server, "POST", TOKEN_PATH, "", &body).unwrap();
        assert_eq!(
            (reply.status, reply.json()["error"].as_str()),
            (401, Some("invalid_client"))
        );
        assert_eq!(refresh(&server, &login.refresh_token).unwrap().status, 200);
    }

    #[test]
    fn form_body_is_accepted() {
        let server = server();
        let login = server.issue_login();
        let body = format!(
            "grant_type=refresh_token&refresh_token={}&client_id={}&scope=user%3Ainference+user%3Aprofile",
            login.refresh_token,
            StandinConfig::default().client_id
        );
        let form = "Content-Type: application/x-www-form-urlencoded\r\n";
        let reply = send(&server, "POST", TOKEN_PATH, form, &body).unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["scope"], "user:inference user:profile");
    }

    #[test]
    fn omit_refresh_token_keeps_old_refresh_token_valid() {
        let config = StandinConfig {
            omit_refresh_token: true,
            refresh_token_expires_in: Some(3600),
            scope_response: Some("user:inference".into()),
            ..StandinConfig::default()
        };
        let server = StandinServer::start(config).unwrap();
        let login = server.issue_login();
        let first = refresh(&server, &login.refresh_token).unwrap().json();
        assert!(first.get("refresh_token").is_none());
        assert!(first["refresh_token_expires_in"].as_u64().unwrap() <= 3600);
        let second = refresh(&server, &login.refresh_token).unwrap().json();
        assert!(!server.is_live_access(first["access_token"].as_str().unwrap()));
        assert!(server.is_live_access(second["access_token"].as_str().unwrap()));
        assert_eq!(server.stats().refreshes_ok, 2);
    }

    #[test]
    fn ended_login_answers_refresh_token_expired() {
        let config = StandinConfig {
            refresh_token_expires_in: Some(0),
            ..StandinConfig::default()
        };
        let server = StandinServer::start(config).unwrap();
        let reply = refresh(&server, &server.issue_login().refresh_token).unwrap();
        assert_eq!(reply.json()["error_description"], "Refresh token expired");
    }

    #[test]
    fn an_api_delay_checks_the_token_when_the_call_ends() {
        let server = Arc::new(server());
        let login = server.issue_login();
        server.set_api_delay(Duration::from_millis(300));
        let (caller, access) = (Arc::clone(&server), login.access_token.clone());
        let call = thread::spawn(move || api_status(&caller, &access));
        thread::sleep(Duration::from_millis(100));
        assert!(server.revoke_family_of(&login.refresh_token));
        assert_eq!(
            call.join().unwrap(),
            401,
            "revoked while the call was under way"
        );
    }

    #[test]
    fn api_accepts_only_live_tokens() {
        let server = server();
        let login = server.issue_login();
        assert_eq!(api_status(&server, &login.refresh_token), 401);
        assert_eq!(api_status(&server, "sk-ant-oat01-nope"), 401);
        let post = format!("Authorization: bearer {}\r\n", login.access_token);
        assert_eq!(
            send(&server, "POST", API_PATH, &post, "{}").unwrap().status,
            200
        );
        let reply = send(&server, "GET", API_PATH, "", "").unwrap();
        assert_eq!(reply.json()["error"]["type"], "authentication_error");
        assert!(server.revoke_family_of(&login.refresh_token));
        assert_eq!(api_status(&server, &login.access_token), 401);

        let expired = StandinConfig {
            access_ttl_secs: 0,
            ..StandinConfig::default()
        };
        let server_expired = StandinServer::start(expired).unwrap();
        assert_eq!(
            api_status(&server_expired, &server_expired.issue_login().access_token),
            401
        );
        assert_eq!(
            (server.stats().api_ok, server.stats().api_unauthorized),
            (1, 4)
        );
    }

    #[test]
    fn status_and_rate_limit_faults() {
        let server = server();
        let login = server.issue_login();
        for fault in [Fault::Status(500), Fault::Status(502), Fault::Status(503)] {
            server.push_fault(fault);
        }
        server.push_fault(Fault::RateLimited {
            retry_after_secs: Some(7),
        });
        server.push_fault(Fault::RateLimited {
            retry_after_secs: None,
        });
        let mut replies = (0..5).map(|_| refresh(&server, &login.refresh_token).unwrap());
        let r500 = replies.next().unwrap();
        assert_eq!(
            (r500.status, r500.json()["error"]["type"].as_str()),
            (500, Some("api_error"))
        );
        let r502 = replies.next().unwrap();
        assert_eq!(
            (r502.status, r502.header("content-type")),
            (502, Some("text/html"))
        );
        assert_eq!(replies.next().unwrap().status, 503);
        let limited = replies.next().unwrap();
        assert_eq!(
            (limited.status, limited.header("retry-after")),
            (429, Some("7"))
        );
        assert_eq!(limited.json()["error"]["type"], "rate_limit_error");
        assert_eq!(replies.next().unwrap().header("retry-after"), None);
        assert_eq!(refresh(&server, &login.refresh_token).unwrap().status, 200);
        assert_eq!(
            (server.stats().token_requests, server.stats().faults_served),
            (6, 5)
        );
    }

    #[test]
    fn oauth_error_faults_rotate_nothing() {
        let server = server();
        let login = server.issue_login();
        let expected = [
            (Fault::InvalidGrant, 400, "invalid_grant"),
            (Fault::InvalidGrantExpired, 400, "invalid_grant"),
            (Fault::InvalidClient, 401, "invalid_client"),
            (Fault::UnauthorizedClient, 400, "unauthorized_client"),
            (Fault::InvalidRequest, 400, "invalid_request_error"),
        ];
        for (fault, status, error) in expected {
            server.push_fault(fault);
            let reply = refresh(&server, &login.refresh_token).unwrap();
            let body = reply.json();
            let found = body["error"].as_str().or(body["error"]["type"].as_str());
            assert_eq!((reply.status, found), (status, Some(error)));
        }
        assert!(server.is_live_access(&login.access_token));
        assert_eq!(server.all_issued_tokens().len(), 2);
        assert_eq!(refresh(&server, &login.refresh_token).unwrap().status, 200);
    }

    #[test]
    fn html_fault_answers_200_with_a_page() {
        let server = server();
        server.push_fault(Fault::Html);
        let reply = refresh(&server, &server.issue_login().refresh_token).unwrap();
        assert_eq!(reply.status, 200);
        assert!(
            reply
                .header("content-type")
                .unwrap()
                .starts_with("text/html")
        );
        assert!(reply.body.starts_with("<!DOCTYPE html>"));
    }

    #[test]
    fn html_status_and_expires_in_faults() {
        let server = server();
        let login = server.issue_login();
        server.push_fault(Fault::HtmlStatus(401));
        let reply = refresh(&server, &login.refresh_token).unwrap();
        assert_eq!(reply.status, 401);
        assert!(reply.body.starts_with("<html>"), "{}", reply.body);
        assert!(server.is_live_access(&login.access_token));
        // `expires_in` as written, on a real grant: the refresh token is spent.
        server.push_fault(Fault::ExpiresIn("1e30".into()));
        let reply = refresh(&server, &login.refresh_token).unwrap();
        assert_eq!(reply.status, 200);
        assert!(
            reply.body.ends_with(",\"expires_in\":1e30}"),
            "{}",
            reply.body
        );
        assert!(reply.json()["access_token"].is_string());
        assert_eq!(server.stats().refreshes_ok, 1);
        assert_eq!(refresh(&server, &login.refresh_token).unwrap().status, 400);
    }

    #[test]
    fn reset_and_close_faults_end_without_reply() {
        let server = server();
        let login = server.issue_login();
        server.push_fault(Fault::Reset);
        server.push_fault(Fault::Close);
        let reset = refresh(&server, &login.refresh_token).err().unwrap();
        assert_eq!(reset.kind(), io::ErrorKind::ConnectionReset);
        let closed = refresh(&server, &login.refresh_token).err().unwrap();
        assert_eq!(closed.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(refresh(&server, &login.refresh_token).unwrap().status, 200);
    }

    #[test]
    fn hang_sends_nothing_then_closes_and_delay_still_refreshes() {
        let server = server();
        let login = server.issue_login();
        server.push_fault(Fault::Hang(Duration::from_millis(200)));
        server.push_fault(Fault::Hang(Duration::from_millis(200)));
        server.push_fault(Fault::Delay(Duration::from_millis(100)));
        let raw = format!(
            "POST {TOKEN_PATH} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{}",
            refresh_body(&login.refresh_token).len(),
            refresh_body(&login.refresh_token)
        );
        let timed_out = exchange(server.addr(), raw.as_bytes(), Duration::from_millis(80));
        let kind = timed_out.err().unwrap().kind();
        assert!(
            matches!(kind, io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut),
            "{kind:?}"
        );
        let started = Instant::now();
        let closed = exchange(server.addr(), raw.as_bytes(), Duration::from_secs(2));
        assert_eq!(closed.err().unwrap().kind(), io::ErrorKind::UnexpectedEof);
        assert!(started.elapsed() >= Duration::from_millis(190));
        let started = Instant::now();
        let delayed = refresh(&server, &login.refresh_token).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(90));
        assert_eq!(delayed.status, 200);
        assert_eq!(refresh(&server, &login.refresh_token).unwrap().status, 400);
    }

    #[test]
    fn default_fault_and_fault_rate_apply_when_queue_is_empty() {
        let server = server();
        let login = server.issue_login();
        server.set_default_fault(Some(Fault::Status(503)));
        server.push_fault(Fault::Status(500));
        assert_eq!(refresh(&server, &login.refresh_token).unwrap().status, 500);
        assert_eq!(refresh(&server, &login.refresh_token).unwrap().status, 503);
        server.set_default_fault(None);
        server.set_fault_rate(1.0, vec![Fault::Status(529)]);
        assert_eq!(refresh(&server, &login.refresh_token).unwrap().status, 529);
        server.set_fault_rate(0.0, vec![Fault::Status(529)]);
        assert_eq!(refresh(&server, &login.refresh_token).unwrap().status, 200);
    }

    #[test]
    fn malformed_unknown_and_oversized_requests() {
        let server = server();
        let timeout = Duration::from_secs(2);
        let garbage = exchange(server.addr(), b"hello there\r\n\r\n", timeout).unwrap();
        assert_eq!(garbage.status, 400);
        let no_colon =
            exchange(server.addr(), b"GET / HTTP/1.1\r\nbroken\r\n\r\n", timeout).unwrap();
        assert_eq!(no_colon.status, 400);
        let big = format!(
            "POST {TOKEN_PATH} HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            2 << 20
        );
        assert_eq!(
            exchange(server.addr(), big.as_bytes(), timeout)
                .unwrap()
                .status,
            413
        );
        assert_eq!(
            send(&server, "GET", "/elsewhere", "", "").unwrap().status,
            404
        );
        assert_eq!(
            send(&server, "GET", TOKEN_PATH, "", "").unwrap().status,
            405
        );
        assert_eq!(
            send(&server, "POST", TOKEN_PATH, "", "not json")
                .unwrap()
                .status,
            400
        );
        assert_eq!(server.stats().token_requests, 1);
    }

    #[test]
    fn keep_alive_client_still_gets_connection_close() {
        let server = server();
        let login = server.issue_login();
        let auth = format!(
            "Connection: keep-alive\r\nAuthorization: Bearer {}\r\n",
            login.access_token
        );
        let reply = send(&server, "GET", API_PATH, &auth, "").unwrap();
        assert_eq!(
            (reply.status, reply.header("connection")),
            (200, Some("close"))
        );
    }

    #[test]
    fn shutdown_returns_promptly_even_with_a_hanging_request() {
        let server = server();
        server.push_fault(Fault::Hang(Duration::from_secs(30)));
        let addr = server.addr();
        let raw = format!("POST {TOKEN_PATH} HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        let client = thread::spawn(move || exchange(addr, raw.as_bytes(), Duration::from_secs(5)));
        thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        server.shutdown();
        drop(server);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(client.join().unwrap().is_err());
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err());
    }

    #[test]
    fn tokens_are_unique_and_secrets_stay_out_of_debug() {
        let server = server();
        let logins: Vec<IssuedLogin> = (0..50).map(|_| server.issue_login()).collect();
        let mut tokens = server.all_issued_tokens();
        tokens.sort();
        tokens.dedup();
        assert_eq!(tokens.len(), 100);
        assert!(!format!("{:?}", logins[0]).contains(&logins[0].access_token));
        refresh(&server, &logins[0].refresh_token).unwrap();
        assert!(!format!("{:?}", server.requests()).contains(&logins[0].refresh_token));
    }
}
