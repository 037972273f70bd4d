//! Service definitions that keep `tokenkeeper daemon` running under the platform's service
//! manager: a systemd user unit, a launchd agent, a Windows Task Scheduler task. Rendering is
//! pure (text from a [`ServiceSpec`]) so every platform's output is tested on any machine;
//! installing is one atomic write and uninstalling one unlink. tokenkeeper never runs
//! systemctl, launchctl or schtasks: it prints the one command that does, so the person sees
//! what changes in their session and runs it when they choose.

use crate::error::Error;
use crate::storage::atomic::write_atomic;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub const SYSTEMD_UNIT: &str = "tokenkeeper.service";
pub const LAUNCHD_LABEL: &str = "dev.tokenkeeper.daemon";
pub const WINDOWS_TASK: &str = "tokenkeeper";
/// The daemon reads its webhook URL and notify command from these (see `tokenkeeper daemon`):
/// a service definition passes them here, never on the command line, which every local user
/// sees in `ps`.
pub const WEBHOOK_ENV: &str = "TOKENKEEPER_WEBHOOK";
pub const NOTIFY_COMMAND_ENV: &str = "TOKENKEEPER_NOTIFY_COMMAND";

/// Variables of the installing shell that decide where tokenkeeper finds its config and keeps
/// its state. With each provider's own ([`passed_environment`]), the definition carries those
/// that are set.
const OWN_ENVIRONMENT: &[&str] = &["XDG_CONFIG_HOME", "XDG_STATE_HOME"];

/// Variables of the installing shell that decide which logins the daemon watches and where it
/// keeps its state: every provider's [`Facts::home_env`](crate::provider::Facts::home_env)
/// and tokenkeeper's own. A service manager starts the daemon without the shell's environment,
/// so the definition carries those that are set; otherwise the daemon would quietly watch
/// `~/.codex` while the person's Codex CLI uses `$CODEX_HOME`.
pub fn passed_environment() -> Vec<&'static str> {
    let mut names = crate::provider::home_env();
    names.extend(OWN_ENVIRONMENT);
    names
}

const DESCRIPTION: &str = "tokenkeeper daemon: keeps the OAuth logins of AI coding CLIs fresh";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    Systemd,
    Launchd,
    Windows,
}

/// What the service runs, resolved from the command line and the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Absolute path of the tokenkeeper binary.
    pub program: String,
    /// Everything after the program: `daemon` and its options.
    pub args: Vec<String>,
    /// Name and value of each [`passed_environment`] variable that is set (systemd, launchd).
    pub environment: Vec<(String, String)>,
    /// Where launchd sends the daemon's stderr: `~/Library/Logs/tokenkeeper.log`, absolute,
    /// since launchd does not expand `~`. `None` without a home folder.
    pub log_file: Option<String>,
    /// The Windows account (`DOMAIN\user`) whose logon starts the task; naming it lets a user
    /// without administrator rights register the task.
    pub windows_user: Option<String>,
    /// Variables that may hold a secret (the webhook URL, the notify command): systemd reads
    /// them from [`ServiceSpec::env_file`], launchd from the plist (mode 0600 like it).
    pub secrets: Vec<(String, String)>,
    /// The systemd unit's `EnvironmentFile=`: where [`env_file_text`] is installed.
    pub env_file: Option<String>,
}

