//! The soak test: one login kept alive under stress, measured.
//!
//! Against the loopback OAuth stand-in (`crates/standin`) with tokens that live a few
//! seconds and a random share of token requests failing (500/502/503, 429 with `Retry-After: 1`,
//! hangs past the request timeout, connection resets, HTML pages), all on one Claude-style login
//! in a throw-away HOME, for `--seconds N`:
//!
//! - one `tokenkeeper daemon`, restarted whenever it dies;
//! - `--clients` loops running `tokenkeeper exec --min-ttl 1s --retry-auth 1 -- fake_claude`
//!   (one call to the API stand-in with the stored token), 50–200 ms apart;
//! - `--claude-likes` `claude_like` processes: interactive-Claude stand-ins that call the API and
//!   refresh on their own by Claude Code's lock rules (`tests/support/claude_like.rs`);
//! - a `tokenkeeper refresh --force` every 4–8 s, so that there are more refreshes to kill;
//! - a chaos loop that SIGKILLs a random live tokenkeeper process every 0.5–2 s (exec wrappers,
//!   refreshes, the daemon); with `--target-refresh F`, a share F of the kills waits for a
//!   process to start a refresh and kills it 0–10 ms into it.
//!
//! The chaos spares one moment, atomically: a token request's round trip. Once the stand-in has
//! rotated the refresh token, the new tokens exist only in its reply until the client has read
//! them and written its recovery file; a process killed in between loses them, the next refresher
//! presents the spent token and the family is revoked. No client can close that window, so by
//! default each kill takes the stand-in's gate (`StandinServer::hold_token_requests`: no token
//! request is being served while it is held), waits until the last token reply is at least
//! 100 ms old and the newest refresh token is in the credentials file or a recovery file
//! (releasing the gate while it waits; at most 2 s), sends the SIGKILL and waits for the process
//! to be gone before letting go; a request the killed process had sent but the server had not
//! yet served is then dropped unserved. Every other moment stays exposed: waiting for locks,
//! backing off, saving after the recovery file is written, exec wrappers, the daemon; aimed kills
//! are only delayed. `--kill-in-round-trip` restores unrestricted kills, to see that loss; it is
//! then labelled as such in the summary (and still fails the run).
//!
//! Then the chaos stops, the load goes on for one token lifetime and 2 s more (so a killed
//! holder's locks get cleaned up by the next refresh), everything is stopped cleanly, and one
//! summary is printed. Loss figures (each must be 0, else the exit status is 1): runs failed by
//! auth, reused refresh tokens, revoked families, unparseable credentials files seen, times the
//! file held an expired token for 3 s or more, stale locks left (lock directories still there
//! 3 s after everything stopped; a final `tokenkeeper refresh --force` must then succeed within
//! 5 s), secrets found in logs (every captured stdout/stderr of tokenkeeper processes except
//! exec's stdout, which is the wrapped command's, and every file in the state folder except
//! `recovery/`).
//!
//! A login lost to a SIGKILL between the token request and the save (the new tokens existed
//! only in the killed process, or in the server's answer to it) is reported as such, with the
//! sequence of events: which process posted the refresh token, when it was killed, who presented
//! the spent token next. The driver then logs in again (a new family, as `claude /login` would)
//! so the rest of the run still measures. `logs/timeline.log` in the work folder has every token
//! request, file change, kill and failed run, by token fingerprint.
//!
//! Run: `cargo run --release --example soak -- --seconds 60` (or `scripts/soak 60`, which CI
//! runs). Under `cargo run` it first builds the binary and the two fixtures it drives
//! (`tests/support/fake_claude.rs` and `claude_like.rs`, built as examples).

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
mod kill_loop;

use tokenkeeper::secret::fingerprint;
use tokenkeeper_standin::{Fault, StandinConfig, StandinServer, TOKEN_PATH};

const USAGE: &str = "\
usage: soak [--seconds N] [--clients N] [--claude-likes N] [--lifetime SECS]
            [--refresh-before SECS] [--fault-rate F] [--target-refresh F]
            [--exec-min-ttl DUR] [--retry-auth N] [--client fake|claude]
            [--claude-refresh-at-ms MS[,MS...]] [--kill-in-round-trip]
            [--no-chaos] [--no-relogin] [--dir PATH] [--keep] [--no-build]
       soak --kill-loop N [--reply-delay-ms MS] [--aim-after-reply-us US] [--dir PATH]
            [--keep] [--no-build]

  --seconds N             how long the load and the chaos run (default 60)
  --clients N             loops of `tokenkeeper exec -- fake_claude` (default 20)
  --claude-likes N        interactive-Claude-like processes (default 3)
  --lifetime SECS         access token lifetime at the stand-in (default 6)
  --refresh-before SECS   the daemon's refresh_before (default 3)
  --fault-rate F          share of token requests that fail (default 0.15)
  --target-refresh F      share of kills that wait (up to 3 s) for a tokenkeeper process to
                          start a refresh and kill it 0-10 ms into it (default 0: every
                          kill picks any live tokenkeeper process)
  --exec-min-ttl DUR      `exec --min-ttl` (default 1s)
  --retry-auth N          `exec --retry-auth` (default 1)
  --client fake|claude    what `exec` runs: fake_claude (default; one API call, fails on a
                          401) or `claude_like --once` (handles a 401 as Claude Code does:
                          uses a newer token from the file, or waits on the refresh lock)
  --claude-refresh-at-ms MS[,MS...]
                          how much life left makes a Claude-like process refresh on its own,
                          one value per process in turn (default 2000,2500,3150: the last one
                          races the daemon, which refreshes with 3.0-3.3 s left)
  --kill-in-round-trip    let kills land inside a token request's round trip too (by default
                          a kill waits until no token request is being served, the last token
                          reply is 100 ms old and its tokens are stored): shows the one loss no
                          client can prevent, a reply carrying rotated tokens dying with the
                          killed process (still counted as a loss)
  --no-chaos              no SIGKILLs (a baseline)
  --no-relogin            after a lost login, do not log in again
  --dir PATH              make the work folder in PATH (default: $TMPDIR), and keep it
  --keep                  keep the work folder even when the run passes
  --no-build              do not run `cargo build` for the binaries under `cargo run`
  --kill-loop N           instead of the load: N rounds of one `tokenkeeper refresh --force`
                          SIGKILLed at a random moment of its run, each loss of the login
                          counted by where the kill landed: before the token request, with it
                          in flight, or after the reply was sent (tests/soak/kill_loop.rs)
  --reply-delay-ms MS     with --kill-loop: the token endpoint answers after MS (default 20)
  --aim-after-reply-us US with --kill-loop: each kill lands 0-US microseconds after the
                          stand-in has sent its reply (the window after the reply, directly)";

#[derive(Clone, Debug)]
struct Args {
    seconds: u64,
    clients: usize,
    claude_likes: usize,
    lifetime: u64,
    refresh_before: u64,
    fault_rate: f64,
    target_refresh: f64,
    exec_min_ttl: String,
    retry_auth: u32,
    /// The program `exec` runs: fake_claude, or claude_like --once.
    client_claude: bool,
    claude_refresh_at_ms: Vec<u64>,
    chaos: bool,
    /// Kills may land inside a token request's round trip (no chaos gate).
    kill_in_round_trip: bool,
    relogin: bool,
    dir: Option<PathBuf>,
    keep: bool,
    build: bool,
    /// Rounds of the kill loop instead of the load (0: the load).
    kill_loop: u64,
    reply_delay_ms: u64,
    aim_after_reply_us: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        seconds: 60,
        clients: 20,
        claude_likes: 3,
        lifetime: 6,
        refresh_before: 3,
        fault_rate: 0.15,
        target_refresh: 0.0,
        exec_min_ttl: "1s".into(),
        retry_auth: 1,
        client_claude: false,
        claude_refresh_at_ms: vec![2000, 2500, 3150],
        chaos: true,
        kill_in_round_trip: false,
        relogin: true,
        dir: None,
        keep: false,
        build: true,
        kill_loop: 0,
        reply_delay_ms: 20,
        aim_after_reply_us: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--no-chaos" => a.chaos = false,
            "--kill-in-round-trip" => a.kill_in_round_trip = true,
            "--no-relogin" => a.relogin = false,
            "--keep" => a.keep = true,
            "--no-build" => a.build = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => {
                let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
                let bad = |_: std::num::ParseIntError| format!("{flag}: bad value {v:?}");
                let badf = |_: std::num::ParseFloatError| format!("{flag}: bad value {v:?}");
                match flag.as_str() {
                    "--seconds" => a.seconds = v.parse().map_err(bad)?,
                    "--clients" => a.clients = v.parse().map_err(bad)?,
                    "--claude-likes" => a.claude_likes = v.parse().map_err(bad)?,
                    "--lifetime" => a.lifetime = v.parse().map_err(bad)?,
                    "--refresh-before" => a.refresh_before = v.parse().map_err(bad)?,
                    "--fault-rate" => a.fault_rate = v.parse().map_err(badf)?,
                    "--target-refresh" => a.target_refresh = v.parse().map_err(badf)?,
                    "--exec-min-ttl" => a.exec_min_ttl = v.clone(),
                    "--retry-auth" => a.retry_auth = v.parse().map_err(bad)?,
                    "--client" => {
                        a.client_claude = match v.as_str() {
                            "fake" => false,
                            "claude" => true,
                            _ => return Err(format!("--client: fake or claude, not {v:?}")),
                        }
                    }
                    "--claude-refresh-at-ms" => {
                        a.claude_refresh_at_ms = v
                            .split(',')
                            .map(|x| x.trim().parse().map_err(bad))
                            .collect::<Result<_, _>>()?;
                    }
                    "--dir" => a.dir = Some(PathBuf::from(&v)),
                    "--kill-loop" => a.kill_loop = v.parse().map_err(bad)?,
                    "--reply-delay-ms" => a.reply_delay_ms = v.parse().map_err(bad)?,
                    "--aim-after-reply-us" => a.aim_after_reply_us = v.parse().map_err(bad)?,
                    _ => return Err(format!("unknown option {flag}\n{USAGE}")),
                }
            }
        }
    }
    if a.lifetime < 2 || a.seconds == 0 || a.claude_refresh_at_ms.is_empty() {
        return Err("--lifetime must be at least 2 and --seconds at least 1".into());
    }
    Ok(a)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Exec,
    Daemon,
    Refresh,
    Final,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Daemon => "daemon",
            Kind::Refresh => "refresh --force",
            Kind::Final => "final refresh",
        }
    }
}

