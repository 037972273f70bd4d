//! `tokenkeeper service print`: the definition a service manager starts the daemon from carries
//! the installing shell's variables that decide where each provider's login lives, since the
//! daemon never sees that shell's environment.

use crate::util::*;

#[test]
fn service_print_carries_every_providers_home_folder() {
    let s = Sandbox::new();
    let codex = s.dir.path().join("codex home");
    let gemini = s.dir.path().join("gemini-home");
    let claude = s.dir.path().join("claude-config");
    let print = |platform: &str| {
        let run = Run::from(
            s.cmd(&["service", "print", "--platform", platform])
                .env("CODEX_HOME", &codex)
                .env("GEMINI_CLI_HOME", &gemini)
                .env("CLAUDE_CONFIG_DIR", &claude)
                .env("OPENAI_API_KEY", "sk-not-passed")
                .output()
                .expect("run tokenkeeper"),
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(!run.stdout.contains("sk-not-passed"), "{}", run.stdout);
        run.stdout
    };

    let unit = print("systemd");
    for line in [
        format!("Environment=\"CODEX_HOME={}\"\n", codex.display()),
        format!("Environment=GEMINI_CLI_HOME={}\n", gemini.display()),
        format!("Environment=CLAUDE_CONFIG_DIR={}\n", claude.display()),
    ] {
        assert!(unit.contains(&line), "no {line:?} in\n{unit}");
    }

    let plist = print("launchd");
    for (name, value) in [
        ("CODEX_HOME", &codex),
        ("GEMINI_CLI_HOME", &gemini),
        ("CLAUDE_CONFIG_DIR", &claude),
    ] {
        let entry = format!(
            "\t\t<key>{name}</key>\n\t\t<string>{}</string>\n",
            value.display()
        );
        assert!(plist.contains(&entry), "no {entry:?} in\n{plist}");
    }
}

#[test]
fn a_webhook_and_notify_command_stay_out_of_the_command_line() {
    use std::os::unix::fs::PermissionsExt;
    let s = Sandbox::new();
    let hook = "https://hooks.example/secret-path";
    let notify = "curl -H 'Authorization: Bearer s3cret' https://n.example";
    let args = |action: &str, platform: &str| {
        vec![
            "service",
            action,
            "--platform",
            platform,
            "--webhook",
            hook,
            "--notify-command",
            notify,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        Run::from(s.cmd(&a).output().expect("run tokenkeeper"))
    };

    let print = run(args("print", "systemd"));
    assert_eq!(print.code, 0, "{print:?}");
    let env_file = s.dir.path().join("config/tokenkeeper/service.env");
    let exec = print
        .stdout
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("an ExecStart line");
    assert!(
        !exec.contains("secret-path") && !exec.contains("s3cret"),
        "{exec}"
    );
    assert!(
        print
            .stdout
            .contains(&format!("EnvironmentFile={}\n", env_file.display())),
        "{}",
        print.stdout
    );
    assert!(!print.stdout.contains("secret-path"), "{}", print.stdout);

    let install = run(args("install", "systemd"));
    assert_eq!(install.code, 0, "{install:?}");
    let unit =
        std::fs::read_to_string(s.dir.path().join("config/systemd/user/tokenkeeper.service"))
            .unwrap();
    assert!(
        !unit.contains("secret-path") && !unit.contains("s3cret"),
        "{unit}"
    );
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(
        env.contains("TOKENKEEPER_WEBHOOK='https://hooks.example/secret-path'\n"),
        "{env}"
    );
    assert!(
        env.contains(
            "TOKENKEEPER_NOTIFY_COMMAND=\"curl -H 'Authorization: Bearer s3cret' https://n.example\"\n"
        ),
        "{env}"
    );
    let mode = std::fs::metadata(&env_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!install.stderr.contains("secret-path"), "{install:?}");

    // launchd: in the plist's environment, not its arguments.
    let plist = run(args("print", "launchd")).stdout;
    let arguments = plist
        .split("<key>ProgramArguments</key>")
        .nth(1)
        .and_then(|rest| rest.split("</array>").next())
        .unwrap();
    assert!(!arguments.contains("secret-path"), "{plist}");
    assert!(
        plist.contains(
            "\t\t<key>TOKENKEEPER_WEBHOOK</key>\n\t\t<string>https://hooks.example/secret-path</string>\n"
        ),
        "{plist}"
    );

    // Windows has no such place: the config file's [daemon] table is.
    let windows = run(args("print", "windows"));
    assert_eq!(windows.code, 2, "{windows:?}");
    assert!(windows.stderr.contains("[daemon]"), "{windows:?}");
    assert!(!windows.stdout.contains("secret-path"), "{windows:?}");

    let uninstall = run(vec![
        "service".into(),
        "uninstall".into(),
        "--platform".into(),
        "systemd".into(),
    ]);
    assert_eq!(uninstall.code, 0, "{uninstall:?}");
    assert!(!env_file.exists());
}

#[test]
fn the_daemon_reads_its_webhook_and_notify_command_from_the_environment() {
    let s = Sandbox::new();
    let run = Run::from(
        s.cmd(&["daemon", "--help"])
            .env("TOKENKEEPER_WEBHOOK", "https://hooks.example/secret-path")
            .output()
            .expect("run tokenkeeper"),
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("TOKENKEEPER_WEBHOOK"), "{}", run.stdout);
    assert!(
        run.stdout.contains("TOKENKEEPER_NOTIFY_COMMAND"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("secret-path"), "{}", run.stdout);
}

/// `service install` on systemd says when lingering is off, with the one command that turns it
/// on: without it the user service stops at logout (a headless machine's usual state).
#[test]
fn service_install_says_when_lingering_is_off() {
    use std::os::unix::fs::PermissionsExt;
    let s = Sandbox::new();
    let bin = s.dir.path().join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    let loginctl = bin.join("loginctl");
    std::fs::write(&loginctl, "#!/bin/sh\necho Linger=no\n").unwrap();
    std::fs::set_permissions(&loginctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = Run::from(
        s.cmd(&["service", "install", "--platform", "systemd"])
            .env("PATH", &path)
            .env("USER", "me")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("lingering is off for me")
            && run.stderr.contains("loginctl enable-linger me"),
        "{run:?}"
    );
    std::fs::write(&loginctl, "#!/bin/sh\necho Linger=yes\n").unwrap();
    let run = Run::from(
        s.cmd(&["service", "install", "--platform", "systemd"])
            .env("PATH", &path)
            .env("USER", "me")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stderr.contains("lingering"), "{run:?}");
}