impl ServiceSpec {
    /// `program daemon <daemon_options>`, with what the environment adds.
    pub fn new(
        program: String,
        daemon_options: Vec<String>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> ServiceSpec {
        let set = |k: &str| env(k).filter(|v| !v.is_empty());
        let mut args = vec!["daemon".to_string()];
        args.extend(daemon_options);
        ServiceSpec {
            program,
            args,
            environment: passed_environment()
                .into_iter()
                .filter_map(|k| env(k).map(|v| (k.to_string(), v)))
                .collect(),
            log_file: set("HOME").map(|h| {
                Path::new(&h)
                    .join("Library/Logs/tokenkeeper.log")
                    .to_string_lossy()
                    .into_owned()
            }),
            windows_user: set("USERNAME").map(|user| match set("USERDOMAIN") {
                Some(domain) => format!("{domain}\\{user}"),
                None => user,
            }),
            secrets: Vec::new(),
            env_file: None,
        }
    }
}

/// The environment file a systemd unit reads its secrets from:
/// `$XDG_CONFIG_HOME/tokenkeeper/service.env`, else under `~/.config`.
pub fn env_file_path(env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf, Error> {
    let set = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    set("XDG_CONFIG_HOME")
        .or_else(|| set("HOME").map(|h| h.join(".config")))
        .map(|c| c.join("tokenkeeper").join("service.env"))
        .ok_or_else(|| Error::Config {
            path: PathBuf::from("~/.config/tokenkeeper/service.env"),
            problem: "cannot be located: neither XDG_CONFIG_HOME nor HOME is set; set HOME".into(),
        })
}

/// The text of a systemd environment file holding `secrets`, one `NAME='value'` a line (single
/// quotes keep everything as written; a value with a quote is double-quoted with escapes). A
/// value cannot span lines: an error names the variable, never the value.
pub fn env_file_text(secrets: &[(String, String)]) -> Result<String, Error> {
    let mut text = String::from(
        "# Read by the tokenkeeper service; written by `tokenkeeper service install`.\n",
    );
    for (name, value) in secrets {
        if value.contains(['\n', '\r', '\0']) {
            return Err(Error::Usage(format!(
                "the value for {name} holds a line break, which a service cannot pass on"
            )));
        }
        let quoted = if value.contains('\'') {
            let mut q = String::from("\"");
            for c in value.chars() {
                if "\"\\`$".contains(c) {
                    q.push('\\');
                }
                q.push(c);
            }
            q.push('"');
            q
        } else {
            format!("'{value}'")
        };
        let _ = writeln!(text, "{name}={quoted}");
    }
    Ok(text)
}

impl Platform {
    /// The service manager of the system this binary was built for.
    pub fn native() -> Platform {
        if cfg!(target_os = "macos") {
            Platform::Launchd
        } else if cfg!(target_os = "windows") {
            Platform::Windows
        } else {
            Platform::Systemd
        }
    }

    /// The definition's text.
    pub fn render(self, spec: &ServiceSpec) -> String {
        match self {
            Platform::Systemd => systemd_unit(spec),
            Platform::Launchd => launchd_plist(spec),
            Platform::Windows => windows_task(spec),
        }
    }

    /// systemd: `$XDG_CONFIG_HOME/systemd/user/tokenkeeper.service` (else under `~/.config`);
    /// launchd: `~/Library/LaunchAgents/dev.tokenkeeper.daemon.plist`; Windows:
    /// `%LOCALAPPDATA%\tokenkeeper\tokenkeeper-task.xml` (else under `~/AppData/Local`).
    pub fn install_path(self, env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf, Error> {
        let set = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let (path, missing) = match self {
            Platform::Systemd => (
                set("XDG_CONFIG_HOME")
                    .or_else(|| set("HOME").map(|h| h.join(".config")))
                    .map(|c| c.join("systemd/user").join(SYSTEMD_UNIT)),
                "neither XDG_CONFIG_HOME nor HOME is set; set HOME",
            ),
            Platform::Launchd => (
                set("HOME").map(|h| {
                    h.join("Library/LaunchAgents")
                        .join(format!("{LAUNCHD_LABEL}.plist"))
                }),
                "HOME is not set; set it",
            ),
            Platform::Windows => (
                set("LOCALAPPDATA")
                    .or_else(|| {
                        set("USERPROFILE")
                            .or_else(|| set("HOME"))
                            .map(|h| h.join("AppData").join("Local"))
                    })
                    .map(|d| d.join("tokenkeeper").join("tokenkeeper-task.xml")),
                "none of LOCALAPPDATA, USERPROFILE and HOME is set; set LOCALAPPDATA",
            ),
        };
        path.ok_or_else(|| Error::Config {
            path: PathBuf::from(self.nominal_path()),
            problem: format!("cannot be located: {missing}"),
        })
    }

    fn nominal_path(self) -> &'static str {
        match self {
            Platform::Systemd => "~/.config/systemd/user/tokenkeeper.service",
            Platform::Launchd => "~/Library/LaunchAgents/dev.tokenkeeper.daemon.plist",
            Platform::Windows => "%LOCALAPPDATA%\\tokenkeeper\\tokenkeeper-task.xml",
        }
    }

    /// The one shell command that loads and starts the installed definition at `path`.
    pub fn enable_command(self, path: &Path) -> String {
        match self {
            Platform::Systemd => format!(
                "systemctl --user daemon-reload && systemctl --user enable --now {SYSTEMD_UNIT}"
            ),
            // `load -w` is deprecated; `bootstrap` loads into the user's GUI domain.
            Platform::Launchd => format!("launchctl bootstrap gui/$(id -u) {}", shell_quote(path)),
            Platform::Windows => format!(
                "schtasks /Create /TN {WINDOWS_TASK} /XML \"{}\"",
                path.display()
            ),
        }
    }

    /// The one command that stops the service and keeps it from starting again. None of them
    /// needs the definition file, so it works before or after `uninstall` removed it (launchd's
    /// `unload -w PATH` would not, hence `remove LABEL`).
    pub fn disable_command(self) -> String {
        match self {
            Platform::Systemd => format!("systemctl --user disable --now {SYSTEMD_UNIT}"),
            Platform::Launchd => format!("launchctl remove {LAUNCHD_LABEL}"),
            Platform::Windows => format!("schtasks /Delete /TN {WINDOWS_TASK} /F"),
        }
    }

    /// The one command that stops the running service (until its next start).
    pub fn stop_command(self) -> String {
        match self {
            Platform::Systemd => format!("systemctl --user stop {SYSTEMD_UNIT}"),
            Platform::Launchd => format!("launchctl bootout gui/$(id -u)/{LAUNCHD_LABEL}"),
            Platform::Windows => format!("schtasks /End /TN {WINDOWS_TASK}"),
        }
    }

    /// The command that makes a running service pick up a replaced definition at `path`.
    pub fn reload_command(self, path: &Path) -> String {
        match self {
            Platform::Systemd => {
                format!("systemctl --user daemon-reload && systemctl --user restart {SYSTEMD_UNIT}")
            }
            Platform::Launchd => {
                let path = shell_quote(path);
                format!(
                    "launchctl bootout gui/$(id -u) {path}; launchctl bootstrap gui/$(id -u) {path}"
                )
            }
            Platform::Windows => format!(
                "schtasks /Create /TN {WINDOWS_TASK} /XML \"{}\" /F",
                path.display()
            ),
        }
    }
}

/// What [`install`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Installed {
    Written,
    /// A different definition was there and `force` replaced it.
    Replaced,
    /// The file already held exactly this text; nothing was written.
    Unchanged,
}

/// Writes `text` to `path` (creating its folders) by temp file and rename, so the service
/// manager never reads half a definition. A different existing file is kept unless `force`:
/// it may hold options the person chose by hand.
///
/// The file is mode 0600, not the usual 0644: the definition may hold a webhook URL or a
/// notify command with a secret in it, and only its owner's service manager reads it.
pub fn install(path: &Path, text: &str, force: bool) -> Result<Installed, Error> {
    let outcome = match fs::read(path) {
        Ok(old) if old == text.as_bytes() => return Ok(Installed::Unchanged),
        Ok(old) if !force => {
            return Err(Error::Config {
                path: path.to_path_buf(),
                problem: format!(
                    "already holds a different service definition (they differ from line {} on); \
                     compare it with `tokenkeeper service print` and the same options, then \
                     pass --force to replace it",
                    first_different_line(&old, text.as_bytes())
                ),
            });
        }
        Ok(_) => Installed::Replaced,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Installed::Written,
        Err(e) => return Err(io_error("cannot read the service definition", path, e)),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| io_error("cannot create the folder", dir, e))?;
    }
    write_atomic(path, text.as_bytes())
        .map_err(|e| io_error("cannot write the service definition", path, e))?;
    Ok(outcome)
}

