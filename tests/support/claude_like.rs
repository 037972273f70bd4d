//! Plays an interactive Claude Code session for the soak test (`tests/soak/soak.rs`): it keeps
//! calling the API stand-in with the stored login and, when the access token is about to expire
//! (or the API answers 401 while the file still holds the same token), refreshes the login on its
//! own, the way Claude Code does and by Claude's lock rules (`docs/providers.md`, "Claude Code"):
//!
//! 1. `mkdir <folder>/.oauth_refresh.lock`; busy: retry 5 times 1–2 s apart, re-reading the file
//!    each time and skipping the refresh if the token changed; give up after that. A lock older
//!    than 60 s is removed; one whose owner record names a holder that is provably gone, and whose
//!    mtime has stood still for 7.5 s, is taken over (with the holder's legacy lock).
//! 2. Write the owner record `<folder>/.oauth_refresh.lock.owner` in Claude's format, then
//!    `mkdir <realpath(folder)>.lock` (same rules) and write the record again naming it.
//! 3. Re-read; skip if the token changed. POST the refresh token in Claude's shape.
//! 4. Under `<folder>/.storage-write.lock` (stale 15 s): re-read, write only if the stored refresh
//!    token is still the one posted (or empty); atomic write (`<path>.tmp.<hex>` 0600, fsync,
//!    rename). A rejected refresh token wipes the login, as Claude does, under the same rule.
//! 5. Release in reverse: the legacy lock, the owner record, the refresh lock. Held locks are
//!    touched every 5 s (Claude's `update`).
//!
//! Token lifetimes in the soak are seconds, so the refresh margin is an argument
//! (`--refresh-at-ms`, Claude's own is 5 minutes); the lock rules are Claude's, unscaled.
//!
//! It runs until its stdin closes, then prints one JSON object of counters on stdout. With
//! `--once` it plays `claude -p` instead: one API call (with the same 401 handling), then
//! `Hello from the stand-in` and exit 0, or Claude's failure text on stdout and exit 1. It never
//! prints a token.
//!
//! Usage: claude_like --credentials PATH --token-url URL --api-url URL [--refresh-at-ms 2000]
//!        [--timeout-ms 2000] [--pause-ms-min 100] [--pause-ms-max 300] [--once]

use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokenkeeper::lock::dir_lock::{Identity, OwnerRecord};

const CLIENT_ID: &str = "9d1c250a-e61b-44d9-88ed-5944d1962f5e";
const SCOPE: &str = "user:profile user:inference user:sessions:claude_code user:mcp_servers user:file_upload user:plugins";
const USER_AGENT: &str = "axios/1.15.2";
/// proper-lockfile options Claude uses for its refresh locks.
const REFRESH_STALE: Duration = Duration::from_secs(60);
const STORAGE_STALE: Duration = Duration::from_secs(15);
const UPDATE: Duration = Duration::from_secs(5);
/// Claude takes over from a provably dead holder after watching the mtime stand still this long.
const TAKEOVER_AFTER: Duration = Duration::from_millis(7500);
/// Busy refresh lock: this many retries, 1–2 s apart, then give up and use the old token.
const BUSY_RETRIES: u32 = 5;

struct Config {
    credentials: PathBuf,
    token_url: String,
    api_url: String,
    refresh_at_ms: i64,
    timeout: Duration,
    pause_ms: (u64, u64),
    once: bool,
}

/// Counters printed at the end, by name.
#[derive(Default)]
struct Counters(BTreeMap<&'static str, u64>);

impl Counters {
    fn add(&mut self, name: &'static str) {
        *self.0.entry(name).or_default() += 1;
    }
}

#[derive(Clone)]
struct Login {
    access: String,
    refresh: String,
    expires_at: i64,
}

fn main() {
    let cfg = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("claude_like: {e}");
            std::process::exit(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    if !cfg.once {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut sink = [0u8; 64];
            let mut stdin = io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            stop.store(true, Ordering::SeqCst);
        });
    }
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(cfg.timeout))
        .max_idle_connections(0)
        .build()
        .new_agent();
    let mut c = Counters::default();
    if cfg.once {
        // Under `tokenkeeper exec`, a killed wrapper sends us SIGTERM; finish the turn (and
        // any refresh in it) rather than die holding Claude's locks or unsaved tokens.
        // SAFETY: sigset operations on a local set, then masking signals for this thread
        // (the only one: none has been spawned yet).
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                libc::sigaddset(&mut set, sig);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        std::process::exit(once(&cfg, &agent, &mut c));
    }
    while !stop.load(Ordering::SeqCst) {
        session_step(&cfg, &agent, &mut c);
        let (lo, hi) = cfg.pause_ms;
        thread::sleep(Duration::from_millis(fastrand::u64(lo..=hi.max(lo))));
    }
    let out: Map<String, Value> = c.0.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    println!("{}", Value::Object(out));
}

