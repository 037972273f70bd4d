//! A login in the macOS Keychain: a generic password with a service and an account (Claude
//! Code's: `provider/claude.rs` names them). We read and write it the way Claude Code does, through
//! the `security` program, so that the item keeps the access rules Claude's own writes give it
//! (a native write would tie the item to tokenkeeper and make macOS ask Claude for a password):
//!
//! - read: `security find-generic-password -a ACCOUNT -s SERVICE -w` (exit 44: no such item,
//!   36: the keychain is locked and nobody can be asked, as over SSH or in a daemon);
//! - write: `security -i`, with `add-generic-password -U -a ACCOUNT -s SERVICE -X <hex>` on its
//!   stdin, never in argv, where any process on the machine could read it. The write is then
//!   read back and compared, since `security -i` does not reliably report a failed command.
//!
//! Nothing here is macOS-only at build time: the store talks to a program, which the tests
//! replace with a fake placed first on `PATH` (`tests/support/fake_security.rs`).

use crate::error::Error;
use crate::storage::place::{Held, Place};
use crate::storage::place::{Snapshot, WriteGuard};
use serde_json::Value;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Where macOS keeps the program, used when `PATH` has none.
pub const DEFAULT_PROGRAM: &str = "/usr/bin/security";
/// `security -i` reads each command line into a 4096-byte buffer and runs whatever spills over
/// as further commands: the item would be written cut off, and the rest of the secret echoed on
/// stderr. Lines longer than this (newline included) are refused, with a margin.
pub const MAX_COMMAND_LINE: usize = 4000;
/// A locked keychain in a desktop session may show a dialog and wait for it; give up after this.
const TIMEOUT: Duration = Duration::from_secs(20);
/// `security` exits with the low byte of the OSStatus: errSecItemNotFound (-25300).
const EXIT_NOT_FOUND: i32 = 44;
/// errSecInteractionNotAllowed (-25308): locked, and no one can be asked to unlock it.
const EXIT_LOCKED: i32 = 36;

const UNLOCK_HINT: &str = "Unlock it with `security unlock-keychain` (over SSH and in a daemon \
    it stays locked until you do), or set `store = \"file\"` in [claude] to use the file alone";

/// One Keychain item, reached through the `security` program.
#[derive(Clone, Debug)]
pub struct Keychain {
    program: PathBuf,
    service: String,
    account: String,
}

/// Why the Keychain could not be used. No variant holds anything `security` printed on stdout
/// (the secret) or, for writes, on stderr (which echoes the command, hex and all).
#[derive(Debug)]
pub enum KeychainError {
    /// No such item (exit 44).
    NotFound,
    /// The keychain is locked and nobody can be asked (exit 36).
    Locked,
    /// The program could not be started.
    NotRunnable { program: PathBuf, source: io::Error },
    /// No answer in time (a dialog waiting for a person, say).
    TimedOut(Duration),
    /// Another exit: its code, and for reads the first line of stderr.
    Failed { code: Option<i32>, detail: String },
    /// The write would not fit on one `security -i` command line.
    TooLarge { line: usize },
    /// The account or service holds a character `security -i` cannot take inside quotes.
    Unquotable(String),
    /// `security` said it wrote the item, but reading it back gave something else.
    NotKept,
}

impl std::fmt::Display for KeychainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeychainError::NotFound => write!(f, "no such item (security exited 44)"),
            KeychainError::Locked => write!(f, "the keychain is locked (security exited 36)"),
            KeychainError::NotRunnable { program, source } => {
                write!(f, "cannot run {}: {source}", program.display())
            }
            KeychainError::TimedOut(d) => write!(
                f,
                "security did not answer within {} (is a Keychain dialog waiting for an answer?)",
                crate::duration::human(*d)
            ),
            KeychainError::Failed { code, detail } => {
                match code {
                    Some(c) => write!(f, "security exited {c}")?,
                    None => write!(f, "security was killed by a signal")?,
                }
                if !detail.is_empty() {
                    write!(f, " ({detail})")?;
                }
                Ok(())
            }
            KeychainError::TooLarge { line } => write!(
                f,
                "the login is too large to write through `security -i` ({line} bytes of command \
                 line, at most {MAX_COMMAND_LINE}); tokenkeeper never passes it in argv, where \
                 other processes could read it"
            ),
            KeychainError::Unquotable(what) => write!(
                f,
                "the {what} holds a quote, backslash or line break, which `security -i` cannot take"
            ),
            KeychainError::NotKept => write!(
                f,
                "security reported success, but the item read back differs from what was written"
            ),
        }
    }
}

