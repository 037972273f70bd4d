//! What an adversarial pass broke (issue 11), one test per attack: each fails on the code before
//! its fix.

use crate::util::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, SystemTime};

const LOCK_TIMEOUT_CONFIG: &str = "[claude]\nlock_timeout = \"2s\"\nretry_total = \"3s\"\n";

/// Something at a lock's path that no process holds and that tokenkeeper cannot remove.
#[derive(Clone, Copy, Debug)]
enum Blocker {
    RegularFile,
    NonEmptyFolder,
}

fn block(path: &Path, blocker: Blocker) {
    match blocker {
        Blocker::RegularFile => fs::write(path, "not a lock").unwrap(),
        Blocker::NonEmptyFolder => {
            fs::create_dir(path).unwrap();
            fs::write(path.join("keep"), "x").unwrap();
        }
    }
    // Older than any stale time: it looks abandoned, so the old loop tried to remove it at once,
    // failed, and tried again without a pause.
    let old = SystemTime::now() - Duration::from_secs(300);
    fs::File::open(path).unwrap().set_modified(old).unwrap();
}

/// Claude Code's three lock paths: the refresh lock, its legacy companion, the storage lock.
fn lock_paths(s: &Sandbox) -> [PathBuf; 3] {
    [
        s.home().join(".claude/.oauth_refresh.lock"),
        s.home().join(".claude.lock"),
        s.home().join(".claude/.storage-write.lock"),
    ]
}

/// Every lock wait ends: at the lock timeout, with a message that names the path and the command
/// that clears it, a log that says so once instead of flooding, and the login kept (untouched
/// before the token request; in the recovery file after it).
#[test]
fn a_lock_that_cannot_be_removed_ends_the_wait_at_the_lock_timeout() {
    let cases: Vec<(usize, Blocker)> = (0..3)
        .flat_map(|i| [(i, Blocker::RegularFile), (i, Blocker::NonEmptyFolder)])
        .collect();
    thread::scope(|scope| {
        for (which, blocker) in cases {
            scope.spawn(move || {
                let s = Sandbox::new();
                let login = s.login(-1000);
                s.config(LOCK_TIMEOUT_CONFIG);
                let before = s.read_creds();
                let lock = lock_paths(&s)[which].clone();
                block(&lock, blocker);
                let run = run_within(&mut s.cmd(&["-v", "refresh"]), Duration::from_secs(30));
                s.assert_no_leak(&run, false);
                let case = format!("{blocker:?} at {}", lock.display());
                let last = run.stderr.lines().last().unwrap_or("");
                assert!(
                    last.contains(&lock.display().to_string()) && last.contains("rm "),
                    "{case}: the message names neither the path nor the fix: {run:?}"
                );
                assert!(
                    run.stderr.lines().count() < 15,
                    "{case}: the log repeats itself: {} lines",
                    run.stderr.lines().count()
                );
                let naming = run
                    .stderr
                    .lines()
                    .filter(|l| l.contains(&lock.display().to_string()))
                    .count();
                assert!(
                    naming <= 2,
                    "{case}: the blockage is reported again and again: {run:?}"
                );
                assert!(lock.exists(), "{case}: the blocker is not ours to remove");
                if which == 2 {
                    // The storage lock is taken after the token request: the new tokens are in
                    // the recovery file, and the next run restores them once it is cleared.
                    assert_eq!(run.code, 74, "{case}: {run:?}");
                    assert_eq!(s.read_creds(), before, "{case}");
                    assert_eq!(files_under(&s.state_dir().join("recovery")).len(), 1);
                    if lock.is_dir() {
                        fs::remove_dir_all(&lock).unwrap();
                    } else {
                        fs::remove_file(&lock).unwrap();
                    }
                    let again = s.run(&["refresh"]);
                    assert_eq!(again.code, 0, "{case}: {again:?}");
                    assert!(again.stdout.starts_with("restored"), "{case}: {again:?}");
                    assert_eq!(s.server.stats().token_requests, 1, "{case}");
                } else {
                    assert_eq!(run.code, 75, "{case}: {run:?}");
                    assert_eq!(s.read_creds(), before, "{case}");
                    assert_eq!(s.server.stats().token_requests, 0, "{case}");
                    assert!(s.server.is_live_access(&login.access_token));
                }
            });
        }
    });
}