/// `claude -p`: refresh first when due, one API call (a 401 handled as Claude does), then the
/// answer or Claude's failure text, on stdout. Returns the exit status.
fn once(cfg: &Config, agent: &ureq::Agent, c: &mut Counters) -> i32 {
    let Ok(Some(mut login)) = read_login(&cfg.credentials) else {
        println!("Not logged in · Please run /login");
        return 1;
    };
    if login.expires_at - now_ms() <= cfg.refresh_at_ms {
        refresh(cfg, agent, c, &login);
        match read_login(&cfg.credentials) {
            Ok(Some(l)) => login = l,
            _ => {
                println!("Not logged in · Please run /login");
                return 1;
            }
        }
    }
    let mut status = api(cfg, agent, &login.access);
    if status == 401 {
        let retry_with = match read_login(&cfg.credentials).ok().flatten() {
            Some(now) if now.access != login.access => Some(now),
            _ => {
                refresh(cfg, agent, c, &login);
                read_login(&cfg.credentials).ok().flatten()
            }
        };
        if let Some(l) = retry_with {
            status = api(cfg, agent, &l.access);
        }
    }
    if status == 200 {
        println!("Hello from the stand-in");
        0
    } else {
        println!("Failed to authenticate. API Error: {status} Invalid authentication credentials");
        1
    }
}

/// One turn of the session: refresh when due, else call the API (and deal with a 401 as Claude
/// does).
fn session_step(cfg: &Config, agent: &ureq::Agent, c: &mut Counters) {
    let login = match read_login(&cfg.credentials) {
        Ok(Some(l)) => l,
        Ok(None) => {
            c.add("login_empty_seen");
            return;
        }
        Err(_) => {
            c.add("read_failures");
            return;
        }
    };
    if login.expires_at - now_ms() <= cfg.refresh_at_ms {
        c.add("refresh_due");
        refresh(cfg, agent, c, &login);
        return;
    }
    match api(cfg, agent, &login.access) {
        200 => c.add("api_ok"),
        401 => {
            // Claude: after a 401, use the file's token if it changed, else refresh (which
            // waits on the lock and adopts a refresh made by its holder).
            let again = read_login(&cfg.credentials).ok().flatten();
            let retry_with = match again {
                Some(now) if now.access != login.access => {
                    c.add("api_401_file_had_newer_token");
                    now
                }
                _ => {
                    c.add("api_401_refresh");
                    refresh(cfg, agent, c, &login);
                    match read_login(&cfg.credentials).ok().flatten() {
                        Some(l) => l,
                        None => {
                            c.add("api_401_unrecovered");
                            return;
                        }
                    }
                }
            };
            match api(cfg, agent, &retry_with.access) {
                200 => c.add("api_401_recovered"),
                _ => c.add("api_401_unrecovered"),
            }
        }
        _ => c.add("api_other_failure"),
    }
}