/// Where a killed process was, as far as can be seen from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Not refreshing (fast path, running the command, the daemon asleep).
    Idle,
    /// Holding tokenkeeper's own refresh lock, not Claude's (waiting, backing off, adopting).
    OwnLock,
    /// Holding Claude's refresh lock: the token request and the save happen here.
    ClaudeLock,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Idle => "not refreshing",
            Phase::OwnLock => "in a refresh, holding tokenkeeper's lock",
            Phase::ClaudeLock => "in a refresh, holding Claude's refresh lock",
        }
    }
}

#[derive(Clone, Debug)]
struct Kill {
    at: Duration,
    pid: u32,
    kind: Kind,
    phase: Phase,
    /// The process was already on its way out and ended normally.
    missed: bool,
    /// How long the chaos gate held the kill back for a token request's round trip.
    held_back: Duration,
}

struct Paths {
    work: PathBuf,
    home: PathBuf,
    claude_dir: PathBuf,
    creds: PathBuf,
    state_dir: PathBuf,
    logs: PathBuf,
}

struct Bins {
    tk: PathBuf,
    fake: PathBuf,
    claude_like: PathBuf,
}

/// What one tokenkeeper run came to.
struct Finished {
    pid: u32,
    /// When it was started, since the soak began.
    started: Duration,
    code: Option<i32>,
    signal: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

#[derive(Default)]
struct RunCounts {
    total: u64,
    ok: u64,
    auth_failed: u64,
    killed: u64,
    /// Other endings by exit code (or signal, as 128+N).
    other: BTreeMap<i32, u64>,
}

#[derive(Default)]
struct FileWatch {
    reads: u64,
    unparseable: u64,
    missing: u64,
    /// Every refresh token seen in the file, and when first.
    seen_refresh: HashMap<String, Duration>,
    /// (when first seen, refresh token) in order.
    versions: Vec<(Duration, String)>,
    expired_reads: u64,
    expired_time: Duration,
    last_read: Option<(Duration, bool)>,
    expired_since: Option<Duration>,
    longest_expired: Duration,
    stall_noted: bool,
    stalls: u64,
}

struct Poster {
    pid: u32,
    kind: Kind,
    started: Duration,
    ended: Duration,
    killed: bool,
    /// Fingerprints of the refresh tokens it posted, in order.
    posted: Vec<String>,
}

struct Loss {
    at: Duration,
    lost_rotation: bool,
    latest_fp: String,
    file_fp: String,
    kills: Vec<Kill>,
    presentations: Vec<Duration>,
    /// When the server's reply to each of `presentations` was handed to the connection (`None`:
    /// never).
    answered: Vec<Option<Duration>>,
    relogin_at: Option<Duration>,
}

/// Where a SIGKILL that lost a login landed in the refresh that rotated it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum LossWindow {
    /// Before the server's reply was sent: the request was in flight. No client can prevent this.
    InFlight,
    /// This long after the reply was sent, before the new tokens were in a file (the recovery
    /// file is written first): the window a client can shrink.
    AfterReply(Duration),
    /// No killed process posted the rotated token (not a kill's loss).
    Unexplained,
}

impl Loss {
    /// Where the kill that lost this login landed: the killed process that posted the file's
    /// refresh token, its request nearest the kill, and when the server answered it.
    fn window(&self, posters: &[Poster]) -> LossWindow {
        for p in posters
            .iter()
            .filter(|p| p.killed && p.posted.contains(&self.file_fp))
        {
            let Some(k) = self.kills.iter().find(|k| k.pid == p.pid) else {
                continue;
            };
            let end = p.ended + Duration::from_millis(5);
            let asked = self
                .presentations
                .iter()
                .enumerate()
                .filter(|(_, t)| **t >= p.started && **t <= end)
                .min_by_key(|(_, t)| t.abs_diff(k.at));
            if let Some((i, _)) = asked {
                return loss_window(Some(k.at), self.answered.get(i).copied().flatten());
            }
        }
        loss_window(None, None)
    }
}

/// The pure classification: a kill at `killed` of the process whose request was answered at
/// `answered` (`None`: never answered).
fn loss_window(killed: Option<Duration>, answered: Option<Duration>) -> LossWindow {
    match (killed, answered) {
        (None, _) => LossWindow::Unexplained,
        (Some(_), None) => LossWindow::InFlight,
        (Some(k), Some(a)) if k < a => LossWindow::InFlight,
        (Some(k), Some(a)) => LossWindow::AfterReply(k - a),
    }
}

struct Soak {
    args: Args,
    t0: Instant,
    paths: Paths,
    bins: Bins,
    server: StandinServer,
    env: Vec<(String, String)>,
    /// Live (unreaped) tokenkeeper processes: a pid here cannot have been reused.
    procs: Mutex<HashMap<u32, Kind>>,
    /// (label, text) of every tokenkeeper output that may not hold a token.
    captured: Mutex<Vec<(String, String)>>,
    kills: Mutex<Vec<Kill>>,
    runs: Mutex<RunCounts>,
    forced: Mutex<RunCounts>,
    auth_failures: Mutex<Vec<(Duration, String)>>,
    other_failures: Mutex<BTreeMap<String, u64>>,
    daemon_exits: Mutex<Vec<String>>,
    daemon_starts: AtomicU64,
    watch: Mutex<FileWatch>,
    losses: Mutex<Vec<Loss>>,
    /// Notable moments, for `logs/timeline.log`.
    events: Mutex<Vec<(Duration, String)>>,
    /// Every tokenkeeper run that posted a refresh token.
    posters: Mutex<Vec<Poster>>,
    family: Mutex<u64>,
    stop_load: AtomicBool,
    stop_chaos: AtomicBool,
    stop_watch: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(2);
        }
    };
    match run(args) {
        Ok(pass) => std::process::exit(if pass { 0 } else { 1 }),
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(2);
        }
    }
}

/// The config file every tokenkeeper process reads, and the only variables they see: the
/// throw-away home and state folders, the stand-in's endpoints.
fn environment(
    args: &Args,
    paths: &Paths,
    server: &StandinServer,
) -> Result<Vec<(String, String)>, String> {
    let config = paths.work.join("config/tokenkeeper/config.toml");
    fs::create_dir_all(config.parent().unwrap_or(&paths.work)).map_err(|e| e.to_string())?;
    fs::write(
        &config,
        format!(
            "[claude]\nrequest_timeout = \"1s\"\nretry_total = \"8s\"\n\n[daemon]\nrefresh_before = \"{}s\"\n",
            args.refresh_before
        ),
    )
    .map_err(|e| e.to_string())?;
    Ok(vec![
        ("HOME".to_string(), path_str(&paths.home)),
        (
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        ),
        (
            "XDG_STATE_HOME".to_string(),
            path_str(&paths.work.join("state")),
        ),
        (
            "XDG_CONFIG_HOME".to_string(),
            path_str(&paths.work.join("config")),
        ),
        ("TOKENKEEPER_TOKEN_URL".to_string(), server.token_url()),
        ("ANTHROPIC_BASE_URL".to_string(), server.base_url()),
        ("TZ".to_string(), "UTC".to_string()),
    ])
}

/// `--kill-loop`: see tests/soak/kill_loop.rs.
fn run_kill_loop(args: Args, bins: Bins, paths: Paths) -> Result<bool, String> {
    let server = StandinServer::start(StandinConfig {
        access_ttl_secs: 3600,
        ..StandinConfig::default()
    })
    .map_err(|e| format!("cannot start the stand-in: {e}"))?;
    let delay = Duration::from_millis(args.reply_delay_ms);
    server.set_default_fault(Some(Fault::Delay(delay)));
    let env = environment(&args, &paths, &server)?;
    eprintln!(
        "soak: kill loop, {} rounds; work folder {}",
        args.kill_loop,
        paths.work.display()
    );
    let setup = kill_loop::Setup {
        tk: &bins.tk,
        creds: &paths.creds,
        state_dir: &paths.state_dir,
        env: &env,
        server: &server,
        aim_after_reply: (args.aim_after_reply_us > 0)
            .then(|| Duration::from_micros(args.aim_after_reply_us)),
    };
    let report = kill_loop::run(&setup, args.kill_loop, delay);
    print!("{}", report.print());
    let pass = report.pass();
    if args.keep || args.dir.is_some() || !pass {
        eprintln!("soak: work folder kept: {}", paths.work.display());
    } else {
        let _ = fs::remove_dir_all(&paths.work);
    }
    Ok(pass)
}

