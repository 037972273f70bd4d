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