fn api(cfg: &Config, agent: &ureq::Agent, access: &str) -> u16 {
    agent
        .get(&cfg.api_url)
        .header("Authorization", &format!("Bearer {access}"))
        .call()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

struct Paths {
    main: PathBuf,
    record: PathBuf,
    legacy: PathBuf,
    storage: PathBuf,
}

fn paths(credentials: &Path) -> Paths {
    let folder = credentials
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let real = fs::canonicalize(&folder).unwrap_or_else(|_| folder.clone());
    let mut legacy = real.into_os_string();
    legacy.push(".lock");
    Paths {
        main: folder.join(".oauth_refresh.lock"),
        record: folder.join(".oauth_refresh.lock.owner"),
        legacy: PathBuf::from(legacy),
        storage: folder.join(".storage-write.lock"),
    }
}

/// Claude's refresh, by Claude's lock rules. `seen` is the login that made us decide.
fn refresh(cfg: &Config, agent: &ureq::Agent, c: &mut Counters, seen: &Login) {
    let p = paths(&cfg.credentials);
    let Some(main) = take_with_retries(cfg, c, &p.main, Some(&p.legacy), &p, seen) else {
        return;
    };
    let main_birth = main.birth_ms();
    if let Some(birth) = main_birth {
        let _ = OwnerRecord::for_pid(std::process::id(), birth, None).write(&p.record);
    }
    let heartbeat = Heartbeat::start(vec![p.main.clone()]);
    let legacy = take_with_retries(cfg, c, &p.legacy, None, &p, seen);
    let Some(legacy) = legacy else {
        drop(heartbeat);
        release_record(&p.record, &main);
        release_dir(&p.main, &main);
        return;
    };
    heartbeat.add(p.legacy.clone());
    if let Some(birth) = main_birth {
        let _ = OwnerRecord::for_pid(std::process::id(), birth, legacy.birth_ms()).write(&p.record);
    }

    refresh_holding_locks(cfg, agent, c, seen, &p);

    drop(heartbeat);
    release_dir(&p.legacy, &legacy);
    release_record(&p.record, &main);
    release_dir(&p.main, &main);
}

fn refresh_holding_locks(
    cfg: &Config,
    agent: &ureq::Agent,
    c: &mut Counters,
    seen: &Login,
    p: &Paths,
) {
    let current = match read_login(&cfg.credentials) {
        Ok(Some(l)) => l,
        _ => {
            c.add("refresh_skipped_unreadable");
            return;
        }
    };
    if current.access != seen.access {
        c.add("refresh_adopted_under_lock");
        return;
    }
    c.add("token_requests");
    let body = json!({
        "grant_type": "refresh_token",
        "refresh_token": current.refresh,
        "client_id": CLIENT_ID,
        "scope": SCOPE,
    });
    let sent = agent
        .post(&cfg.token_url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/plain, */*")
        .header("User-Agent", USER_AGENT)
        .send(body.to_string().as_bytes());
    let (status, text) = match sent {
        Ok(mut r) => {
            let status = r.status().as_u16();
            match r.body_mut().read_to_string() {
                Ok(t) => (status, t),
                Err(_) => {
                    c.add("refresh_transient");
                    return;
                }
            }
        }
        Err(_) => {
            c.add("refresh_transient");
            return;
        }
    };
    let reply: Option<Value> = serde_json::from_str(&text).ok();
    let tokens = reply.as_ref().filter(|_| status == 200).and_then(|v| {
        let access = v.get("access_token")?.as_str()?.to_string();
        let expires_in = v.get("expires_in")?.as_i64()?;
        Some((
            access,
            v.get("refresh_token")
                .and_then(Value::as_str)
                .map(str::to_string),
            expires_in,
            v.get("scope").and_then(Value::as_str).map(str::to_string),
        ))
    });
    if let Some((access, refresh, expires_in, scope)) = tokens {
        let received = now_ms();
        let saved = with_storage_lock(c, p, || {
            let mut doc = read_doc(&cfg.credentials)?;
            let stored = doc["claudeAiOauth"]["refreshToken"].as_str().unwrap_or("");
            if !(stored.is_empty() || stored == current.refresh) {
                return Ok(false);
            }
            let oauth = &mut doc["claudeAiOauth"];
            oauth["accessToken"] = json!(access);
            if let Some(r) = &refresh {
                oauth["refreshToken"] = json!(r);
            }
            oauth["expiresAt"] = json!(received + expires_in * 1000);
            if let Some(s) = &scope {
                oauth["scopes"] = json!(s.split_whitespace().collect::<Vec<_>>());
            }
            write_like_claude(&cfg.credentials, &doc)?;
            Ok(true)
        });
        match saved {
            Some(Ok(true)) => c.add("refreshed"),
            Some(Ok(false)) => c.add("refreshed_but_file_changed_tokens_dropped"),
            Some(Err(_)) => c.add("refreshed_but_save_failed_tokens_dropped"),
            None => c.add("refreshed_but_storage_lock_timeout_tokens_dropped"),
        }
        return;
    }
    let code = reply
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if matches!(status, 400 | 401 | 403)
        && matches!(
            code,
            "invalid_grant" | "invalid_client" | "unauthorized_client"
        )
    {
        c.add("refresh_rejected");
        // Claude ends the login in the file, if it still holds the token that was refused.
        let _ = with_storage_lock(c, p, || {
            let mut doc = read_doc(&cfg.credentials)?;
            if doc["claudeAiOauth"]["refreshToken"].as_str() != Some(current.refresh.as_str()) {
                return Ok(false);
            }
            let oauth = &mut doc["claudeAiOauth"];
            oauth["accessToken"] = json!("");
            oauth["refreshToken"] = json!("");
            oauth["expiresAt"] = json!(0);
            write_like_claude(&cfg.credentials, &doc)?;
            Ok(true)
        })
        .map(|r| {
            if matches!(r, Ok(true)) {
                c.add("login_wiped_after_rejection");
            }
        });
        return;
    }
    c.add("refresh_transient");
}

/// Takes a refresh lock as Claude does: busy means retry 5 times 1–2 s apart, re-reading the file
/// each time (a changed token ends the refresh: someone else did it).
fn take_with_retries(
    cfg: &Config,
    c: &mut Counters,
    path: &Path,
    companion: Option<&Path>,
    p: &Paths,
    seen: &Login,
) -> Option<Identity> {
    let mut watch: Option<(SystemTime, Instant)> = None;
    let mut retries = 0;
    loop {
        let record = companion.map(|_| p.record.as_path());
        match try_lock(c, path, REFRESH_STALE, record, companion, &mut watch) {
            Ok(Some(id)) => return Some(id),
            Ok(None) => {}
            Err(_) => {
                c.add("lock_errors");
                return None;
            }
        }
        if retries == BUSY_RETRIES {
            c.add("lock_busy_gave_up");
            return None;
        }
        retries += 1;
        c.add("lock_busy_waits");
        thread::sleep(Duration::from_millis(1000 + fastrand::u64(0..1000)));
        if let Ok(Some(now)) = read_login(&cfg.credentials)
            && now.access != seen.access
        {
            c.add("refresh_adopted_while_waiting");
            return None;
        }
    }
}

/// One `mkdir` attempt by proper-lockfile's rules plus Claude's takeover of a dead holder.
fn try_lock(
    c: &mut Counters,
    path: &Path,
    stale: Duration,
    record: Option<&Path>,
    companion: Option<&Path>,
    watch: &mut Option<(SystemTime, Instant)>,
) -> io::Result<Option<Identity>> {
    for _ in 0..3 {
        match fs::create_dir(path) {
            Ok(()) => return Identity::of(path).map(Some),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let mtime = match fs::symlink_metadata(path).and_then(|m| m.modified()) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let age = SystemTime::now()
            .duration_since(mtime)
            .unwrap_or(Duration::ZERO);
        if age > stale {
            c.add("stale_locks_removed");
            let _ = fs::remove_dir(path);
            continue;
        }
        match watch {
            Some((seen, _)) if *seen == mtime => {}
            _ => *watch = Some((mtime, Instant::now())),
        }
        let still = watch.map_or(Duration::ZERO, |(_, since)| since.elapsed());
        let Some(record) = record else {
            return Ok(None);
        };
        let Some(owner) = OwnerRecord::read(record) else {
            return Ok(None);
        };
        let Ok(identity) = Identity::of(path) else {
            continue;
        };
        if still < TAKEOVER_AFTER || !owner.names(&identity) || !owner.holder_is_gone() {
            return Ok(None);
        }
        if let Some(companion) = companion
            && let Ok(cid) = Identity::of(companion)
        {
            let theirs = match (cid.birth_ms(), owner.legacy_lock_birthtime_ms) {
                (Some(b), Some(r)) => (b - r).abs() < 1e-3,
                _ => false,
            };
            if !theirs {
                return Ok(None);
            }
            let _ = fs::remove_dir(companion);
        }
        c.add("takeovers_of_dead_holder");
        let _ = fs::remove_dir(path);
        if OwnerRecord::read(record).as_ref() == Some(&owner) {
            let _ = fs::remove_file(record);
        }
        *watch = None;
    }
    Ok(None)
}

/// Runs `f` under `.storage-write.lock` (waiting up to 30 s, breaking it when stale). `None`:
/// the lock was not obtained.
fn with_storage_lock<T>(
    c: &mut Counters,
    p: &Paths,
    f: impl FnOnce() -> io::Result<T>,
) -> Option<io::Result<T>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut watch = None;
    let id = loop {
        match try_lock(c, &p.storage, STORAGE_STALE, None, None, &mut watch) {
            Ok(Some(id)) => break id,
            Ok(None) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(100));
            }
            _ => return None,
        }
    };
    let heartbeat = Heartbeat::start(vec![p.storage.clone()]);
    let result = f();
    drop(heartbeat);
    release_dir(&p.storage, &id);
    Some(result)
}

fn release_dir(path: &Path, id: &Identity) {
    if Identity::of(path).ok().as_ref() == Some(id) {
        let _ = fs::remove_dir(path);
    }
}

fn release_record(record: &Path, main: &Identity) {
    if OwnerRecord::read(record).is_some_and(|o| o.pid == std::process::id() && o.names(main)) {
        let _ = fs::remove_file(record);
    }
}

/// Touches held lock directories every `UPDATE` until dropped.
struct Heartbeat {
    add: mpsc::Sender<Option<PathBuf>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Heartbeat {
    fn start(paths: Vec<PathBuf>) -> Heartbeat {
        let (add, rx) = mpsc::channel::<Option<PathBuf>>();
        let thread = thread::spawn(move || {
            let mut paths = paths;
            loop {
                match rx.recv_timeout(UPDATE) {
                    Ok(Some(p)) => paths.push(p),
                    Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        for p in &paths {
                            if let Ok(f) = fs::File::open(p) {
                                let _ = f.set_modified(SystemTime::now());
                            }
                        }
                    }
                }
            }
        });
        Heartbeat {
            add,
            thread: Some(thread),
        }
    }

    fn add(&self, path: PathBuf) {
        let _ = self.add.send(Some(path));
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        let _ = self.add.send(None);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_doc(path: &Path) -> io::Result<Value> {
    let text = fs::read(path)?;
    let doc: Value = serde_json::from_slice(&text).map_err(io::Error::other)?;
    if !doc.get("claudeAiOauth").is_some_and(Value::is_object) {
        return Err(io::Error::other("no claudeAiOauth object"));
    }
    Ok(doc)
}

/// `Ok(None)`: a wiped login (empty refresh token).
fn read_login(path: &Path) -> io::Result<Option<Login>> {
    let doc = read_doc(path)?;
    let o = &doc["claudeAiOauth"];
    let s = |k: &str| o[k].as_str().unwrap_or("").to_string();
    let login = Login {
        access: s("accessToken"),
        refresh: s("refreshToken"),
        expires_at: o["expiresAt"].as_i64().unwrap_or(0),
    };
    Ok((!login.refresh.is_empty()).then_some(login))
}

/// Claude's write: temp file `<path>.tmp.<hex>` created 0600, fsync, rename.
fn write_like_claude(path: &Path, doc: &Value) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{:016x}", fastrand::u64(..)));
    let tmp = PathBuf::from(tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let result = f
        .write_all(doc.to_string().as_bytes())
        .and_then(|()| f.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn parse_args() -> Result<Config, String> {
    let mut args = std::env::args().skip(1);
    let mut cfg = Config {
        credentials: PathBuf::new(),
        token_url: String::new(),
        api_url: String::new(),
        refresh_at_ms: 2000,
        timeout: Duration::from_secs(2),
        pause_ms: (100, 300),
        once: false,
    };
    while let Some(flag) = args.next() {
        if flag == "--once" {
            cfg.once = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {value}"))
        };
        match flag.as_str() {
            "--credentials" => cfg.credentials = PathBuf::from(&value),
            "--token-url" => cfg.token_url = value.clone(),
            "--api-url" => cfg.api_url = value.clone(),
            "--refresh-at-ms" => cfg.refresh_at_ms = num()? as i64,
            "--timeout-ms" => cfg.timeout = Duration::from_millis(num()?),
            "--pause-ms-min" => cfg.pause_ms.0 = num()?,
            "--pause-ms-max" => cfg.pause_ms.1 = num()?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if cfg.credentials.as_os_str().is_empty() || cfg.token_url.is_empty() || cfg.api_url.is_empty()
    {
        return Err("--credentials, --token-url and --api-url are required".into());
    }
    Ok(cfg)
}