/// A shared credentials folder (sticky, writable by all, as a team's folder may be) where another
/// user left a stale lock: ours may not remove it, so the wait ends at the lock timeout with the
/// message that names it, and no other user can wedge us.
#[test]
fn another_users_stale_lock_in_a_shared_folder_ends_the_wait_at_the_lock_timeout() {
    if !is_root() {
        return; // needs a second user: the lock is root's, tokenkeeper runs as nobody
    }
    let s = Sandbox::new();
    let login = s.login(-1000);
    s.config(LOCK_TIMEOUT_CONFIG);
    let before = s.read_creds();
    give_to_nobody(s.dir.path());
    let shared = s.home().join(".claude");
    std::process::Command::new("chown")
        .arg("0:0")
        .arg(&shared)
        .status()
        .unwrap();
    set_mode(&shared, 0o1777);
    // Claude Code's lock as it leaves one, an empty folder, but root's and long abandoned.
    let lock = shared.join(".oauth_refresh.lock");
    fs::create_dir(&lock).unwrap();
    let old = SystemTime::now() - Duration::from_secs(300);
    fs::File::open(&lock).unwrap().set_modified(old).unwrap();

    let mut cmd = s.cmd(&["-v", "refresh"]);
    as_nobody(&mut cmd);
    let run = run_within(&mut cmd, Duration::from_secs(30));
    s.assert_no_leak(&run, false);
    assert_eq!(run.code, 75, "{run:?}");
    let last = run.stderr.lines().last().unwrap_or("");
    assert!(
        last.contains(&lock.display().to_string()) && last.contains("rm "),
        "the message names neither the path nor the fix: {run:?}"
    );
    assert!(run.stderr.lines().count() < 15, "{run:?}");
    assert!(lock.exists(), "another user's lock is not ours to remove");
    assert_eq!(s.read_creds(), before);
    assert_eq!(s.server.stats().token_requests, 0);
    assert!(s.server.is_live_access(&login.access_token));
}

/// SIGTERM while the save waits for a storage lock that never frees: the process stops at once
/// instead of ignoring the signal, and the new tokens it already received are in the recovery
/// file, from which the next run restores them.
#[test]
fn a_signal_during_a_blocked_save_stops_at_once_and_keeps_the_tokens() {
    let s = Sandbox::new();
    s.login(-1000);
    s.config("[claude]\nlock_timeout = \"60s\"\n");
    let lock = s.home().join(".claude/.storage-write.lock");
    block(&lock, Blocker::RegularFile);
    let child = s
        .cmd(&["refresh"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the new tokens", Duration::from_secs(10), || {
        s.server.stats().refreshes_ok == 1
    });
    thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let pid = child.id();
    let (done, result) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let out = match result.recv_timeout(Duration::from_secs(10)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: as above; the test must not leave it running.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("SIGTERM was ignored while the save waited for its lock");
        }
    };
    let run = Run::from(out);
    s.assert_no_leak(&run, false);
    assert_ne!(run.code, 0, "{run:?}");
    assert_eq!(
        files_under(&s.state_dir().join("recovery")).len(),
        1,
        "the new tokens are in the recovery file: {run:?}"
    );
    fs::remove_file(&lock).unwrap();
    let again = s.run(&["refresh"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.starts_with("restored"), "{again:?}");
    let v = s.creds_json();
    assert!(
        s.server
            .is_live_access(v["claudeAiOauth"]["accessToken"].as_str().unwrap())
    );
    assert_eq!(s.server.stats().token_requests, 1);
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// A FIFO or a device where the credentials or the config should be: refused at once with
/// exit 78 naming the file, never read forever, nothing changed.
#[test]
fn special_files_are_refused_at_once() {
    let s = Sandbox::new();
    mkfifo(&s.creds());
    for args in [&["status"][..], &["refresh"], &["token"]] {
        let run = run_within(&mut s.cmd(args), Duration::from_secs(20));
        assert_eq!(run.code, 78, "{args:?}: {run:?}");
        assert!(
            run.stderr.contains("FIFO") || run.stdout.contains("FIFO"),
            "{args:?}: {run:?}"
        );
    }
    fs::remove_file(s.creds()).unwrap();
    std::os::unix::fs::symlink("/dev/zero", s.creds()).unwrap();
    let run = run_within(&mut s.cmd(&["refresh"]), Duration::from_secs(20));
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stderr.contains("device"), "{run:?}");
    assert!(
        fs::symlink_metadata(s.creds())
            .unwrap()
            .file_type()
            .is_symlink()
    );

    let s = Sandbox::new();
    s.login(8 * 3_600_000);
    let fifo = s.dir.path().join("config.fifo");
    mkfifo(&fifo);
    for config in [fifo.as_path(), Path::new("/dev/zero")] {
        let config = config.to_str().unwrap();
        let run = run_within(
            &mut s.cmd(&["--config", config, "status"]),
            Duration::from_secs(20),
        );
        assert_eq!(run.code, 78, "{config}: {run:?}");
        assert!(run.stderr.contains(config), "{config}: {run:?}");
    }
}