impl Keychain {
    pub fn new(
        program: impl Into<PathBuf>,
        service: impl Into<String>,
        account: impl Into<String>,
    ) -> Keychain {
        Keychain {
            program: program.into(),
            service: service.into(),
            account: account.into(),
        }
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The item's bytes.
    pub fn find(&self) -> Result<Vec<u8>, KeychainError> {
        let ran = run(
            &self.program,
            &[
                "find-generic-password",
                "-a",
                &self.account,
                "-s",
                &self.service,
                "-w",
            ],
            None,
            TIMEOUT,
        )?;
        match ran.code {
            Some(0) => Ok(decode_password(&ran.stdout)),
            Some(EXIT_NOT_FOUND) => Err(KeychainError::NotFound),
            Some(EXIT_LOCKED) => Err(KeychainError::Locked),
            code => Err(KeychainError::Failed {
                code,
                detail: first_line(&ran.stderr),
            }),
        }
    }

    /// Creates or replaces the item with `bytes`, then reads it back to be sure.
    pub fn add(&self, bytes: &[u8]) -> Result<(), KeychainError> {
        let line = add_command(&self.account, &self.service, bytes)?;
        let ran = run(&self.program, &["-i"], Some(line.as_bytes()), TIMEOUT)?;
        match ran.code {
            Some(0) => {}
            Some(EXIT_LOCKED) => return Err(KeychainError::Locked),
            // Its output may repeat the command line, hex and all: never quoted.
            code => {
                return Err(KeychainError::Failed {
                    code,
                    detail: String::new(),
                });
            }
        }
        match self.find() {
            Ok(stored) if stored == bytes => Ok(()),
            Ok(_) | Err(KeychainError::NotFound) => Err(KeychainError::NotKept),
            Err(e) => Err(e),
        }
    }
}

impl Place for Keychain {
    fn load(&self) -> Result<Held, Error> {
        let bytes = match self.find() {
            Ok(bytes) => bytes,
            Err(KeychainError::NotFound) => return Ok(Held::Nothing),
            Err(KeychainError::Locked) => {
                return Ok(Held::Unreadable(Error::Keychain {
                    problem: format!(
                        "cannot read the Claude Code login in {}: the keychain is locked",
                        self.describe()
                    ),
                    hint: UNLOCK_HINT.into(),
                }));
            }
            Err(e @ KeychainError::NotRunnable { .. }) => {
                return Err(Error::Keychain {
                    problem: format!("cannot read {}: {e}", self.describe()),
                    hint: "tokenkeeper reads Claude Code's login through macOS's `security` \
                           program (PATH, else /usr/bin/security); set `store = \"file\"` in \
                           [claude] to use the file alone"
                        .into(),
                });
            }
            Err(e) => {
                return Err(Error::Keychain {
                    problem: format!("cannot read {}: {e}", self.describe()),
                    hint: "Try again; if it persists, check the item in Keychain Access".into(),
                });
            }
        };
        let malformed = |problem: String| Error::Keychain {
            problem: format!(
                "the Claude Code login in {} {problem}; tokenkeeper changed nothing",
                self.describe()
            ),
            hint: "Log in again with `claude /login`".into(),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(malformed("is empty".into()));
        }
        let doc: Value = serde_json::from_slice(&bytes).map_err(|e| {
            malformed(format!(
                "is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        Ok(Held::Login(Snapshot {
            doc,
            loose_mode: None,
        }))
    }

    /// Compact JSON, as Claude Code writes it.
    fn save(&self, doc: &Value, _guard: &WriteGuard<'_>) -> io::Result<()> {
        let bytes = serde_json::to_vec(doc).map_err(io::Error::other)?;
        self.add(&bytes)
            .map_err(|e| io::Error::other(format!("cannot write {}: {e}", self.describe())))
    }

    fn describe(&self) -> String {
        format!(
            "the login Keychain (service \"{}\", account \"{}\")",
            self.service, self.account
        )
    }
}

/// The account a Keychain item of this user is filed under: `$USER`, else the name the user
/// database gives this process's user.
pub fn user_name(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    env("USER").filter(|u| !u.is_empty()).or_else(login_name)
}

/// The first `security` among `PATH`'s absolute folders, else [`DEFAULT_PROGRAM`].
pub fn find_program(path_var: Option<&str>) -> PathBuf {
    path_var
        .unwrap_or("")
        .split(':')
        .map(Path::new)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join("security"))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && executable(&m)))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PROGRAM))
}