fn run(args: Args) -> Result<bool, String> {
    let bins = find_binaries(args.build)?;
    let paths = make_paths(args.dir.as_deref())?;
    if args.kill_loop > 0 {
        return run_kill_loop(args, bins, paths);
    }
    let server = StandinServer::start(StandinConfig {
        access_ttl_secs: args.lifetime,
        ..StandinConfig::default()
    })
    .map_err(|e| format!("cannot start the stand-in: {e}"))?;
    let hang = Duration::from_millis(1500);
    server.set_fault_rate(
        args.fault_rate,
        vec![
            Fault::Status(500),
            Fault::Status(502),
            Fault::Status(503),
            Fault::RateLimited {
                retry_after_secs: Some(1),
            },
            Fault::Hang(hang),
            Fault::Reset,
            Fault::Html,
            // Never followed: to another host that would answer with a login of its own.
            Fault::Redirect("http://127.0.0.1:9/elsewhere".into()),
        ],
    );
    let login = server.issue_login();
    write_creds(
        &paths.creds,
        &login.access_token,
        &login.refresh_token,
        args.lifetime,
    )
    .map_err(|e| format!("cannot write the login: {e}"))?;
    let env = environment(&args, &paths, &server)?;
    eprintln!(
        "soak: {} s, {} clients, {} claude-like, tokens live {} s, faults {:.0}%, chaos {}; work folder {}",
        args.seconds,
        args.clients,
        args.claude_likes,
        args.lifetime,
        args.fault_rate * 100.0,
        if args.chaos { "on" } else { "off" },
        paths.work.display()
    );
    let soak = Arc::new(Soak {
        t0: Instant::now(),
        paths,
        bins,
        server,
        env,
        procs: Mutex::new(HashMap::new()),
        captured: Mutex::new(Vec::new()),
        kills: Mutex::new(Vec::new()),
        runs: Mutex::new(RunCounts::default()),
        forced: Mutex::new(RunCounts::default()),
        auth_failures: Mutex::new(Vec::new()),
        other_failures: Mutex::new(BTreeMap::new()),
        daemon_exits: Mutex::new(Vec::new()),
        daemon_starts: AtomicU64::new(0),
        watch: Mutex::new(FileWatch::default()),
        losses: Mutex::new(Vec::new()),
        events: Mutex::new(Vec::new()),
        posters: Mutex::new(Vec::new()),
        family: Mutex::new(login.family),
        stop_load: AtomicBool::new(false),
        stop_chaos: AtomicBool::new(false),
        stop_watch: AtomicBool::new(false),
        args,
    });
    let usage_before = cpu_seconds();

    let watcher = spawn(&soak, "watcher", watch_file);
    let monitor = spawn(&soak, "monitor", monitor_losses);
    let daemon = spawn(&soak, "daemon", supervise_daemon);
    let mut claude_likes = Vec::new();
    for i in 0..soak.args.claude_likes {
        claude_likes.push(start_claude_like(&soak, i)?);
    }
    let clients: Vec<_> = (0..soak.args.clients)
        .map(|_| spawn(&soak, "client", client_loop))
        .collect();
    let forcer = spawn(&soak, "forced", forced_refresh_loop);
    let chaos = soak.args.chaos.then(|| spawn(&soak, "chaos", chaos_loop));

    sleep_until(&soak, Duration::from_secs(soak.args.seconds));
    soak.stop_chaos.store(true, Ordering::SeqCst);
    if let Some(c) = chaos {
        let _ = c.join();
    }
    let chaos_end = soak.t0.elapsed();
    // Settle: the load goes on for one token lifetime (and a bit), so the next refresh cleans up
    // after a holder killed at the very end.
    thread::sleep(Duration::from_secs(soak.args.lifetime + 2));
    soak.stop_load.store(true, Ordering::SeqCst);
    for c in clients {
        let _ = c.join();
    }
    let _ = forcer.join();
    let mut claude_stats: BTreeMap<String, u64> = BTreeMap::new();
    let mut claude_problems = Vec::new();
    for (i, cl) in claude_likes.into_iter().enumerate() {
        match stop_claude_like(cl) {
            Ok(stats) => {
                for (k, v) in stats {
                    *claude_stats.entry(k).or_default() += v;
                }
            }
            Err(e) => claude_problems.push(format!("claude_like {i}: {e}")),
        }
    }
    let daemon_stop = stop_daemon(&soak, daemon);
    let load_end = soak.t0.elapsed();
    let stats = soak.server.stats();

    // Let anything left over show, then look for locks, temp files and records left behind.
    thread::sleep(Duration::from_secs(3));
    let leftovers = leftovers(&soak.paths);
    soak.server.set_fault_rate(0.0, Vec::new());
    let final_started = Instant::now();
    // A refresh stuck behind a lock left for good would wait the full lock timeout: stop it
    // after 10 s (it has failed the check by then anyway).
    let guard = {
        let s = Arc::clone(&soak);
        thread::spawn(move || {
            while final_started.elapsed() < Duration::from_secs(10) {
                if s.stop_watch.load(Ordering::SeqCst) {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
            let procs = lock(&s.procs);
            for (&pid, _) in procs.iter().filter(|(_, k)| **k == Kind::Final) {
                // SAFETY: a registered pid is our unreaped child.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
        })
    };
    let final_run = run_tk(&soak, Kind::Final, &["refresh", "--force"], true);
    let final_took = final_started.elapsed();
    let final_ok =
        final_run.as_ref().is_ok_and(|f| f.code == Some(0)) && final_took <= Duration::from_secs(5);
    let final_live = read_tokens(&soak.paths.creds)
        .is_some_and(|(access, _)| soak.server.is_live_access(&access));
    let end_stats = soak.server.stats();
    soak.stop_watch.store(true, Ordering::SeqCst);
    let _ = guard.join();
    let _ = watcher.join();
    let _ = monitor.join();
    let usage = cpu_seconds() - usage_before;

    let secrets = scan_secrets(&soak);
    write_timeline(&soak);
    let window = rotation_windows(&soak);
    let report = Report {
        soak: &soak,
        chaos_end,
        load_end,
        stats,
        end_stats,
        leftovers,
        final_run: final_run.map(|f| (f.code, f.signal)),
        final_took,
        final_ok,
        final_live,
        secrets,
        window,
        claude_stats,
        claude_problems,
        daemon_stop,
        cpu: usage,
    };
    let pass = report.print();
    let keep = soak.args.keep || soak.args.dir.is_some() || !pass;
    if keep {
        eprintln!("soak: work folder kept: {}", soak.paths.work.display());
    } else {
        let _ = fs::remove_dir_all(&soak.paths.work);
    }
    Ok(pass)
}

fn spawn(soak: &Arc<Soak>, name: &str, f: fn(&Soak)) -> JoinHandle<()> {
    let s = Arc::clone(soak);
    thread::Builder::new()
        .name(name.to_string())
        .spawn(move || f(&s))
        .expect("spawn thread")
}

fn sleep_until(soak: &Soak, at: Duration) {
    while soak.t0.elapsed() < at {
        thread::sleep((at - soak.t0.elapsed()).min(Duration::from_millis(200)));
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The binary and the two fixtures (built as examples) beside this one; under `cargo run`, built
/// first.
fn find_binaries(build: bool) -> Result<Bins, String> {
    let exe = std::env::current_exe().map_err(|e| format!("where am I? {e}"))?;
    let examples = exe.parent().ok_or("no examples folder")?.to_path_buf();
    let profile_dir = examples.parent().ok_or("no target folder")?.to_path_buf();
    if build && let Some(cargo) = std::env::var_os("CARGO") {
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "--bin",
            "tokenkeeper",
            "--example",
            "fake_claude",
            "--example",
            "claude_like",
        ]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        if let Ok(dir) = std::env::var("CARGO_MANIFEST_DIR") {
            cmd.current_dir(dir);
        }
        let status = cmd
            .status()
            .map_err(|e| format!("cannot run cargo build: {e}"))?;
        if !status.success() {
            return Err("cargo build of tokenkeeper and its examples failed".into());
        }
    }
    let bins = Bins {
        tk: profile_dir.join("tokenkeeper"),
        fake: examples.join("fake_claude"),
        claude_like: examples.join("claude_like"),
    };
    for p in [&bins.tk, &bins.fake, &bins.claude_like] {
        if !p.exists() {
            return Err(format!(
                "{} is missing: build it with `cargo build --release --bins --examples` (scripts/soak does)",
                p.display()
            ));
        }
    }
    Ok(bins)
}

fn make_paths(dir: Option<&Path>) -> Result<Paths, String> {
    let work = match dir {
        Some(d) => {
            fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
            let d = fs::canonicalize(d).map_err(|e| e.to_string())?;
            let run = d.join(format!(
                "soak-{}-{:08x}",
                std::process::id(),
                fastrand::u32(..)
            ));
            fs::create_dir(&run).map_err(|e| format!("cannot create {}: {e}", run.display()))?;
            run
        }
        None => {
            let base = std::env::temp_dir();
            let run = base.join(format!(
                "tokenkeeper-soak-{}-{:08x}",
                std::process::id(),
                fastrand::u32(..)
            ));
            fs::create_dir(&run).map_err(|e| format!("cannot create {}: {e}", run.display()))?;
            run
        }
    };
    let _ = fs::set_permissions(&work, fs::Permissions::from_mode(0o700));
    let home = work.join("home");
    let claude_dir = home.join(".claude");
    let logs = work.join("logs");
    for d in [&claude_dir, &logs] {
        fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    Ok(Paths {
        creds: claude_dir.join(".credentials.json"),
        state_dir: work.join("state/tokenkeeper"),
        work,
        home,
        claude_dir,
        logs,
    })
}

fn creds_json(access: &str, refresh: &str, expires_at: i64) -> String {
    json!({"claudeAiOauth": {
        "accessToken": access,
        "refreshToken": refresh,
        "expiresAt": expires_at,
        "scopes": ["user:inference", "user:profile", "user:sessions:claude_code"],
        "subscriptionType": "max",
        "rateLimitTier": null,
    }})
    .to_string()
}

/// A new login written as `claude /login` would: atomically, under Claude's storage lock.
fn write_creds(path: &Path, access: &str, refresh: &str, lifetime: u64) -> io::Result<()> {
    let storage = path.with_file_name(".storage-write.lock");
    let deadline = Instant::now() + Duration::from_secs(20);
    let held = loop {
        match fs::create_dir(&storage) {
            Ok(()) => break true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => break false,
            Err(e) => return Err(e),
        }
        let stale = fs::metadata(&storage)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(15));
        if stale {
            let _ = fs::remove_dir(&storage);
        } else if Instant::now() >= deadline {
            break false;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let text = creds_json(access, refresh, now_ms() + lifetime as i64 * 1000);
    let tmp = path.with_file_name(format!(".credentials.json.tmp.{:016x}", fastrand::u64(..)));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    if held {
        let _ = fs::remove_dir(&storage);
    }
    result
}

fn read_tokens(path: &Path) -> Option<(String, String)> {
    let v: Value = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    let o = &v["claudeAiOauth"];
    Some((
        o["accessToken"].as_str()?.to_string(),
        o["refreshToken"].as_str()?.to_string(),
    ))
}

/// Runs tokenkeeper to completion, registered as live until it has exited (and before it is
/// reaped), so the chaos loop can never signal a reused pid. `scan_stdout` is false for `exec`,
/// whose stdout is the wrapped command's.
fn run_tk(soak: &Soak, kind: Kind, args: &[&str], scan_stdout: bool) -> io::Result<Finished> {
    let mut cmd = Command::new(&soak.bins.tk);
    // -v: debug lines name each refresh token posted (by fingerprint), which lets the report
    // say which process spent a token; and the secret scan covers the debug output too.
    cmd.arg("-v")
        .args(args)
        .env_clear()
        .envs(soak.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if kind == Kind::Daemon {
        // The daemon outlives nothing: should the driver die, it is told to stop.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
    // Registered after the spawn: the pid cannot be reused before we reap it, below.
    let started = soak.t0.elapsed();
    let mut child = cmd.spawn()?;
    let pid = child.id();
    lock(&soak.procs).insert(pid, kind);
    let mut out = child.stdout.take();
    let err = child.stderr.take();
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut e) = err {
            let _ = e.read_to_end(&mut buf);
        }
        buf
    });
    let mut stdout = Vec::new();
    if let Some(o) = out.as_mut() {
        let _ = o.read_to_end(&mut stdout);
    }
    let stderr = err_reader.join().unwrap_or_default();
    wait_exited_unreaped(pid);
    lock(&soak.procs).remove(&pid);
    let status = child.wait()?;
    if status.signal() != Some(libc::SIGKILL) {
        let mine = |k: &&mut Kill| k.pid == pid && k.at >= started;
        for k in lock(&soak.kills).iter_mut().filter(mine) {
            k.missed = true;
        }
    }
    let posted: Vec<String> = String::from_utf8_lossy(&stderr)
        .lines()
        .filter_map(|l| l.split("posting refresh token ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next().map(str::to_string))
        .collect();
    if !posted.is_empty() {
        lock(&soak.posters).push(Poster {
            pid,
            kind,
            started,
            ended: soak.t0.elapsed(),
            killed: status.signal() == Some(libc::SIGKILL),
            posted,
        });
    }
    let label = format!("{} pid {pid}", kind.name());
    if !stderr.is_empty() {
        let name = format!("{}-{pid}.stderr", kind.name().replace([' ', '-'], ""));
        let _ = fs::write(soak.paths.logs.join(name), &stderr);
    }
    {
        let mut captured = lock(&soak.captured);
        if !stderr.is_empty() {
            captured.push((
                format!("{label} stderr"),
                String::from_utf8_lossy(&stderr).into_owned(),
            ));
        }
        if scan_stdout && !stdout.is_empty() {
            captured.push((
                format!("{label} stdout"),
                String::from_utf8_lossy(&stdout).into_owned(),
            ));
        }
    }
    Ok(Finished {
        pid,
        started,
        code: status.code(),
        signal: status.signal(),
        stdout,
        stderr,
    })
}

/// Waits until `pid` has exited without reaping it.
fn wait_exited_unreaped(pid: u32) {
    loop {
        // SAFETY: waitid writes into the zeroed siginfo we own; WNOWAIT leaves the child to wait().
        let rc = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .chars()
        .take(300)
        .collect()
}

fn tally(counts: &mut RunCounts, f: &Finished) {
    counts.total += 1;
    match (f.code, f.signal) {
        (Some(0), _) => counts.ok += 1,
        (Some(77), _) => counts.auth_failed += 1,
        (_, Some(9)) => counts.killed += 1,
        (Some(code), _) => *counts.other.entry(code).or_default() += 1,
        (None, Some(sig)) => *counts.other.entry(128 + sig).or_default() += 1,
        (None, None) => *counts.other.entry(-1).or_default() += 1,
    }
}

/// The message of a failure, with the work folder's path shortened, for grouping.
fn gist(soak: &Soak, f: &Finished) -> String {
    let line = last_line(&f.stderr);
    let line = if line.is_empty() {
        format!("(no stderr; stdout: {})", last_line(&f.stdout))
    } else {
        line
    };
    // Timestamps and pids make every line distinct; keep the words.
    let line = line.replace(&path_str(&soak.paths.work), "$WORK");
    line.split_whitespace()
        .filter(|w| !w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn client_loop(soak: &Soak) {
    let retry = soak.args.retry_auth.to_string();
    let mut args: Vec<String> = vec!["exec".into(), "--min-ttl".into()];
    args.push(soak.args.exec_min_ttl.clone());
    if soak.args.retry_auth > 0 {
        args.extend(["--retry-auth".into(), retry]);
    }
    args.push("--".into());
    if soak.args.client_claude {
        args.push(path_str(&soak.bins.claude_like));
        args.extend(
            [
                "--once",
                "--credentials",
                &path_str(&soak.paths.creds),
                "--token-url",
                &soak.server.token_url(),
                "--api-url",
                &soak.server.api_url(),
                // Claude's own margin (5 min of 8 h), scaled: below exec's --min-ttl.
                "--refresh-at-ms",
                "500",
            ]
            .map(String::from),
        );
    } else {
        args.push(path_str(&soak.bins.fake));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    while !soak.stop_load.load(Ordering::SeqCst) {
        match run_tk(soak, Kind::Exec, &args, false) {
            Ok(f) => {
                tally(&mut lock(&soak.runs), &f);
                if f.code == Some(77) {
                    let at = soak.t0.elapsed();
                    lock(&soak.auth_failures).push((at, gist(soak, &f)));
                    note(
                        soak,
                        at,
                        format!(
                            "exec pid {} (started {:.3} s) ended with 77",
                            f.pid,
                            f.started.as_secs_f64()
                        ),
                    );
                    let mut log = fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(soak.paths.logs.join("auth-failures.log"))
                        .ok();
                    if let Some(log) = log.as_mut() {
                        let _ = writeln!(
                            log,
                            "--- exec pid {} ended at {:.3} s with 77; its stderr:\n{}",
                            f.pid,
                            at.as_secs_f64(),
                            String::from_utf8_lossy(&f.stderr).trim_end()
                        );
                    }
                } else if f.code != Some(0) && f.signal != Some(9) {
                    *lock(&soak.other_failures)
                        .entry(format!("exec exit {:?}: {}", f.code, gist(soak, &f)))
                        .or_default() += 1;
                }
            }
            Err(e) => {
                *lock(&soak.other_failures)
                    .entry(format!("exec could not start: {e}"))
                    .or_default() += 1;
                thread::sleep(Duration::from_millis(500));
            }
        }
        thread::sleep(Duration::from_millis(fastrand::u64(50..=200)));
    }
}

fn forced_refresh_loop(soak: &Soak) {
    while !soak.stop_load.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(fastrand::u64(4000..=8000)));
        if soak.stop_load.load(Ordering::SeqCst) {
            break;
        }
        if let Ok(f) = run_tk(soak, Kind::Refresh, &["refresh", "--force"], true) {
            tally(&mut lock(&soak.forced), &f);
            if f.code != Some(0) && f.signal != Some(9) {
                *lock(&soak.other_failures)
                    .entry(format!(
                        "refresh --force exit {:?}: {}",
                        f.code,
                        gist(soak, &f)
                    ))
                    .or_default() += 1;
            }
        }
    }
}

fn supervise_daemon(soak: &Soak) {
    while !soak.stop_load.load(Ordering::SeqCst) {
        soak.daemon_starts.fetch_add(1, Ordering::SeqCst);
        note(soak, soak.t0.elapsed(), "daemon starting".into());
        match run_tk(soak, Kind::Daemon, &["daemon"], true) {
            Ok(f) => {
                let stopping = soak.stop_load.load(Ordering::SeqCst);
                if f.signal == Some(9) && !stopping {
                    continue; // the chaos loop; restart at once
                }
                if !(stopping && f.code == Some(0)) {
                    lock(&soak.daemon_exits).push(format!(
                        "daemon ended (exit {:?}, signal {:?}) at {:.1} s: {}",
                        f.code,
                        f.signal,
                        soak.t0.elapsed().as_secs_f64(),
                        gist(soak, &f)
                    ));
                }
                if stopping {
                    return;
                }
            }
            Err(e) => lock(&soak.daemon_exits).push(format!("daemon could not start: {e}")),
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// SIGTERM to the daemon, then waits for its supervisor; returns a problem, if any.
fn stop_daemon(soak: &Soak, supervisor: JoinHandle<()>) -> Option<String> {
    let started = Instant::now();
    while !supervisor.is_finished() {
        if started.elapsed() > Duration::from_secs(15) {
            let procs = lock(&soak.procs);
            for (&pid, _) in procs.iter().filter(|(_, k)| **k == Kind::Daemon) {
                // SAFETY: a registered pid is our unreaped child.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            drop(procs);
            let _ = supervisor.join();
            return Some("the daemon did not stop within 15 s of SIGTERM".into());
        }
        {
            let procs = lock(&soak.procs);
            for (&pid, _) in procs.iter().filter(|(_, k)| **k == Kind::Daemon) {
                // SAFETY: a registered pid is our unreaped child. Sent again every second in
                // case the daemon was starting when the first one came.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
        }
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until && !supervisor.is_finished() {
            thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = supervisor.join();
    let exits = lock(&soak.daemon_exits);
    exits
        .iter()
        .find(|e| e.contains("ended"))
        .map(|_| format!("{} unexpected daemon ending(s)", exits.len()))
}

struct ClaudeLike {
    child: Child,
    stdin: Option<ChildStdin>,
}

fn start_claude_like(soak: &Soak, i: usize) -> Result<ClaudeLike, String> {
    let log = fs::File::create(soak.paths.logs.join(format!("claude_like-{i}.stderr")))
        .map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&soak.bins.claude_like);
    cmd.args([
        "--credentials",
        &path_str(&soak.paths.creds),
        "--token-url",
        &soak.server.token_url(),
        "--api-url",
        &soak.server.api_url(),
        "--refresh-at-ms",
        &soak.args.claude_refresh_at_ms[i % soak.args.claude_refresh_at_ms.len()].to_string(),
        "--timeout-ms",
        "2000",
    ])
    .env_clear()
    .envs(soak.env.iter().map(|(k, v)| (k, v)))
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(log);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| format!("claude_like: {e}"))?;
    let stdin = child.stdin.take();
    Ok(ClaudeLike { child, stdin })
}

/// Closes its stdin (its signal to finish the turn and stop) and reads its counters.
fn stop_claude_like(mut c: ClaudeLike) -> Result<BTreeMap<String, u64>, String> {
    drop(c.stdin.take());
    let started = Instant::now();
    loop {
        if let Some(status) = c.child.try_wait().map_err(|e| e.to_string())? {
            let mut out = String::new();
            if let Some(mut o) = c.child.stdout.take() {
                let _ = o.read_to_string(&mut out);
            }
            if !status.success() {
                return Err(format!("ended with {status}"));
            }
            let v: Value = serde_json::from_str(out.trim()).map_err(|e| e.to_string())?;
            return Ok(v
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default());
        }
        if started.elapsed() > Duration::from_secs(40) {
            let _ = c.child.kill();
            let _ = c.child.wait();
            return Err("did not stop within 40 s".into());
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Pids holding tokenkeeper's own refresh lock (`flock` on `.tokenkeeper.lock`), from /proc/locks.
fn own_lock_holders(paths: &Paths) -> Vec<u32> {
    let Ok(meta) = fs::metadata(paths.claude_dir.join(".tokenkeeper.lock")) else {
        return Vec::new();
    };
    let inode = meta.ino().to_string();
    let Ok(text) = fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // "1: FLOCK ADVISORY WRITE <pid> <maj>:<min>:<inode> 0 EOF"; waiters have "->".
            if f.get(1) != Some(&"FLOCK") {
                return None;
            }
            let ino = f.get(5)?.rsplit(':').next()?;
            (ino == inode).then(|| f.get(4)?.parse().ok())?
        })
        .collect()
}

/// Not a zombie (nor gone).
fn is_running(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// The pid named by Claude's owner record, if any.
fn claude_lock_owner(paths: &Paths) -> Option<u32> {
    let text = fs::read(paths.claude_dir.join(".oauth_refresh.lock.owner")).ok()?;
    let v: Value = serde_json::from_slice(&text).ok()?;
    v["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
}

/// Lock directories noted in tokenkeeper's sidecar: (pid, any held).
fn sidecar_holder(paths: &Paths) -> Option<(u32, bool)> {
    let text = fs::read(paths.claude_dir.join(".tokenkeeper.lock")).ok()?;
    let v: Value = serde_json::from_slice(&text).ok()?;
    let pid = v["pid"].as_u64().and_then(|p| u32::try_from(p).ok())?;
    Some((pid, v["dirs"].as_array().is_some_and(|d| !d.is_empty())))
}

/// How old the last token reply must be before a kill (unless `--kill-in-round-trip`): time for
/// its reader to parse it and write its recovery file.
const ROUND_TRIP_MARGIN: Duration = Duration::from_millis(100);
/// Past this, a kill no longer waits for the newest tokens to be stored (they never will be).
const STORE_WAIT_CAP: Duration = Duration::from_secs(2);

fn chaos_loop(soak: &Soak) {
    while !soak.stop_chaos.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(fastrand::u64(500..=2000)));
        if soak.stop_chaos.load(Ordering::SeqCst) {
            return;
        }
        let hunted = if fastrand::f64() < soak.args.target_refresh {
            hunt_refresher(soak)
        } else {
            None
        };
        if soak.args.kill_in_round_trip {
            kill_one(soak, hunted, None);
            continue;
        }
        // Outside every token request's round trip: no request is being served while the gate
        // is held, and the last reply has had time to reach its reader's recovery file (and
        // has: on a slow machine that can take longer than the margin).
        let asked = Instant::now();
        loop {
            let gate = soak.server.hold_token_requests();
            let age = gate.since_last_token_response().unwrap_or(Duration::MAX);
            if age >= ROUND_TRIP_MARGIN && (age >= STORE_WAIT_CAP || newest_tokens_stored(soak)) {
                kill_one(soak, hunted, Some(asked.elapsed()));
                drop(gate);
                break;
            }
            drop(gate);
            thread::sleep(
                ROUND_TRIP_MARGIN
                    .saturating_sub(age)
                    .max(Duration::from_millis(5)),
            );
        }
    }
}

/// Whether the newest refresh token the stand-in issued for the current login is where a killed
/// process cannot take it along: in the credentials file or in a recovery file.
fn newest_tokens_stored(soak: &Soak) -> bool {
    let family = *lock(&soak.family);
    let Some((_, newest)) = soak.server.current_tokens(family) else {
        return true;
    };
    read_tokens(&soak.paths.creds).is_some_and(|(_, refresh)| refresh == newest)
        || files_under(&soak.paths.state_dir.join("recovery"))
            .iter()
            .any(|f| fs::read_to_string(f).is_ok_and(|text| text.contains(&newest)))
}

/// Waits (up to 3 s) for a tokenkeeper process to enter a refresh (take tokenkeeper's own
/// lock), then lets it go on for 0–10 ms, so the kill lands anywhere in the refresh: waiting
/// for Claude's locks, posting, saving.
fn hunt_refresher(soak: &Soak) -> Option<u32> {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && !soak.stop_chaos.load(Ordering::SeqCst) {
        let holders = own_lock_holders(&soak.paths);
        if let Some(&pid) = holders.first() {
            thread::sleep(Duration::from_micros(fastrand::u64(0..=10_000)));
            return Some(pid);
        }
        thread::sleep(Duration::from_millis(1));
    }
    None
}

/// SIGKILLs `preferred` if it is still one of our running tokenkeeper processes, else a random
/// one of them. `held_back` is set when the caller holds the stand-in's gate (and says for how
/// long the kill waited for it): then the process is also waited for until it is gone (its
/// sockets closed), so that a token request it sent but the server has not served yet is
/// dropped unserved once the gate opens.
fn kill_one(soak: &Soak, preferred: Option<u32>, held_back: Option<Duration>) {
    let procs = lock(&soak.procs);
    // Only processes still running: one that has exited but is not yet reaped would shrug the
    // signal off.
    let live: Vec<u32> = procs.keys().copied().filter(|p| is_running(*p)).collect();
    if live.is_empty() {
        return;
    }
    let victim = match preferred {
        Some(p) if live.contains(&p) => p,
        _ => live[fastrand::usize(..live.len())],
    };
    let kind = procs[&victim];
    let holds_claude = claude_lock_owner(&soak.paths) == Some(victim)
        || sidecar_holder(&soak.paths) == Some((victim, true));
    let phase = if holds_claude {
        Phase::ClaudeLock
    } else if own_lock_holders(&soak.paths).contains(&victim) {
        Phase::OwnLock
    } else {
        Phase::Idle
    };
    // SAFETY: the pid is registered, so it is our child and not yet reaped.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    // Noted before the registry is let go, so its run sees the note when it ends.
    lock(&soak.kills).push(Kill {
        at: soak.t0.elapsed(),
        pid: victim,
        kind,
        phase,
        missed: false,
        held_back: held_back.unwrap_or_default(),
    });
    if held_back.is_some() {
        // Registered, hence unreaped: the pid is still the victim's (a zombie once its files,
        // sockets included, are closed). A little more for the FIN to reach the server's side.
        let until = Instant::now() + Duration::from_secs(2);
        while is_running(victim) && Instant::now() < until {
            thread::sleep(Duration::from_micros(500));
        }
        thread::sleep(Duration::from_millis(2));
    }
    drop(procs);
}

/// Reads the credentials file at every change (inotify) and every 20 ms, counting reads that do
/// not parse and noting every refresh token it holds.
fn watch_file(soak: &Soak) {
    // SAFETY: plain inotify calls on a descriptor we own and close below.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd >= 0 {
        let dir = std::ffi::CString::new(path_str(&soak.paths.claude_dir)).unwrap_or_default();
        // SAFETY: a valid NUL-terminated path.
        unsafe {
            libc::inotify_add_watch(
                fd,
                dir.as_ptr(),
                libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE | libc::IN_CREATE | libc::IN_DELETE,
            )
        };
    }
    let mut buf = [0u8; 4096];
    let mut bad = 0;
    while !soak.stop_watch.load(Ordering::SeqCst) {
        if fd >= 0 {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd; then draining our own non-blocking descriptor.
            unsafe {
                libc::poll(&mut pfd, 1, 20);
                while libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) > 0 {}
            }
        } else {
            thread::sleep(Duration::from_millis(20));
        }
        let at = soak.t0.elapsed();
        let read = fs::read(&soak.paths.creds);
        let mut w = lock(&soak.watch);
        w.reads += 1;
        let parsed = match &read {
            Ok(bytes) => serde_json::from_slice::<Value>(bytes).ok().and_then(|v| {
                let o = v.get("claudeAiOauth")?;
                Some((
                    o.get("refreshToken")?.as_str()?.to_string(),
                    o.get("expiresAt")?.as_i64()?,
                ))
            }),
            Err(_) => None,
        };
        let mut stall = None;
        let expired = match parsed {
            Some((refresh, expires_at)) => {
                if !w.seen_refresh.contains_key(&refresh) {
                    w.seen_refresh.insert(refresh.clone(), at);
                    w.versions.push((at, refresh));
                }
                expires_at <= now_ms()
            }
            None => {
                match &read {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => w.missing += 1,
                    _ => w.unparseable += 1,
                }
                if let Ok(bytes) = &read
                    && bad < 5
                {
                    bad += 1;
                    let _ = fs::write(soak.paths.logs.join(format!("unparseable-{bad}")), bytes);
                }
                false
            }
        };
        if expired {
            w.expired_reads += 1;
            if let Some((last, true)) = w.last_read {
                w.expired_time += at.saturating_sub(last);
            }
            let since = *w.expired_since.get_or_insert(at);
            let streak = at.saturating_sub(since);
            w.longest_expired = w.longest_expired.max(streak);
            if streak >= Duration::from_secs(3) && !w.stall_noted {
                w.stall_noted = true;
                stall = Some(streak);
            }
        } else {
            w.expired_since = None;
            w.stall_noted = false;
        }
        w.last_read = Some((at, expired));
        drop(w);
        if let Some(streak) = stall {
            snapshot_stall(soak, at, streak);
        }
    }
    if fd >= 0 {
        // SAFETY: closing the descriptor opened above.
        unsafe { libc::close(fd) };
    }
}

/// The file has held an expired token for 3 s: write down who holds what
/// (`logs/stall-N.txt`), to tell a stuck lock from a slow refresh.
fn snapshot_stall(soak: &Soak, at: Duration, streak: Duration) {
    let n = {
        let mut w = lock(&soak.watch);
        w.stalls += 1;
        w.stalls
    };
    let p = &soak.paths;
    let mut text = format!(
        "at {:.3} s the file had held an expired access token for {:.1} s\n",
        at.as_secs_f64(),
        streak.as_secs_f64()
    );
    for dir in [&p.claude_dir, &p.home] {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".lock") || name.contains(".owner") || name.contains(".tmp.") {
                let age = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .map_or(-1.0, |d| d.as_secs_f64());
                let what = if e.path().is_dir() { "dir " } else { "file" };
                let _ = writeln!(
                    text,
                    "  {what} {} (mtime {age:.1} s ago)",
                    e.path().display()
                );
            }
        }
    }
    let read = |name: &str| fs::read_to_string(p.claude_dir.join(name)).unwrap_or_default();
    let _ = writeln!(
        text,
        "  owner record: {}",
        read(".oauth_refresh.lock.owner")
    );
    let _ = writeln!(text, "  tokenkeeper sidecar: {}", read(".tokenkeeper.lock"));
    let _ = writeln!(
        text,
        "  holders of tokenkeeper's lock: {:?}",
        own_lock_holders(p)
    );
    let procs: Vec<String> = lock(&soak.procs)
        .iter()
        .map(|(pid, k)| format!("{} {pid}", k.name()))
        .collect();
    let _ = writeln!(text, "  live tokenkeeper processes: {}", procs.join(", "));
    let _ = fs::write(p.logs.join(format!("stall-{n}.txt")), text);
    note(
        soak,
        at,
        format!("stall {n}: the file has held an expired token for 3 s (logs/stall-{n}.txt)"),
    );
}

/// Notices a revoked login family at once, works out whether its latest tokens ever reached the
/// file (if not, a process holding them died before saving), names the kills just before, and
/// logs in again so the rest of the run still measures.
fn monitor_losses(soak: &Soak) {
    let mut revoked = 0;
    while !soak.stop_watch.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(50));
        let now_revoked = soak.server.stats().revoked_families;
        if now_revoked <= revoked {
            continue;
        }
        revoked = now_revoked;
        let at = soak.t0.elapsed();
        // Give the watcher a moment to catch up with the file.
        thread::sleep(Duration::from_millis(50));
        let family = *lock(&soak.family);
        let latest = soak.server.current_tokens(family).map(|(_, r)| r);
        // The refresh token the file last held (a wiped login holds ""): the one whose
        // rotation was lost, or the old one presented again.
        let (file, lost_rotation) = {
            let w = lock(&soak.watch);
            let file = w
                .versions
                .iter()
                .rev()
                .map(|(_, r)| r.clone())
                .find(|r| !r.is_empty());
            let lost = latest
                .as_ref()
                .is_some_and(|r| !w.seen_refresh.contains_key(r));
            (file, lost)
        };
        let presentations = file
            .as_deref()
            .map(|r| token_presentations(soak, r))
            .unwrap_or_default();
        let (presentations, answered): (Vec<Duration>, Vec<Option<Duration>>) =
            presentations.into_iter().unzip();
        let since = presentations
            .first()
            .copied()
            .unwrap_or(at.saturating_sub(Duration::from_secs(10)));
        let kills = lock(&soak.kills)
            .iter()
            .filter(|k| k.at + Duration::from_millis(50) >= since && k.at <= at)
            .cloned()
            .collect();
        let mut loss = Loss {
            at,
            lost_rotation,
            latest_fp: latest.as_deref().map(fingerprint).unwrap_or_default(),
            file_fp: file.as_deref().map(fingerprint).unwrap_or_default(),
            kills,
            presentations,
            answered,
            relogin_at: None,
        };
        if soak.args.relogin {
            let login = soak.server.issue_login();
            if write_creds(
                &soak.paths.creds,
                &login.access_token,
                &login.refresh_token,
                soak.args.lifetime,
            )
            .is_ok()
            {
                *lock(&soak.family) = login.family;
                loss.relogin_at = Some(soak.t0.elapsed());
                note(
                    soak,
                    soak.t0.elapsed(),
                    format!(
                        "logged in again: refresh token {}",
                        fingerprint(&login.refresh_token)
                    ),
                );
            }
        }
        lock(&soak.losses).push(loss);
    }
}

/// When the token endpoint was asked to refresh `refresh_token`, and when it answered each time.
fn token_presentations(soak: &Soak, refresh_token: &str) -> Vec<(Duration, Option<Duration>)> {
    presented(&soak.server, refresh_token)
        .into_iter()
        .map(|(received, answered)| {
            (
                received.saturating_duration_since(soak.t0),
                answered.map(|a| a.saturating_duration_since(soak.t0)),
            )
        })
        .collect()
}

/// Each token request that presented `refresh_token`, in order: when it arrived, and when its
/// reply was sent (if it was).
fn presented(server: &StandinServer, refresh_token: &str) -> Vec<(Instant, Option<Instant>)> {
    server
        .requests()
        .into_iter()
        .filter(|r| {
            r.path == TOKEN_PATH
                && serde_json::from_str::<Value>(&r.body)
                    .is_ok_and(|v| v["refresh_token"].as_str() == Some(refresh_token))
        })
        .map(|r| (r.received, r.answered))
        .collect()
}

fn note(soak: &Soak, at: Duration, what: String) {
    lock(&soak.events).push((at, what));
}

/// `logs/timeline.log`: token requests (by the fingerprint of the refresh token presented),
/// new refresh tokens in the file, kills, failed runs, daemon starts, new logins, in order.
fn write_timeline(soak: &Soak) {
    let mut lines: Vec<(Duration, String)> = lock(&soak.events).clone();
    for r in soak
        .server
        .requests()
        .iter()
        .filter(|r| r.path == TOKEN_PATH)
    {
        let fp = serde_json::from_str::<Value>(&r.body)
            .ok()
            .and_then(|v| v["refresh_token"].as_str().map(fingerprint))
            .unwrap_or_default();
        lines.push((
            r.received.saturating_duration_since(soak.t0),
            format!("token request presenting {fp}"),
        ));
    }
    for (at, refresh) in &lock(&soak.watch).versions {
        lines.push((
            *at,
            format!("file holds refresh token {}", fingerprint(refresh)),
        ));
    }
    for k in lock(&soak.kills).iter() {
        lines.push((
            k.at,
            format!(
                "SIGKILL {} pid {} ({}{})",
                k.kind.name(),
                k.pid,
                k.phase.name(),
                if k.missed { "; too late" } else { "" }
            ),
        ));
    }
    for p in lock(&soak.posters).iter() {
        lines.push((
            p.ended,
            format!(
                "{} pid {} ended{} (started {:.3} s); it posted {}",
                p.kind.name(),
                p.pid,
                if p.killed { " by SIGKILL" } else { "" },
                p.started.as_secs_f64(),
                p.posted.join(", ")
            ),
        ));
    }
    lines.sort_by_key(|(at, _)| *at);
    let text: String = lines
        .iter()
        .map(|(at, what)| format!("{:9.3} {what}\n", at.as_secs_f64()))
        .collect();
    let _ = fs::write(soak.paths.logs.join("timeline.log"), text);
}

/// How long after the token request that rotated it each new refresh token reached the file:
/// the window in which a SIGKILL loses the login. (median, 90th percentile, max, total) in ms.
fn rotation_windows(soak: &Soak) -> Option<(f64, f64, f64, f64, usize)> {
    let requests = soak.server.requests();
    let mut posted: HashMap<String, Vec<Duration>> = HashMap::new();
    for r in requests.iter().filter(|r| r.path == TOKEN_PATH) {
        if let Some(t) = serde_json::from_str::<Value>(&r.body)
            .ok()
            .and_then(|v| v["refresh_token"].as_str().map(str::to_string))
        {
            posted
                .entry(t)
                .or_default()
                .push(r.received.saturating_duration_since(soak.t0));
        }
    }
    let w = lock(&soak.watch);
    let mut windows: Vec<f64> = w
        .versions
        .windows(2)
        .filter_map(|pair| {
            let (_, prev) = &pair[0];
            let (seen, _) = pair[1];
            let asked = posted
                .get(prev)?
                .iter()
                .filter(|t| **t <= seen)
                .max()
                .copied()?;
            Some((seen - asked).as_secs_f64() * 1000.0)
        })
        .collect();
    if windows.is_empty() {
        return None;
    }
    windows.sort_by(f64::total_cmp);
    let pick = |q: f64| windows[((windows.len() - 1) as f64 * q).round() as usize];
    Some((
        pick(0.5),
        pick(0.9),
        pick(1.0),
        windows.iter().sum(),
        windows.len(),
    ))
}

struct Leftovers {
    lock_dirs: Vec<String>,
    others: Vec<String>,
}

fn leftovers(p: &Paths) -> Leftovers {
    let mut lock_dirs = Vec::new();
    let mut others = Vec::new();
    for dir in [&p.claude_dir, &p.home] {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let shown = e
                .path()
                .strip_prefix(&p.home)
                .map_or(name.clone(), |r| format!("~/{}", r.display()));
            if e.path().is_dir() && name.ends_with(".lock") {
                lock_dirs.push(shown);
            } else if name.contains(".tmp.") || name == ".oauth_refresh.lock.owner" {
                others.push(shown);
            }
        }
    }
    Leftovers { lock_dirs, others }
}

struct Secrets {
    found: Vec<String>,
    outputs: usize,
    files: usize,
}

/// Every issued token (or a fragment of one: a token prefix and 16 more token characters) in
/// any captured output of tokenkeeper or any state file outside `recovery/`.
fn scan_secrets(soak: &Soak) -> Secrets {
    let issued: HashSet<String> = soak.server.all_issued_tokens().into_iter().collect();
    let mut texts: Vec<(String, String)> = lock(&soak.captured).clone();
    let mut files = 0;
    for f in files_under(&soak.paths.state_dir) {
        if f.components().any(|c| c.as_os_str() == "recovery") {
            continue;
        }
        files += 1;
        if let Ok(bytes) = fs::read(&f) {
            texts.push((
                format!("state file {}", f.display()),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
    }
    let mut found = Vec::new();
    for (label, text) in &texts {
        let mut from = 0;
        while let Some(i) = text[from..].find("sk-ant-o") {
            let start = from + i;
            let tail: String = text[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            from = start + 8;
            let whole = issued.contains(&tail);
            if whole || tail.len() >= "sk-ant-oat01-".len() + 16 {
                found.push(format!(
                    "{label}: {} {}",
                    if whole { "token" } else { "token fragment" },
                    fingerprint(&tail)
                ));
            }
        }
    }
    Secrets {
        found,
        outputs: texts.len() - files,
        files,
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// User plus system CPU seconds of this process and its reaped children.
fn cpu_seconds() -> f64 {
    let mut total = 0.0;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        // SAFETY: getrusage fills the zeroed struct we own.
        let u = unsafe {
            let mut u: libc::rusage = std::mem::zeroed();
            libc::getrusage(who, &mut u);
            u
        };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        total += tv(u.ru_utime) + tv(u.ru_stime);
    }
    total
}

struct Report<'a> {
    soak: &'a Soak,
    chaos_end: Duration,
    load_end: Duration,
    /// At the end of the load (for request rates) and after the final refresh (for losses).
    stats: tokenkeeper_standin::StandinStats,
    end_stats: tokenkeeper_standin::StandinStats,
    leftovers: Leftovers,
    final_run: io::Result<(Option<i32>, Option<i32>)>,
    final_took: Duration,
    final_ok: bool,
    final_live: bool,
    secrets: Secrets,
    window: Option<(f64, f64, f64, f64, usize)>,
    claude_stats: BTreeMap<String, u64>,
    claude_problems: Vec<String>,
    daemon_stop: Option<String>,
    cpu: f64,
}

impl Report<'_> {
    /// Prints the summary; true when every loss figure is 0 and the run ended cleanly.
    fn print(&self) -> bool {
        let mut out = String::new();
        macro_rules! say {
            () => {
                out.push('\n')
            };
            ($($arg:tt)*) => {{
                let _ = writeln!(out, $($arg)*);
            }};
        }
        let s = self.soak;
        let a = &s.args;
        let runs = lock(&s.runs);
        let forced = lock(&s.forced);
        let kills = lock(&s.kills);
        let losses = lock(&s.losses);
        let w = lock(&s.watch);
        let auth = lock(&s.auth_failures);
        let st = &self.stats;
        let secs = self.load_end.as_secs_f64();
        let lifetimes = secs / a.lifetime as f64;
        let per_lifetime = st.token_requests as f64 / lifetimes;
        // The daemon alone, no faults: one refresh each (lifetime - margin - mean jitter).
        let margin = (a.refresh_before as f64).min(a.lifetime as f64 / 2.0);
        let ideal = a.lifetime as f64 / (a.lifetime as f64 - margin * 1.05);
        let unparseable = w.unparseable + w.missing;
        let stale_locks = self.leftovers.lock_dirs.len();
        let others = |m: &BTreeMap<i32, u64>| {
            if m.is_empty() {
                String::new()
            } else {
                let parts: Vec<String> = m.iter().map(|(c, n)| format!("exit {c}: {n}")).collect();
                format!(", other endings: {}", parts.join(", "))
            }
        };
        let lost_by_kill = losses.iter().filter(|l| l.lost_rotation).count();
        let auth_during_loss = auth
            .iter()
            .filter(|(t, _)| {
                losses.iter().any(|l| {
                    let from = l.presentations.first().copied().unwrap_or(l.at);
                    let to = l.relogin_at.unwrap_or(Duration::MAX) + Duration::from_secs(1);
                    *t + Duration::from_secs(a.lifetime) >= from && *t <= to
                })
            })
            .count();

        say!();
        say!(
            "tokenkeeper soak: {:.0} s of load ({} s with chaos, then {:.0} s settling); {} loops of `exec --min-ttl {}{} -- {}`, {} Claude-like; tokens live {} s, daemon refresh_before {} s, faults {:.0}%; {}",
            secs,
            a.seconds,
            secs - self.chaos_end.as_secs_f64(),
            a.clients,
            a.exec_min_ttl,
            if a.retry_auth > 0 {
                format!(" --retry-auth {}", a.retry_auth)
            } else {
                String::new()
            },
            if a.client_claude {
                "claude_like --once"
            } else {
                "fake_claude"
            },
            a.claude_likes,
            a.lifetime,
            a.refresh_before,
            a.fault_rate * 100.0,
            if !a.chaos {
                "no chaos".to_string()
            } else {
                format!(
                    "{}, {}",
                    if a.target_refresh > 0.0 {
                        format!(
                            "SIGKILL every 0.5-2 s, {:.0}% of them aimed into a refresh",
                            a.target_refresh * 100.0
                        )
                    } else {
                        "SIGKILL of a random tokenkeeper process every 0.5-2 s".to_string()
                    },
                    if a.kill_in_round_trip {
                        "token round trips included"
                    } else {
                        "sparing token round trips"
                    }
                )
            }
        );
        say!(
            "  runs                         {} (ok {}, killed by chaos {}{})",
            runs.total,
            runs.ok,
            runs.killed,
            others(&runs.other)
        );
        say!(
            "  runs failed by auth          {}{}",
            runs.auth_failed,
            if auth_during_loss > 0 {
                format!(" ({auth_during_loss} while a lost login was being replaced)")
            } else {
                String::new()
            }
        );
        say!(
            "  token requests               {} (granted {}, faults served {}; {} by `refresh --force` runs)",
            st.token_requests,
            st.refreshes_ok,
            st.faults_served,
            forced.total
        );
        let unforced = st.token_requests.saturating_sub(forced.total) as f64 / lifetimes;
        say!(
            "  requests per token lifetime  {per_lifetime:.2} ({unforced:.2} without the `refresh --force` runs; ideal for the daemon alone without faults: {ideal:.2})"
        );
        say!(
            "  reused refresh tokens        {}",
            self.end_stats.reused_refresh_tokens
        );
        say!(
            "  revoked families             {}{}",
            self.end_stats.revoked_families,
            if losses.is_empty() {
                String::new()
            } else {
                format!(
                    " ({lost_by_kill} lost login(s) whose newest tokens never reached the file: {})",
                    if a.kill_in_round_trip {
                        "SIGKILL inside a token request's round trip, which no client can prevent"
                    } else {
                        "SIGKILL between rotation and save"
                    }
                )
            }
        );
        if a.chaos {
            let posters = lock(&s.posters);
            let windows: Vec<LossWindow> = losses
                .iter()
                .filter(|l| l.lost_rotation)
                .map(|l| l.window(&posters))
                .collect();
            let after: Vec<Duration> = windows
                .iter()
                .filter_map(|w| match w {
                    LossWindow::AfterReply(d) => Some(*d),
                    _ => None,
                })
                .collect();
            let in_flight = windows
                .iter()
                .filter(|w| **w == LossWindow::InFlight)
                .count();
            let unexplained = windows.len() - after.len() - in_flight;
            let hits = kills.iter().filter(|k| !k.missed).count();
            say!(
                "  logins lost to SIGKILL       {} of {hits} kills of a live process: {in_flight} with the token request in flight, {} after the reply was sent{}{}",
                windows.len(),
                after.len(),
                if after.is_empty() {
                    String::new()
                } else {
                    let ms: Vec<String> = after
                        .iter()
                        .map(|d| format!("{:.1}", d.as_secs_f64() * 1000.0))
                        .collect();
                    format!(" (killed {} ms after it)", ms.join(", "))
                },
                if unexplained > 0 {
                    format!(", {unexplained} with no killed poster")
                } else {
                    String::new()
                }
            );
        }
        say!(
            "  unparseable files seen       {unparseable} (of {} reads{})",
            w.reads,
            if w.missing > 0 {
                format!(", {} of them: file missing", w.missing)
            } else {
                String::new()
            }
        );
        say!(
            "  login expired on disk        {} time(s) for 3 s or more (longest {:.1} s)",
            w.stalls,
            w.longest_expired.as_secs_f64()
        );
        say!(
            "  stale locks left             {stale_locks}{}",
            if stale_locks > 0 {
                format!(" ({})", self.leftovers.lock_dirs.join(", "))
            } else {
                String::new()
            }
        );
        say!(
            "  secrets found in logs        {} (scanned {} outputs and {} state files)",
            self.secrets.found.len(),
            self.secrets.outputs,
            self.secrets.files
        );

        say!("details");
        let by_kind = |k: Kind| kills.iter().filter(|x| x.kind == k).count();
        let by_phase = |p: Phase| kills.iter().filter(|x| x.phase == p).count();
        let missed = kills.iter().filter(|k| k.missed).count();
        say!(
            "  chaos: {} SIGKILLs{} (exec {}, daemon {}, refresh --force {}); {} in a refresh holding Claude's lock, {} holding only tokenkeeper's, {} not refreshing",
            kills.len(),
            if missed > 0 {
                format!(", {missed} of them too late: the process was already exiting")
            } else {
                String::new()
            },
            by_kind(Kind::Exec),
            by_kind(Kind::Daemon),
            by_kind(Kind::Refresh),
            by_phase(Phase::ClaudeLock),
            by_phase(Phase::OwnLock),
            by_phase(Phase::Idle)
        );
        if a.chaos && !a.kill_in_round_trip {
            let held: Vec<Duration> = kills
                .iter()
                .map(|k| k.held_back)
                .filter(|d| *d > Duration::from_millis(1))
                .collect();
            say!(
                "  chaos gate: {} of {} kills held back for a token request's round trip (longest {:.0} ms)",
                held.len(),
                kills.len(),
                held.iter().max().copied().unwrap_or_default().as_secs_f64() * 1000.0
            );
        }
        say!(
            "  daemon: started {} times{}",
            s.daemon_starts.load(Ordering::SeqCst),
            self.daemon_stop
                .as_ref()
                .map_or(String::from(", stopped cleanly by SIGTERM"), |p| format!(
                    "; {p}"
                ))
        );
        for e in lock(&s.daemon_exits).iter() {
            say!("    {e}");
        }
        say!(
            "  refresh --force runs: {} (ok {}, failed by auth {}, killed {}{})",
            forced.total,
            forced.ok,
            forced.auth_failed,
            forced.killed,
            others(&forced.other)
        );
        if let Some((median, p90, max, total, n)) = self.window {
            let exposed = total / 1000.0 / secs * 100.0;
            say!(
                "  rotation-to-save window (token request received -> new token seen in the file), {n} rotations: median {median:.1} ms, p90 {p90:.1} ms, max {max:.1} ms; {exposed:.2}% of the time a rotated token existed only in a process"
            );
        }
        say!(
            "  file: expired access token seen in {} of {} reads ({:.1} s in all, longest {:.1} s; {} stall(s) of 3 s or more, see logs/stall-*.txt)",
            w.expired_reads,
            w.reads,
            w.expired_time.as_secs_f64(),
            w.longest_expired.as_secs_f64(),
            w.stalls
        );
        if !self.leftovers.others.is_empty() {
            say!("  other leftovers: {}", self.leftovers.others.join(", "));
        }
        let final_line = match &self.final_run {
            Ok((code, signal)) => format!(
                "exit {code:?}{} in {:.2} s; the file's access token is {}",
                signal.map_or(String::new(), |s| format!(" (signal {s})")),
                self.final_took.as_secs_f64(),
                if self.final_live { "live" } else { "NOT live" }
            ),
            Err(e) => format!("could not run: {e}"),
        };
        say!("  final refresh --force: {final_line}");
        let c = &self.claude_stats;
        let g = |k: &str| c.get(k).copied().unwrap_or(0);
        say!(
            "  claude-like: {} API calls ok; 401s {} (recovered {}, unrecovered {}); refreshes due {}, token requests {}, refreshed {}, adopted {} (under lock {}, while waiting {}), lock waits {}, gave up {}, takeovers {}, transient {}, rejected {}, wiped {}, tokens dropped {}",
            g("api_ok"),
            g("api_401_file_had_newer_token") + g("api_401_refresh"),
            g("api_401_recovered"),
            g("api_401_unrecovered"),
            g("refresh_due"),
            g("token_requests"),
            g("refreshed"),
            g("refresh_adopted_under_lock") + g("refresh_adopted_while_waiting"),
            g("refresh_adopted_under_lock"),
            g("refresh_adopted_while_waiting"),
            g("lock_busy_waits"),
            g("lock_busy_gave_up"),
            g("takeovers_of_dead_holder"),
            g("refresh_transient"),
            g("refresh_rejected"),
            g("login_wiped_after_rejection"),
            g("refreshed_but_file_changed_tokens_dropped")
                + g("refreshed_but_save_failed_tokens_dropped")
                + g("refreshed_but_storage_lock_timeout_tokens_dropped")
        );
        for p in &self.claude_problems {
            say!("    {p}");
        }
        say!(
            "  stand-in: API {} ok, {} unauthorized; unknown refresh tokens {}",
            st.api_ok,
            st.api_unauthorized,
            st.unknown_refresh_tokens
        );
        say!(
            "  cpu: {:.1} s user+sys for {:.0} s ({:.2} cores on average)",
            self.cpu,
            secs + 3.0,
            self.cpu / (secs + 3.0)
        );
        let mut groups: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, g) in auth.iter() {
            *groups.entry(g.as_str()).or_default() += 1;
        }
        for (g, n) in groups.iter().take(8) {
            say!("  auth failure x{n}: {g}");
        }
        if let Some((t, _)) = auth.first() {
            let times: Vec<String> = auth
                .iter()
                .take(12)
                .map(|(t, _)| format!("{:.2}", t.as_secs_f64()))
                .collect();
            say!(
                "  auth failures at (s): {}{} (first at {:.2})",
                times.join(", "),
                if auth.len() > 12 { ", ..." } else { "" },
                t.as_secs_f64()
            );
        }
        for (msg, n) in lock(&s.other_failures).iter().take(10) {
            say!("  other failure x{n}: {msg}");
        }
        for l in losses.iter() {
            say!(
                "  LOST LOGIN detected at {:.3} s: {}; latest refresh token {} {}, file held {}",
                l.at.as_secs_f64(),
                match (l.lost_rotation, a.kill_in_round_trip) {
                    (true, true) => {
                        "a SIGKILL inside the token request's round trip (--kill-in-round-trip): the server rotated the login, its reply died with the killed process; no client can prevent this"
                    }
                    (true, false) => {
                        "the server rotated the login but its newest tokens never reached the file"
                    }
                    (false, _) => {
                        "an old refresh token was presented although the newest one had been saved"
                    }
                },
                l.latest_fp,
                if l.lost_rotation {
                    "(never seen in the file)"
                } else {
                    "(seen in the file)"
                },
                l.file_fp
            );
            let asked: Vec<String> = l
                .presentations
                .iter()
                .map(|t| format!("{:.3}", t.as_secs_f64()))
                .collect();
            say!(
                "    the file's refresh token {} was posted at (s): {}",
                l.file_fp,
                asked.join(", ")
            );
            for p in lock(&s.posters)
                .iter()
                .filter(|p| p.posted.contains(&l.file_fp))
            {
                // When it was killed, from the arrival of the request it sent (the presentation
                // during its run nearest the kill): around 0 is the round trip's moment.
                let killed_after = l
                    .kills
                    .iter()
                    .find(|k| k.pid == p.pid && p.killed)
                    .and_then(|k| {
                        let end = p.ended + Duration::from_millis(5);
                        let asked = l
                            .presentations
                            .iter()
                            .filter(|t| **t >= p.started && **t <= end)
                            .min_by_key(|t| t.abs_diff(k.at))?;
                        Some(k.at.as_secs_f64() - asked.as_secs_f64())
                    });
                say!(
                    "    {} pid {} (ran {:.3}-{:.3} s{}) posted {}{}",
                    p.kind.name(),
                    p.pid,
                    p.started.as_secs_f64(),
                    p.ended.as_secs_f64(),
                    if p.killed { ", SIGKILLed" } else { "" },
                    l.file_fp,
                    killed_after.map_or(String::new(), |d| if d >= 0.0 {
                        format!(
                            "; killed {:.1} ms after its token request reached the server",
                            d * 1000.0
                        )
                    } else {
                        format!(
                            "; killed {:.1} ms before the server had read its token request",
                            -d * 1000.0
                        )
                    })
                );
            }
            for k in &l.kills {
                say!(
                    "    {:.3} s: SIGKILL {} pid {} ({})",
                    k.at.as_secs_f64(),
                    k.kind.name(),
                    k.pid,
                    k.phase.name()
                );
            }
            if let Some(r) = l.relogin_at {
                say!("    {:.3} s: logged in again (new family)", r.as_secs_f64());
            }
        }
        for f in self.secrets.found.iter().take(10) {
            say!("  SECRET: {f}");
        }

        let mut failed = Vec::new();
        let mut check = |bad: bool, what: &str| {
            if bad {
                failed.push(what.to_string());
            }
        };
        check(runs.auth_failed > 0, "runs failed by auth");
        check(
            self.end_stats.reused_refresh_tokens > 0,
            "reused refresh tokens",
        );
        check(self.end_stats.revoked_families > 0, "revoked families");
        check(unparseable > 0, "unparseable files");
        check(w.stalls > 0, "login expired on disk for 3 s or more");
        check(stale_locks > 0, "stale locks");
        check(!self.secrets.found.is_empty(), "secrets in logs");
        check(!self.final_ok, "final refresh --force");
        check(!self.final_live, "final login not live");
        check(self.daemon_stop.is_some(), "daemon did not end cleanly");
        check(!self.claude_problems.is_empty(), "claude-like processes");
        if failed.is_empty() {
            say!("result: PASS");
        } else {
            say!("result: FAIL ({})", failed.join(", "));
        }
        print!("{out}");
        let _ = fs::write(s.paths.logs.join("summary.txt"), &out);
        failed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_kill_before_the_reply_is_in_flight_after_it_is_the_clients_window() {
        assert_eq!(
            loss_window(Some(ms(100)), Some(ms(150))),
            LossWindow::InFlight
        );
        assert_eq!(loss_window(Some(ms(100)), None), LossWindow::InFlight);
        assert_eq!(
            loss_window(Some(ms(153)), Some(ms(150))),
            LossWindow::AfterReply(ms(3))
        );
        assert_eq!(loss_window(None, Some(ms(150))), LossWindow::Unexplained);
    }

    #[test]
    fn the_killed_posters_request_nearest_the_kill_decides() {
        let kill = |pid, at| Kill {
            at: ms(at),
            pid,
            kind: Kind::Exec,
            phase: Phase::ClaudeLock,
            missed: false,
            held_back: Duration::ZERO,
        };
        let loss = Loss {
            at: ms(900),
            lost_rotation: true,
            latest_fp: "new".into(),
            file_fp: "old".into(),
            kills: vec![kill(7, 300), kill(8, 520)],
            // A 500 at 100 ms to pid 7's first try, its retry at 290 ms (answered at 310 ms),
            // then pid 9 presenting the spent token at 800 ms.
            presentations: vec![ms(100), ms(290), ms(800)],
            answered: vec![Some(ms(101)), Some(ms(310)), Some(ms(801))],
            relogin_at: None,
        };
        let poster = |pid, killed, started, ended| Poster {
            pid,
            kind: Kind::Exec,
            started: ms(started),
            ended: ms(ended),
            killed,
            posted: vec!["old".into()],
        };
        // pid 7 was killed at 300 ms, before the reply to its retry went out at 310 ms.
        let posters = [poster(7, true, 50, 300), poster(9, false, 790, 850)];
        assert_eq!(loss.window(&posters), LossWindow::InFlight);
        // Killed at 320 ms instead: 10 ms after the reply.
        let late = Loss {
            kills: vec![kill(7, 320)],
            ..loss
        };
        let posters = [poster(7, true, 50, 320), poster(9, false, 790, 850)];
        assert_eq!(late.window(&posters), LossWindow::AfterReply(ms(10)));
        // Nobody who posted it was killed.
        assert_eq!(
            late.window(&[poster(9, false, 790, 850)]),
            LossWindow::Unexplained
        );
    }
}