/// A token URL that cannot carry a refresh token is a configuration error found at once (exit 78,
/// no request, nothing changed), not a network failure retried for a minute; plain http to
/// another machine is refused unless the config allows it.
#[test]
fn an_unusable_token_url_is_a_config_error_at_once() {
    let s = Sandbox::new();
    s.login(-1000);
    let before = s.read_creds();
    for url in [
        "",
        "ftp://auth.example.com/token",
        "file:///etc/passwd",
        "not a url",
        "http://auth.example.invalid/v1/oauth/token",
    ] {
        let run = run_within(
            s.cmd(&["refresh"]).env("TOKENKEEPER_TOKEN_URL", url),
            Duration::from_secs(10),
        );
        assert_eq!(run.code, 78, "{url:?}: {run:?}");
        assert!(run.stderr.contains("token URL"), "{url:?}: {run:?}");
        assert!(
            !run.stderr.contains("retrying"),
            "{url:?} was retried: {run:?}"
        );
    }
    assert_eq!(s.read_creds(), before);
    assert_eq!(s.server.stats().token_requests, 0);
    // Allowed in the config: the request is made (and fails: the host does not exist).
    s.config("[claude]\nallow_http = true\nretry_total = \"1s\"\n");
    let run = run_within(
        s.cmd(&["refresh"]).env(
            "TOKENKEEPER_TOKEN_URL",
            "http://auth.example.invalid/v1/oauth/token",
        ),
        Duration::from_secs(30),
    );
    assert_eq!(run.code, 69, "{run:?}");
}

/// Fixed-name files are traps another user can set in a folder they can write: our lock files
/// are never followed through a link (the target is neither truncated nor created), a state
/// folder made by another user is refused, and a config file anyone can write is warned about.
#[test]
fn fixed_name_files_are_never_followed_and_foreign_folders_are_refused() {
    let s = Sandbox::new();
    s.login(-1000);
    let before = s.read_creds();
    let victim = s.dir.path().join("victim");
    fs::write(&victim, "precious").unwrap();
    let own = s.home().join(".claude/.tokenkeeper.lock");
    std::os::unix::fs::symlink(&victim, &own).unwrap();
    let run = run_within(&mut s.cmd(&["refresh"]), Duration::from_secs(20));
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("symbolic link"), "{run:?}");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(s.read_creds(), before);
    fs::remove_file(&own).unwrap();

    let made_for_them = s.dir.path().join("made-for-them");
    let lease = s.home().join(".claude/.tokenkeeper-lease.lock");
    std::os::unix::fs::symlink(&made_for_them, &lease).unwrap();
    let run = run_within(&mut s.cmd(&["refresh"]), Duration::from_secs(20));
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        !made_for_them.exists(),
        "a dangling link's target was created"
    );
    assert_eq!(s.read_creds(), before);
    fs::remove_file(&lease).unwrap();
    assert_eq!(s.server.stats().token_requests, 0);

    let config = s.config("[claude]\nmin_ttl = \"1h\"\n");
    set_mode(&config, 0o666);
    let run = s.run(&["status"]);
    assert!(
        run.stderr.contains("can be written by every user") && run.stderr.contains("chmod"),
        "{run:?}"
    );
    set_mode(&config, 0o600);

    if is_root() {
        // A state folder another user made beforehand: refused, never written through.
        let state = s.state_dir();
        let _ = fs::remove_dir_all(&state);
        fs::create_dir_all(state.join("logins")).unwrap();
        std::process::Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(&state)
            .status()
            .unwrap();
        let run = run_within(&mut s.cmd(&["refresh"]), Duration::from_secs(20));
        assert!(
            run.stderr.contains("belongs to another user"),
            "the foreign state folder was used: {run:?}"
        );
        let written = files_under(&state);
        assert!(written.is_empty(), "written into: {written:?} {run:?}");
    }
}

/// A bad `--metrics` is the command line's fault (exit 2), not a config file's that may not
/// exist; `localhost:PORT` is an address.
#[test]
fn a_bad_metrics_flag_is_a_usage_error() {
    let s = Sandbox::new();
    s.login(8 * 3_600_000);
    let run = run_within(
        &mut s.cmd(&["daemon", "--metrics", "nine"]),
        Duration::from_secs(20),
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--metrics"), "{run:?}");
    assert!(!run.stderr.contains("config file"), "{run:?}");
}

/// Root keeping another user's login writes the new tokens in a file that is still that user's
/// (mode 0600), never one that root owns and the user can no longer read.
#[test]
fn a_rewritten_credentials_file_keeps_its_owner() {
    if !is_root() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let s = Sandbox::new();
    s.login(-1000);
    std::process::Command::new("chown")
        .arg("65534:65534")
        .arg(s.creds())
        .status()
        .unwrap();
    let run = s.run(&["refresh"]);
    assert_eq!(run.code, 0, "{run:?}");
    let meta = fs::metadata(s.creds()).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOBODY), "{run:?}");
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(s.server.stats().refreshes_ok, 1);
}