#[cfg(unix)]
fn executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn executable(_meta: &std::fs::Metadata) -> bool {
    true
}

/// Lowercase hex, as `-X` takes it.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// The bytes of an even-length string of hex digits (either case); None for anything else.
pub fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    text.chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// What `find-generic-password -w` printed, less its newline. `security` prints the password as
/// it is when every byte is printable ASCII, else as hex (any non-ASCII character in the JSON
/// does that); a JSON document starts with `{`, never with a hex digit, so the two cannot be
/// confused.
pub fn decode_password(stdout: &[u8]) -> Vec<u8> {
    let text = stdout.strip_suffix(b"\n").unwrap_or(stdout);
    match unhex(text) {
        Some(bytes) if !text.is_empty() => bytes,
        _ => text.to_vec(),
    }
}

/// The line `security -i` gets on stdin: `add-generic-password -U -a "ACCOUNT" -s "SERVICE" -X
/// "HEX"`. Refused when it would not fit in `security`'s line buffer, or when the account or
/// service holds a character that would end the quotes.
pub fn add_command(account: &str, service: &str, bytes: &[u8]) -> Result<String, KeychainError> {
    for (what, value) in [("account", account), ("service", service)] {
        if value.contains(['"', '\\', '\n', '\r', '\0']) {
            return Err(KeychainError::Unquotable(format!("{what} name")));
        }
    }
    let line = format!(
        "add-generic-password -U -a \"{account}\" -s \"{service}\" -X \"{}\"\n",
        hex(bytes)
    );
    if line.len() > MAX_COMMAND_LINE {
        return Err(KeychainError::TooLarge { line: line.len() });
    }
    Ok(line)
}

/// The name of the user this process runs as, from the user database.
#[cfg(not(unix))]
fn login_name() -> Option<String> {
    None
}

/// The name of the user this process runs as, from the user database.
#[cfg(unix)]
fn login_name() -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: zeroed passwd is a valid out-parameter; getpwuid_r writes strings into `buf`,
    // which outlives every use of the pointers it stores in `pwd`.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            libc::geteuid(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr(pwd.pw_name).to_string_lossy();
        (!name.is_empty()).then(|| name.into_owned())
    }
}

/// The first line of what a read printed on stderr, printable and short (a read's stderr never
/// holds the password: that goes to stdout).
fn first_line(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect::<String>()
        .trim()
        .to_string()
}

