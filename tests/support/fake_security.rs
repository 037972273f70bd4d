//! Plays macOS's `/usr/bin/security` for tokenkeeper's tests, placed first on `PATH`: keeps
//! generic passwords as files in `$FAKE_SECURITY_DIR/items/<service>@<account>` and answers the
//! way `security` does:
//!
//! - `find-generic-password -a ACCOUNT -s SERVICE [-w]`: with `-w` the password and a newline,
//!   as text when every byte is printable ASCII, else as hex (as `security` does); exit 44 when
//!   there is no such item;
//! - `-i`: commands read from stdin, one per line, into a 4096-byte buffer like `security`'s,
//!   so that an overlong line is cut and its tail run as a further command (and echoed on stderr
//!   as an unknown command); `add-generic-password [-U] -a ACCOUNT -s SERVICE -X HEX` (or `-w`).
//!
//! Test knobs, files in `$FAKE_SECURITY_DIR`: `locked` (every command exits 36, as for a locked
//! keychain nobody can unlock), `fail-writes` (adding exits 1), `ignore-writes` (adding exits 0
//! and stores nothing). Every invocation's argv is appended to `$FAKE_SECURITY_DIR/argv.log`, one
//! JSON array a line, so a test can prove that no secret was ever passed in argv.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `security -i` reads a command line into a buffer this large (less the terminating NUL).
const LINE_BUFFER: usize = 4096;
const NOT_FOUND: u8 = 44;
const LOCKED: u8 = 36;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = std::env::var_os("FAKE_SECURITY_DIR").map(PathBuf::from) else {
        eprintln!("fake security: FAKE_SECURITY_DIR is not set");
        return ExitCode::from(2);
    };
    let _ = fs::create_dir_all(dir.join("items"));
    if let Ok(mut log) = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("argv.log"))
    {
        let _ = writeln!(log, "{}", serde_json::json!(args));
    }
    let code = match args.first().map(String::as_str) {
        Some("-i") if args.len() == 1 => interactive(&dir),
        Some("find-generic-password") => find(&dir, &args[1..]),
        _ => {
            eprintln!("fake security: unsupported invocation {args:?}");
            2
        }
    };
    ExitCode::from(code)
}

fn find(dir: &Path, args: &[String]) -> u8 {
    let mut account = None;
    let mut service = None;
    let mut password_only = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-a" => account = it.next().cloned(),
            "-s" => service = it.next().cloned(),
            "-w" => password_only = true,
            other => {
                eprintln!("fake security: find-generic-password: unsupported option {other}");
                return 2;
            }
        }
    }
    let (Some(account), Some(service)) = (account, service) else {
        eprintln!("fake security: find-generic-password needs -a and -s");
        return 2;
    };
    if dir.join("locked").exists() {
        eprintln!("security: SecKeychainSearchCopyNext: User interaction is not allowed.");
        return LOCKED;
    }
    let Ok(bytes) = fs::read(item_path(dir, &service, &account)) else {
        eprintln!(
            "security: SecKeychainSearchCopyNext: The specified item could not be found in the keychain."
        );
        return NOT_FOUND;
    };
    let mut out = std::io::stdout();
    if password_only {
        if bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
            let _ = out.write_all(&bytes);
        } else {
            let _ = out.write_all(hex(&bytes).as_bytes());
        }
        let _ = out.write_all(b"\n");
    } else {
        let _ = writeln!(
            out,
            "keychain: \"fake\"\nclass: \"genp\"\nattributes:\n    \"acct\"<blob>=\"{account}\"\n    \"svce\"<blob>=\"{service}\""
        );
    }
    0
}

fn interactive(dir: &Path) -> u8 {
    let mut input = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut input);
    let mut status = 0;
    for line in buffered_lines(&input) {
        let words = split_words(&String::from_utf8_lossy(&line));
        let Some(command) = words.first() else {
            continue;
        };
        let code = match command.as_str() {
            "add-generic-password" => add(dir, &words[1..]),
            other => {
                eprintln!("security: unknown command \"{other}\"");
                1
            }
        };
        if code != 0 {
            status = code;
        }
    }
    status
}

/// Lines as `security -i` reads them: at most `LINE_BUFFER - 1` bytes at a time, so a longer
/// line becomes several.
fn buffered_lines(input: &[u8]) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    let mut current = Vec::new();
    for &b in input {
        current.push(b);
        if b == b'\n' || current.len() == LINE_BUFFER - 1 {
            lines.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
        .into_iter()
        .map(|mut l| {
            if l.last() == Some(&b'\n') {
                l.pop();
            }
            l
        })
        .collect()
}

/// Words separated by blanks; double quotes group, a backslash escapes the next character; an
/// unclosed quote runs to the end of the line.
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' => {
                if let Some(n) = chars.next() {
                    word.push(n);
                }
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

fn add(dir: &Path, args: &[String]) -> u8 {
    let mut account = None;
    let mut service = None;
    let mut data = None;
    let mut update = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-U" => update = true,
            "-a" => account = it.next().cloned(),
            "-s" => service = it.next().cloned(),
            "-w" => data = it.next().map(|w| w.as_bytes().to_vec()),
            // A cut-off command leaves an odd number of digits: the last one is lost.
            "-X" => data = it.next().and_then(|h| unhex(&h.as_bytes()[..h.len() & !1])),
            other => {
                eprintln!("security: add-generic-password: unsupported option {other}");
                return 2;
            }
        }
    }
    let (Some(account), Some(service), Some(data)) = (account, service, data) else {
        eprintln!("security: add-generic-password: needs -a, -s and -X or -w");
        return 2;
    };
    if dir.join("locked").exists() {
        eprintln!(
            "security: SecKeychainItemCreateFromContent (<default>): User interaction is not allowed."
        );
        return LOCKED;
    }
    if dir.join("fail-writes").exists() {
        eprintln!(
            "security: SecKeychainItemCreateFromContent (<default>): The user name or passphrase you entered is not correct."
        );
        return 1;
    }
    if dir.join("ignore-writes").exists() {
        return 0;
    }
    let path = item_path(dir, &service, &account);
    if path.exists() && !update {
        eprintln!(
            "security: SecKeychainItemCreateFromContent (<default>): The specified item already exists in the keychain."
        );
        return 45;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    if fs::write(&tmp, &data)
        .and_then(|()| fs::rename(&tmp, &path))
        .is_err()
    {
        eprintln!("fake security: cannot write {}", path.display());
        return 1;
    }
    0
}

fn item_path(dir: &Path, service: &str, account: &str) -> PathBuf {
    dir.join("items")
        .join(format!("{service}@{account}").replace('/', "%2F"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    let digit = |c: u8| char::from(c).to_digit(16);
    text.chunks_exact(2)
        .map(|p| u8::try_from(digit(p[0])? << 4 | digit(p[1])?).ok())
        .collect()
}