/// What [`uninstall`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removed {
    Removed,
    /// There was no file to remove.
    Absent,
}

/// Removes the definition at `path`. A systemd unit that is still enabled is kept unless
/// `force`: `systemctl disable` reads the unit to know which links to remove, so it must run
/// first. (launchd and Task Scheduler leave no trace to check; their disable commands work
/// without the file.)
pub fn uninstall(platform: Platform, path: &Path, force: bool) -> Result<Removed, Error> {
    if path.symlink_metadata().is_err() {
        return Ok(Removed::Absent);
    }
    if platform == Platform::Systemd
        && !force
        && let Some(link) = systemd_enablement(path)
    {
        return Err(Error::Config {
            path: path.to_path_buf(),
            problem: format!(
                "the service is still enabled ({}); run `{}` first, then uninstall again \
                 (or pass --force to remove the file anyway)",
                link.display(),
                platform.disable_command()
            ),
        });
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(Removed::Removed),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Removed::Absent),
        Err(e) => Err(io_error("cannot remove the service definition", path, e)),
    }
}

/// The link `systemctl enable` made for the unit at `unit` (in a `*.wants` folder beside it).
pub fn systemd_enablement(unit: &Path) -> Option<PathBuf> {
    let name = unit.file_name()?;
    fs::read_dir(unit.parent()?)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".wants"))
        .map(|e| e.path().join(name))
        .find(|link| link.symlink_metadata().is_ok())
}

/// The path a service should run: the binary's real path, unless a `PATH` entry leads to the
/// same file, in which case that entry. Package managers (Homebrew, Nix) link a stable name to
/// a versioned folder that the next upgrade deletes; the link survives the upgrade.
pub fn installed_binary(
    current_exe: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> io::Result<PathBuf> {
    let real = fs::canonicalize(current_exe)?;
    let Some(name) = current_exe.file_name() else {
        return Ok(real);
    };
    let on_path = env("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .filter(|dir| dir.is_absolute())
            .map(|dir| dir.join(name))
            .find(|candidate| fs::canonicalize(candidate).is_ok_and(|c| c == real))
    });
    Ok(on_path.unwrap_or(real))
}