struct Ran {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs `program args`, feeding `input` on stdin, and collects its output; killed after
/// `timeout`.
fn run(
    program: &Path,
    args: &[&str],
    input: Option<&[u8]>,
    timeout: Duration,
) -> Result<Ran, KeychainError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| KeychainError::NotRunnable {
            program: program.to_path_buf(),
            source,
        })?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    if let (Some(mut stdin), Some(bytes)) = (child.stdin.take(), input) {
        // A program that exits without reading shows up in its exit status, not here.
        let _ = stdin.write_all(bytes);
    }
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(KeychainError::TimedOut(timeout));
            }
            Ok(None) => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(source) => {
                return Err(KeychainError::NotRunnable {
                    program: program.to_path_buf(),
                    source,
                });
            }
        }
    };
    Ok(Ran {
        code: status.code(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const SERVICE: &str = "Claude Code-credentials";

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex() {
        let bytes = "{\"k\":\"é\\n\"}\u{0}\u{ff}".as_bytes();
        assert_eq!(hex(b"{\xe9"), "7be9");
        assert_eq!(unhex(hex(bytes).as_bytes()).unwrap(), bytes);
        assert_eq!(unhex(b"7BE9").unwrap(), b"{\xe9");
        assert_eq!(unhex(b"7be"), None);
        assert_eq!(unhex(b"7g"), None);
        assert_eq!(unhex(b"").unwrap(), b"");
    }

    #[test]
    fn a_password_printed_as_text_or_as_hex_decodes_to_the_same_bytes() {
        let json = "{\"a\":\"café\"}".as_bytes();
        assert_eq!(decode_password(b"{\"a\":1}\n"), b"{\"a\":1}");
        assert_eq!(decode_password(format!("{}\n", hex(json)).as_bytes()), json);
        assert_eq!(decode_password(b"{\"a\":1}"), b"{\"a\":1}");
        assert_eq!(decode_password(b"\n"), b"");
        assert_eq!(decode_password(b"xyz\n"), b"xyz");
    }

    #[test]
    fn the_add_command_quotes_names_and_carries_the_secret_as_hex() {
        let line = add_command("me", SERVICE, b"{\"t\":\"s3cret\"}").unwrap();
        assert_eq!(
            line,
            format!(
                "add-generic-password -U -a \"me\" -s \"Claude Code-credentials\" -X \"{}\"\n",
                hex(b"{\"t\":\"s3cret\"}")
            )
        );
        assert!(!line.contains("s3cret"));
        assert!(matches!(
            add_command("m\"e", SERVICE, b"{}"),
            Err(KeychainError::Unquotable(_))
        ));
        assert!(matches!(
            add_command("me", "a\nb", b"{}"),
            Err(KeychainError::Unquotable(_))
        ));
        let empty = add_command("me", SERVICE, b"").unwrap().len();
        let fits = (MAX_COMMAND_LINE - empty) / 2;
        assert!(add_command("me", SERVICE, &vec![b'x'; fits]).is_ok());
        let err = add_command("me", SERVICE, &vec![b'x'; fits + 1]).unwrap_err();
        assert!(
            matches!(err, KeychainError::TooLarge { line } if line == empty + 2 * fits + 2),
            "{err}"
        );
    }

    #[test]
    fn security_is_found_on_path_else_in_usr_bin() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let program = bin.join("security");
        std::fs::write(&program, "#!/bin/sh\n").unwrap();
        let path = format!("relative:/nonexistent-tk:{}", bin.display());
        // Not executable: skipped.
        assert_eq!(find_program(Some(&path)), PathBuf::from(DEFAULT_PROGRAM));
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_program(Some(&path)), program);
        assert_eq!(find_program(None), PathBuf::from(DEFAULT_PROGRAM));
    }

    #[test]
    fn a_program_that_does_not_answer_is_killed_after_the_timeout() {
        let started = Instant::now();
        let err = run(
            Path::new("/bin/sleep"),
            &["10"],
            None,
            Duration::from_millis(200),
        )
        .err()
        .unwrap();
        assert!(matches!(err, KeychainError::TimedOut(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let err = Keychain::new("/nonexistent-tk/security", SERVICE, "me")
            .find()
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot run /nonexistent-tk/security:"),
            "{err}"
        );
    }

    #[test]
    fn the_account_comes_from_user_else_the_user_database() {
        let with_user = |k: &str| (k == "USER").then(|| "alice".to_string());
        assert_eq!(user_name(&with_user).as_deref(), Some("alice"));
        let empty = |k: &str| (k == "USER").then(String::new);
        assert!(!user_name(&empty).unwrap().is_empty());
        assert!(!user_name(&|_| None).unwrap().is_empty());
    }
}