/// A user who may write another user's credentials folder but not own their file: refused
/// before the refresh token is spent, the file left as it was.
#[test]
fn another_users_credentials_are_refused_before_any_request() {
    if !is_root() {
        return;
    }
    let s = Sandbox::new();
    s.login(-1000);
    let before = s.read_creds();
    give_to_nobody(s.dir.path());
    // The file stays root's; everything else is nobody's.
    std::process::Command::new("chown")
        .arg("0:0")
        .arg(s.creds())
        .status()
        .unwrap();
    set_mode(&s.creds(), 0o666);
    let mut cmd = s.cmd(&["refresh"]);
    as_nobody(&mut cmd);
    let run = run_within(&mut cmd, Duration::from_secs(20));
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stderr.contains("another user"), "{run:?}");
    assert_eq!(s.server.stats().token_requests, 0);
    assert_eq!(s.read_creds(), before);
}

/// Both the credentials folder and the state folder unwritable while the request is in flight:
/// the new tokens are lost (exit 74 says so). The spent refresh token is remembered where it can
/// be, so `status` says the login is dead rather than expired, and no later run presents it.
#[test]
fn a_lost_login_is_dead_and_its_spent_token_is_never_posted_again() {
    if !is_root() {
        return; // needs a second user whose folders can be made unwritable for it
    }
    let s = Sandbox::new();
    s.login(-1000);
    let state_root = s.state_dir();
    fs::create_dir_all(&state_root).unwrap();
    let (child, folder) = refresh_losing_the_folder_mid_request(&s);
    // The state folder taken from the user: it can neither write there nor make it its own.
    std::process::Command::new("chown")
        .arg("0:0")
        .arg(&state_root)
        .status()
        .unwrap();
    let run = Run::from(child.wait_with_output().unwrap());
    set_mode(&folder, 0o755);
    assert_eq!(run.code, 74, "{run:?}");
    assert!(run.stderr.contains("the login is lost"), "{run:?}");
    s.assert_no_leak(&run, false);

    for args in [
        &["status"][..],
        &["refresh"],
        &["refresh", "--force"],
        &["exec", "--", "true"],
    ] {
        let mut cmd = s.cmd(args);
        as_nobody(&mut cmd);
        let run = run_within(&mut cmd, Duration::from_secs(20));
        assert_eq!(run.code, 77, "{args:?}: {run:?}");
        let out = format!("{}{}", run.stdout, run.stderr);
        assert!(out.contains("lost"), "{args:?}: {run:?}");
    }
    assert_eq!(
        s.server.stats().token_requests,
        1,
        "the spent refresh token was never presented again"
    );
    assert_eq!(s.server.stats().reused_refresh_tokens, 0);
}

/// The recovery file is made ready (folders checked, temp file open, 0600) before the token
/// request goes out, so that the rotated tokens are on disk one write after the reply: a kill
/// after the reply loses the login only within that write. A request that brings no tokens
/// leaves nothing behind.
#[test]
fn the_recovery_file_is_ready_before_the_token_request_is_answered() {
    use tokenkeeper_standin::Fault;
    let s = Sandbox::new();
    s.config("[claude]\nrequest_timeout = \"1s\"\nretry_total = \"1s\"\n");
    let recovery = s.state_dir().join("recovery");
    let temps = || -> Vec<PathBuf> {
        files_under(&recovery)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(".json.tmp."))
            .collect()
    };
    // Answered late with tokens; never answered (a transient failure, then no time is left).
    for (fault, code) in [
        (Fault::Delay(Duration::from_millis(800)), 0),
        (Fault::Hang(Duration::from_millis(800)), 69),
    ] {
        let login = s.login(-1000);
        s.server.push_fault(fault.clone());
        let before = s.server.requests().len();
        let child = s
            .cmd(&["refresh"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for("the request", Duration::from_secs(10), || {
            s.server.requests().len() > before
        });
        let ready = temps();
        assert_eq!(ready.len(), 1, "{fault:?}: one temp file ready: {ready:?}");
        let meta = fs::metadata(&ready[0]).unwrap();
        assert_eq!(meta.len(), 0, "{fault:?}: nothing written before the reply");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{fault:?}");
        let run = Run::from(child.wait_with_output().unwrap());
        assert_eq!(run.code, code, "{fault:?}: {run:?}");
        s.assert_no_leak(&run, false);
        assert_eq!(temps(), Vec::<PathBuf>::new(), "{fault:?}: {run:?}");
        let rotated = !s.read_creds().contains(&login.refresh_token);
        assert_eq!(rotated, code == 0, "{fault:?}");
    }
}