/// True for a binary in a cargo build folder (`target/debug`, `target/release`,
/// `target/<triple>/release`): `cargo clean` or the next build would pull it from under the
/// service.
pub fn is_build_output(path: &Path) -> bool {
    let names: Vec<_> = path.components().map(|c| c.as_os_str()).collect();
    let is_profile = |i: usize| {
        names
            .get(i)
            .is_some_and(|n| *n == "debug" || *n == "release")
    };
    names
        .iter()
        .enumerate()
        .any(|(i, n)| *n == "target" && (is_profile(i + 1) || is_profile(i + 2)))
}

fn io_error(what: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// 1-based number of the first line where `a` and `b` differ (never a line's text: a
/// definition may hold a webhook URL, which is a secret).
fn first_different_line(a: &[u8], b: &[u8]) -> usize {
    let same = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    a[..same].iter().filter(|&&c| c == b'\n').count() + 1
}

fn systemd_unit(spec: &ServiceSpec) -> String {
    let mut exec = systemd_word(&spec.program, true);
    for arg in &spec.args {
        exec.push(' ');
        exec.push_str(&systemd_word(arg, true));
    }
    let mut environment = String::new();
    for (name, value) in &spec.environment {
        let assignment = systemd_word(&format!("{name}={value}"), false);
        let _ = writeln!(environment, "Environment={assignment}");
    }
    if let Some(file) = spec.env_file.as_ref().filter(|_| !spec.secrets.is_empty()) {
        // A path, not a word: no quotes; `%` still starts a specifier.
        let _ = writeln!(environment, "EnvironmentFile={}", file.replace('%', "%%"));
    }
    format!(
        "# Runs `tokenkeeper daemon`; written by `tokenkeeper service install`.
[Unit]
Description={DESCRIPTION}
Documentation=man:tokenkeeper-daemon(1) man:tokenkeeper(1)

[Service]
Type=notify
{environment}ExecStart={exec}
Restart=on-failure
RestartSec=10
WatchdogSec=60
# 78: the config or credentials are wrong; restarting cannot help.
RestartPreventExitStatus=78

[Install]
WantedBy=default.target
"
    )
}

/// One word of a systemd command line or assignment: bare when it holds only plain characters,
/// else in double quotes with C escapes. `%` starts a specifier everywhere, so it is doubled;
/// in `ExecStart=` (`expands_variables`) `$` starts a variable and is doubled too.
fn systemd_word(word: &str, expands_variables: bool) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:,=@+".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        return word.to_string();
    }
    let mut out = String::from("\"");
    for c in word.chars() {
        match c {
            '%' => out.push_str("%%"),
            '$' if expands_variables => out.push_str("$$"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn launchd_plist(spec: &ServiceSpec) -> String {
    let mut arguments = String::new();
    for arg in std::iter::once(&spec.program).chain(&spec.args) {
        let _ = writeln!(arguments, "\t\t<string>{}</string>", xml_escape(arg));
    }
    let mut environment = String::new();
    if !spec.environment.is_empty() || !spec.secrets.is_empty() {
        environment.push_str("\t<key>EnvironmentVariables</key>\n\t<dict>\n");
        for (name, value) in spec.environment.iter().chain(&spec.secrets) {
            let _ = writeln!(
                environment,
                "\t\t<key>{}</key>\n\t\t<string>{}</string>",
                xml_escape(name),
                xml_escape(value)
            );
        }
        environment.push_str("\t</dict>\n");
    }
    let log = spec.log_file.as_ref().map_or_else(String::new, |log| {
        format!(
            "\t<key>StandardErrorPath</key>\n\t<string>{}</string>\n",
            xml_escape(log)
        )
    });
    // KeepAlive restarts after a failure but not after a clean exit. launchd has no
    // RestartPreventExitStatus: after exit 78 it retries every 10 s (its ThrottleInterval).
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- Runs `tokenkeeper daemon`; written by `tokenkeeper service install`. -->
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>{LAUNCHD_LABEL}</string>
	<key>ProgramArguments</key>
	<array>
{arguments}	</array>
{environment}	<key>RunAtLoad</key>
	<true/>
	<key>KeepAlive</key>
	<dict>
		<key>SuccessfulExit</key>
		<false/>
	</dict>
{log}</dict>
</plist>
"#
    )
}

fn windows_task(spec: &ServiceSpec) -> String {
    let user = spec.windows_user.as_ref().map_or_else(String::new, |u| {
        format!("      <UserId>{}</UserId>\n", xml_escape(u))
    });
    let arguments: Vec<String> = spec.args.iter().map(|a| windows_argument(a)).collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- Runs `tokenkeeper daemon`; written by `tokenkeeper service install`. -->
<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">
  <RegistrationInfo>
    <Description>{DESCRIPTION}</Description>
    <URI>\{WINDOWS_TASK}</URI>
  </RegistrationInfo>
  <Triggers>
    <LogonTrigger>
      <Enabled>true</Enabled>
{user}    </LogonTrigger>
  </Triggers>
  <Principals>
    <Principal id="Author">
{user}      <LogonType>InteractiveToken</LogonType>
      <RunLevel>LeastPrivilege</RunLevel>
    </Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <StartWhenAvailable>true</StartWhenAvailable>
    <IdleSettings>
      <StopOnIdleEnd>false</StopOnIdleEnd>
      <RestartOnIdle>false</RestartOnIdle>
    </IdleSettings>
    <Enabled>true</Enabled>
    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>
    <RestartOnFailure>
      <Interval>PT1M</Interval>
      <Count>999</Count>
    </RestartOnFailure>
  </Settings>
  <Actions Context="Author">
    <Exec>
      <Command>{command}</Command>
      <Arguments>{arguments}</Arguments>
    </Exec>
  </Actions>
</Task>
"#,
        command = xml_escape(&spec.program),
        arguments = xml_escape(&arguments.join(" ")),
    )
}

/// One argument as the Microsoft C runtime splits a command line (`CommandLineToArgvW`):
/// quoted when it holds whitespace or a quote; backslashes doubled only before a quote.
/// Task Scheduler expands `%NAME%` in arguments and offers no escape for it.
fn windows_argument(arg: &str) -> String {
    if !arg.is_empty() && !arg.contains([' ', '\t', '\n', '\x0b', '"']) {
        return arg.to_string();
    }
    let mut out = String::from("\"");
    let mut backslashes = 0;
    for c in arg.chars() {
        match c {
            '\\' => backslashes += 1,
            '"' => {
                out.extend(std::iter::repeat_n('\\', backslashes * 2 + 1));
                out.push('"');
                backslashes = 0;
            }
            c => {
                out.extend(std::iter::repeat_n('\\', backslashes));
                out.push(c);
                backslashes = 0;
            }
        }
    }
    out.extend(std::iter::repeat_n('\\', backslashes * 2));
    out.push('"');
    out
}

/// Escapes text content (never used for attribute values, so quotes stay as they are).
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// A path for a POSIX shell command line: bare when it holds only plain characters, else in
/// single quotes.
pub fn shell_quote(path: &Path) -> String {
    let text = path.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:,=@+%".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::env as env_of;
    use std::os::unix::fs::MetadataExt;

    fn spec(args: &[&str]) -> ServiceSpec {
        ServiceSpec::new(
            "/usr/local/bin/tokenkeeper".into(),
            args.iter().map(|a| a.to_string()).collect(),
            &env_of(&[("HOME", "/Users/me")]),
        )
    }

    fn line_starting<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"))
    }

    #[test]
    fn systemd_unit_runs_the_daemon_as_a_notify_service_with_watchdog() {
        let unit = Platform::Systemd.render(&spec(&["--refresh-before", "2h"]));
        for line in [
            "[Unit]",
            "Documentation=man:tokenkeeper-daemon(1) man:tokenkeeper(1)",
            "[Service]",
            "Type=notify",
            "ExecStart=/usr/local/bin/tokenkeeper daemon --refresh-before 2h",
            "Restart=on-failure",
            "RestartSec=10",
            "WatchdogSec=60",
            "RestartPreventExitStatus=78",
            "[Install]",
            "WantedBy=default.target",
        ] {
            assert!(
                unit.lines().any(|l| l == line),
                "{line:?} missing in:\n{unit}"
            );
        }
        assert!(line_starting(&unit, "Description=").len() > "Description=".len());
        assert!(!unit.contains("Environment="), "{unit}");
        // A user unit cannot wait for the system's network-online.target: no such line, which
        // would only promise a wait that never happens.
        assert!(!unit.contains("network-online"), "{unit}");
    }

    #[test]
    fn systemd_exec_start_quotes_spaces_and_doubles_percent_and_dollar() {
        let mut s = spec(&[
            "--notify-command",
            r#"notify-send "tokenkeeper" 'at 100% $USER'"#,
            "--webhook",
            "https://hooks.example/x?a=1&b=2",
        ]);
        s.program = "/opt/my tools/tokenkeeper".into();
        let unit = Platform::Systemd.render(&s);
        assert_eq!(
            line_starting(&unit, "ExecStart="),
            r#"ExecStart="/opt/my tools/tokenkeeper" daemon --notify-command "notify-send \"tokenkeeper\" 'at 100%% $$USER'" --webhook "https://hooks.example/x?a=1&b=2""#
        );
    }

    #[test]
    fn secrets_go_to_an_environment_file_and_the_plists_environment_never_the_arguments() {
        let mut s = spec(&["--refresh-before", "2h"]);
        s.secrets = vec![
            (
                "TOKENKEEPER_WEBHOOK".into(),
                "https://hooks.example/secret-path".into(),
            ),
            (
                "TOKENKEEPER_NOTIFY_COMMAND".into(),
                r#"echo 'a' "$B" \ `c`"#.into(),
            ),
        ];
        s.env_file = Some("/home/me/.config/tokenkeeper/service.env".into());
        let unit = Platform::Systemd.render(&s);
        assert!(!unit.contains("secret-path"), "{unit}");
        assert!(unit.contains("EnvironmentFile=/home/me/.config/tokenkeeper/service.env\n"));
        let plist = Platform::Launchd.render(&s);
        assert!(plist.contains(
            "\t\t<key>TOKENKEEPER_WEBHOOK</key>\n\t\t<string>https://hooks.example/secret-path</string>\n"
        ));
        assert_eq!(
            env_file_text(&s.secrets)
                .unwrap()
                .lines()
                .skip(1)
                .collect::<Vec<_>>(),
            [
                "TOKENKEEPER_WEBHOOK='https://hooks.example/secret-path'",
                r#"TOKENKEEPER_NOTIFY_COMMAND="echo 'a' \"\$B\" \\ \`c\`""#,
            ]
        );
        let broken = [("TOKENKEEPER_WEBHOOK".to_string(), "x\ny".to_string())];
        let err = env_file_text(&broken).unwrap_err().to_string();
        assert!(
            err.contains("TOKENKEEPER_WEBHOOK") && !err.contains("x\ny"),
            "{err}"
        );
        // No secrets: no file named.
        s.secrets.clear();
        assert!(!Platform::Systemd.render(&s).contains("EnvironmentFile="));
    }

    #[test]
    fn systemd_words_escape_backslashes_newlines_and_empty() {
        assert_eq!(
            systemd_word("plain-1.2_x:y,z=@+", true),
            "plain-1.2_x:y,z=@+"
        );
        assert_eq!(systemd_word("", true), r#""""#);
        assert_eq!(systemd_word(";", true), r#"";""#);
        assert_eq!(systemd_word("a\\b\nc\u{1}", true), r#""a\\b\nc\x01""#);
        assert_eq!(systemd_word("A=$x %h", false), r#""A=$x %%h""#);
    }

    #[test]
    fn systemd_unit_carries_the_claude_and_state_folders_of_the_installing_shell() {
        let env = env_of(&[
            ("HOME", "/home/me"),
            ("CLAUDE_CONFIG_DIR", "/home/me/claude work"),
            ("XDG_STATE_HOME", "/home/me/state"),
            ("ANTHROPIC_API_KEY", "sk-not-passed"),
        ]);
        let s = ServiceSpec::new("/bin/tk".into(), vec![], &env);
        let unit = Platform::Systemd.render(&s);
        assert!(unit.contains("Environment=\"CLAUDE_CONFIG_DIR=/home/me/claude work\"\n"));
        assert!(unit.contains("Environment=XDG_STATE_HOME=/home/me/state\n"));
        assert!(!unit.contains("sk-not-passed"));
        let plist = Platform::Launchd.render(&s);
        assert!(plist.contains(
            "\t\t<key>CLAUDE_CONFIG_DIR</key>\n\t\t<string>/home/me/claude work</string>\n"
        ));
    }

    #[test]
    fn launchd_plist_lists_program_arguments_in_order_xml_escaped() {
        let plist = Platform::Launchd.render(&spec(&[
            "--webhook",
            "https://hooks.example/x?a=1&b=2",
            "--notify-command",
            "echo <alert> && beep",
        ]));
        let expected = "\t<key>ProgramArguments</key>
\t<array>
\t\t<string>/usr/local/bin/tokenkeeper</string>
\t\t<string>daemon</string>
\t\t<string>--webhook</string>
\t\t<string>https://hooks.example/x?a=1&amp;b=2</string>
\t\t<string>--notify-command</string>
\t\t<string>echo &lt;alert&gt; &amp;&amp; beep</string>
\t</array>
";
        assert!(plist.contains(expected), "{plist}");
        for part in [
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
            "\t<key>Label</key>\n\t<string>dev.tokenkeeper.daemon</string>\n",
            "\t<key>RunAtLoad</key>\n\t<true/>\n",
            "\t<key>KeepAlive</key>\n\t<dict>\n\t\t<key>SuccessfulExit</key>\n\t\t<false/>\n\t</dict>\n",
            "\t<key>StandardErrorPath</key>\n\t<string>/Users/me/Library/Logs/tokenkeeper.log</string>\n",
        ] {
            assert!(plist.contains(part), "{part:?} missing in:\n{plist}");
        }
        assert!(!plist.contains("EnvironmentVariables"));
    }

    #[test]
    fn windows_task_starts_at_logon_restarts_and_quotes_arguments() {
        let mut s = spec(&[
            "--notify-command",
            r#"msg * "login ended""#,
            "--credentials",
            r"C:\Users\Me Too\",
            "--refresh-before",
            "2h",
        ]);
        s.program = r"C:\Program Files\tokenkeeper\tokenkeeper.exe".into();
        s.windows_user = Some(r"DESK\me".into());
        let xml = Platform::Windows.render(&s);
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"));
        assert_eq!(
            line_starting(&xml, "      <Command>"),
            r"      <Command>C:\Program Files\tokenkeeper\tokenkeeper.exe</Command>"
        );
        assert_eq!(
            line_starting(&xml, "      <Arguments>"),
            r#"      <Arguments>daemon --notify-command "msg * \"login ended\"" --credentials "C:\Users\Me Too\\" --refresh-before 2h</Arguments>"#
        );
        for part in [
            "<LogonTrigger>\n      <Enabled>true</Enabled>\n      <UserId>DESK\\me</UserId>\n    </LogonTrigger>",
            "<Principal id=\"Author\">\n      <UserId>DESK\\me</UserId>\n",
            "<ExecutionTimeLimit>PT0S</ExecutionTimeLimit>",
            "<RestartOnFailure>\n      <Interval>PT1M</Interval>\n      <Count>999</Count>\n    </RestartOnFailure>",
        ] {
            assert!(xml.contains(part), "{part:?} missing in:\n{xml}");
        }
    }

    #[test]
    fn windows_arguments_follow_the_c_runtime_rules() {
        assert_eq!(windows_argument("plain"), "plain");
        assert_eq!(windows_argument(""), r#""""#);
        assert_eq!(windows_argument(r"a\b"), r"a\b");
        assert_eq!(windows_argument(r#"a\"b"#), r#""a\\\"b""#);
        assert_eq!(windows_argument(r"a b\\"), r#""a b\\\\""#);
    }

    #[test]
    fn windows_task_without_a_known_user_names_none() {
        let xml = Platform::Windows.render(&spec(&[]));
        assert!(!xml.contains("UserId"), "{xml}");
        assert!(xml.contains("<Arguments>daemon</Arguments>"));
    }

    #[test]
    fn install_paths_follow_the_environment() {
        let home = env_of(&[("HOME", "/home/me")]);
        let xdg = env_of(&[("HOME", "/home/me"), ("XDG_CONFIG_HOME", "/cfg")]);
        let win = env_of(&[("LOCALAPPDATA", r"C:\Users\me\AppData\Local")]);
        let profile = env_of(&[("USERPROFILE", r"C:\Users\me")]);
        let path = |p: Platform, env: &dyn Fn(&str) -> Option<String>| p.install_path(env).unwrap();
        assert_eq!(
            path(Platform::Systemd, &home),
            Path::new("/home/me/.config/systemd/user/tokenkeeper.service")
        );
        assert_eq!(
            path(Platform::Systemd, &xdg),
            Path::new("/cfg/systemd/user/tokenkeeper.service")
        );
        assert_eq!(
            path(Platform::Launchd, &home),
            Path::new("/home/me/Library/LaunchAgents/dev.tokenkeeper.daemon.plist")
        );
        assert_eq!(
            path(Platform::Windows, &win),
            Path::new(r"C:\Users\me\AppData\Local")
                .join("tokenkeeper")
                .join("tokenkeeper-task.xml")
        );
        assert_eq!(
            path(Platform::Windows, &profile),
            Path::new(r"C:\Users\me").join("AppData/Local/tokenkeeper/tokenkeeper-task.xml")
        );
        assert_eq!(
            path(Platform::Windows, &home),
            Path::new("/home/me/AppData/Local/tokenkeeper/tokenkeeper-task.xml")
        );
        let err = Platform::Systemd
            .install_path(&env_of(&[("HOME", "")]))
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config);
        assert!(
            err.to_string()
                .contains("neither XDG_CONFIG_HOME nor HOME is set")
        );
    }

    #[test]
    fn commands_name_the_installed_path() {
        let plist = Path::new("/Users/Me Too/Library/LaunchAgents/dev.tokenkeeper.daemon.plist");
        assert_eq!(
            Platform::Systemd.enable_command(plist),
            "systemctl --user daemon-reload && systemctl --user enable --now tokenkeeper.service"
        );
        assert_eq!(
            Platform::Launchd.enable_command(plist),
            "launchctl bootstrap gui/$(id -u) '/Users/Me Too/Library/LaunchAgents/dev.tokenkeeper.daemon.plist'"
        );
        assert_eq!(
            Platform::Launchd.enable_command(Path::new("/Users/me/a.plist")),
            "launchctl bootstrap gui/$(id -u) /Users/me/a.plist"
        );
        assert_eq!(
            Platform::Windows.enable_command(Path::new(r"C:\x\tokenkeeper-task.xml")),
            r#"schtasks /Create /TN tokenkeeper /XML "C:\x\tokenkeeper-task.xml""#
        );
    }

    #[test]
    fn each_platform_names_the_commands_that_remove_and_stop_the_running_service() {
        for (platform, disable, stop) in [
            (
                Platform::Systemd,
                "systemctl --user disable --now tokenkeeper.service",
                "systemctl --user stop tokenkeeper.service",
            ),
            (
                Platform::Launchd,
                "launchctl remove dev.tokenkeeper.daemon",
                "launchctl bootout gui/$(id -u)/dev.tokenkeeper.daemon",
            ),
            (
                Platform::Windows,
                "schtasks /Delete /TN tokenkeeper /F",
                "schtasks /End /TN tokenkeeper",
            ),
        ] {
            assert_eq!(platform.disable_command(), disable);
            assert_eq!(platform.stop_command(), stop);
        }
    }

    #[test]
    fn install_and_uninstall_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/tokenkeeper.service");
        let unit = Platform::Systemd.render(&spec(&[]));

        assert_eq!(install(&path, &unit, false).unwrap(), Installed::Written);
        assert_eq!(fs::read_to_string(&path).unwrap(), unit);
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let inode = fs::metadata(&path).unwrap().ino();

        assert_eq!(install(&path, &unit, false).unwrap(), Installed::Unchanged);
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode, "rewrote it");

        let other = Platform::Systemd.render(&spec(&["--refresh-before", "2h"]));
        let err = install(&path, &other, false).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config);
        let message = err.to_string();
        assert!(
            message.contains("different service definition"),
            "{message}"
        );
        assert!(message.contains("line 8"), "{message}");
        assert!(message.contains("--force"), "{message}");
        assert_eq!(fs::read_to_string(&path).unwrap(), unit);

        assert_eq!(install(&path, &other, true).unwrap(), Installed::Replaced);
        assert_eq!(fs::read_to_string(&path).unwrap(), other);
        // Replaced by renaming a new file over it, never rewritten in place.
        assert_ne!(fs::metadata(&path).unwrap().ino(), inode);
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["tokenkeeper.service"], "temp file left behind");

        assert_eq!(
            uninstall(Platform::Systemd, &path, false).unwrap(),
            Removed::Removed
        );
        assert!(!path.exists());
        assert_eq!(
            uninstall(Platform::Systemd, &path, false).unwrap(),
            Removed::Absent
        );
    }

    #[test]
    fn uninstall_keeps_an_enabled_systemd_unit_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenkeeper.service");
        install(&path, "[Unit]\n", false).unwrap();
        let wants = dir.path().join("default.target.wants");
        fs::create_dir(&wants).unwrap();
        std::os::unix::fs::symlink(&path, wants.join("tokenkeeper.service")).unwrap();

        let err = uninstall(Platform::Systemd, &path, false).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config);
        assert!(
            err.to_string()
                .contains("run `systemctl --user disable --now tokenkeeper.service` first"),
            "{err}"
        );
        assert!(path.exists());
        // launchd and Task Scheduler leave no such link; their files just go.
        assert_eq!(
            uninstall(Platform::Systemd, &path, true).unwrap(),
            Removed::Removed
        );
    }

    #[test]
    fn installed_binary_prefers_a_path_entry_that_leads_to_the_same_file() {
        let (_dir, [cellar, bin]) =
            crate::testing::temp_folders(["Cellar/tokenkeeper/0.1.0/bin", "bin"]);
        let real = cellar.join("tokenkeeper");
        fs::write(&real, "").unwrap();
        std::os::unix::fs::symlink(&real, bin.join("tokenkeeper")).unwrap();
        let real = fs::canonicalize(&real).unwrap();

        let path = format!("relative:/nowhere:{}", bin.display());
        let env = env_of(&[("PATH", path.as_str())]);
        assert_eq!(
            installed_binary(&real, &env).unwrap(),
            bin.join("tokenkeeper")
        );
        assert_eq!(installed_binary(&real, &env_of(&[])).unwrap(), real);
        let elsewhere = env_of(&[("PATH", "/usr/bin:/bin")]);
        assert_eq!(installed_binary(&real, &elsewhere).unwrap(), real);
    }

    #[test]
    fn build_outputs_are_recognised() {
        for built in [
            "/src/tokenkeeper/target/debug/tokenkeeper",
            "/src/tokenkeeper/target/release/tokenkeeper",
            "/src/tokenkeeper/target/x86_64-unknown-linux-musl/release/tokenkeeper",
            "/src/tokenkeeper/target/debug/deps/tokenkeeper-0123",
        ] {
            assert!(is_build_output(Path::new(built)), "{built}");
        }
        for installed in [
            "/home/me/.cargo/bin/tokenkeeper",
            "/usr/local/bin/tokenkeeper",
            "/opt/target/bin/tokenkeeper",
        ] {
            assert!(!is_build_output(Path::new(installed)), "{installed}");
        }
    }
}
