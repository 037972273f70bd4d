//! What packagers and people installing by hand take from the binary: shell completions and the
//! man page generated from its own command line, and a `--version` that names the commit.

use crate::util::*;
use std::process::Command;

/// The subcommands `tokenkeeper --help` lists (without clap's own `help`).
fn subcommands() -> Vec<String> {
    let help = run_bin(&["--help"]);
    assert_eq!(help.code, 0, "{help:?}");
    let list: Vec<String> = help
        .stdout
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|name| name != "help")
        .collect();
    assert!(list.iter().any(|c| c == "status"), "{help:?}");
    list
}

/// What bash's programmable completion offers for `words` (the last one being completed), using
/// the script `tokenkeeper completions bash` prints.
fn bash_complete(words: &[&str]) -> Vec<String> {
    let script = run_bin(&["completions", "bash"]);
    assert_eq!(script.code, 0, "{script:?}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenkeeper.bash");
    std::fs::write(&path, &script.stdout).unwrap();
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    // What bash does on TAB: the function `complete -p` names, called with the command, the
    // current word and the one before, with COMP_WORDS/COMP_CWORD/COMP_LINE/COMP_POINT set.
    let driver = format!(
        r#"source "$1" || exit 10
spec=$(complete -p tokenkeeper) || exit 11
func=$(sed -n 's/.* -F \([^ ]*\) .*/\1/p' <<<"$spec")
[ -n "$func" ] || exit 12
COMP_WORDS=({words})
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="${{COMP_WORDS[*]}}"
COMP_POINT=${{#COMP_LINE}}
"$func" tokenkeeper "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}"
"#,
        words = quoted.join(" ")
    );
    let run = Run::from(
        Command::new("bash")
            .args(["--norc", "--noprofile", "-c", &driver, "bash"])
            .arg(&path)
            .output()
            .expect("run bash"),
    );
    assert_eq!(run.code, 0, "{run:?}");
    run.stdout.lines().map(|l| l.trim().to_string()).collect()
}

#[test]
fn bash_completion_offers_the_subcommands_and_their_values() {
    if !have_program("bash") {
        eprintln!("skipped: no bash");
        return;
    }
    let offered = bash_complete(&["tokenkeeper", "st"]);
    assert_eq!(offered, ["status"]);
    let all = bash_complete(&["tokenkeeper", ""]);
    for command in subcommands() {
        assert!(all.contains(&command), "{command} not in {all:?}");
    }
    let shells = bash_complete(&["tokenkeeper", "completions", ""]);
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        assert!(
            shells.iter().any(|s| s == shell),
            "{shell} not in {shells:?}"
        );
    }
    let flags = bash_complete(&["tokenkeeper", "refresh", "--fo"]);
    assert_eq!(flags, ["--force"]);
}

#[test]
fn completions_are_printed_for_every_shell_and_refused_for_others() {
    for (shell, marker) in [
        ("bash", "complete -F _tokenkeeper"),
        ("zsh", "#compdef tokenkeeper"),
        ("fish", "complete -c tokenkeeper"),
        ("powershell", "Register-ArgumentCompleter"),
        ("elvish", "edit:completion:arg-completer[tokenkeeper]"),
    ] {
        let run = run_bin(&["completions", shell]);
        assert_eq!(run.code, 0, "{shell}: {run:?}");
        assert!(
            run.stdout.contains(marker),
            "{shell}: no {marker:?} in\n{}",
            run.stdout
        );
        assert!(run.stdout.contains("status"), "{shell}");
    }
    let run = run_bin(&["completions", "tcsh"]);
    assert_eq!(run.code, 2, "{run:?}");
}

#[test]
fn man_page_is_roff_that_names_every_subcommand() {
    let run = run_bin(&["man"]);
    assert_eq!(run.code, 0, "{run:?}");
    let page = run.stdout;
    let title = page
        .lines()
        .find(|l| l.starts_with(".TH "))
        .unwrap_or_else(|| panic!("no .TH line in\n{page}"));
    assert!(title.starts_with(".TH tokenkeeper 1 "), "{title}");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH SUBCOMMANDS"] {
        assert!(
            page.lines().any(|l| l == section),
            "no {section} in\n{page}"
        );
    }
    for command in subcommands() {
        assert!(
            page.contains(&format!("tokenkeeper\\-{command}(1)")),
            "{command} missing in\n{page}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokenkeeper.1");
    std::fs::write(&file, &page).unwrap();
    if let Some(warnings) = groff_warnings(&file) {
        assert_eq!(warnings, "", "groff warns");
        let text = Run::from(
            Command::new("groff")
                .args(["-man", "-Tutf8", "-P-c", "-P-b", "-P-u"])
                .arg(&file)
                .output()
                .expect("run groff"),
        );
        assert_eq!(text.code, 0, "{text:?}");
        for heading in ["NAME", "SYNOPSIS", "OPTIONS", "SUBCOMMANDS"] {
            assert!(text.stdout.lines().any(|l| l == heading), "{}", text.stdout);
        }
        for command in subcommands() {
            assert!(
                text.stdout.contains(&format!("tokenkeeper-{command}(1)")),
                "{command} missing in\n{}",
                text.stdout
            );
        }
    } else {
        eprintln!("groff is not installed: the man page was not rendered");
    }
}

/// groff's warnings about `page` (every warning on, no output): none for valid roff. `None`
/// when groff is not installed.
fn groff_warnings(page: &std::path::Path) -> Option<String> {
    if !have_program("groff") {
        return None;
    }
    let check = Run::from(
        Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(page)
            .output()
            .expect("run groff"),
    );
    assert_eq!(check.code, 0, "{check:?}");
    Some(check.stderr)
}

#[test]
fn man_dir_writes_a_page_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    let run = run_bin(&["man", "--dir", pages.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    // The main page is the one `tokenkeeper man` prints.
    let main = std::fs::read_to_string(pages.join("tokenkeeper.1")).unwrap();
    assert_eq!(main, run_bin(&["man"]).stdout);
    let mut expected = vec!["tokenkeeper.1".to_string()];
    expected.extend(subcommands().iter().map(|c| format!("tokenkeeper-{c}.1")));
    expected.push("tokenkeeper-service-print.1".into());
    for name in &expected {
        let path = pages.join(name);
        let page = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let title = name.trim_end_matches(".1");
        assert!(
            page.contains(&format!(".TH {title} 1 ")),
            "{name} has no title:\n{page}"
        );
        if let Some(warnings) = groff_warnings(&path) {
            assert_eq!(warnings, "", "{name}");
        }
    }
    let refresh = std::fs::read_to_string(pages.join("tokenkeeper-refresh.1")).unwrap();
    assert!(refresh.contains("\\-\\-force"), "{refresh}");
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let run = run_bin(&["--version"]);
    assert_eq!(run.code, 0, "{run:?}");
    let line = run.stdout.trim_end();
    let rest = line
        .strip_prefix(&format!("tokenkeeper {} (", env!("CARGO_PKG_VERSION")))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{line:?}"));
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        // Built from this checkout: the hash of HEAD and its commit date.
        Some(hash) => {
            let date = git(&["log", "-1", "--format=%cs", "HEAD"]).unwrap();
            assert_eq!(rest, format!("{hash} {date}"));
        }
        None => assert_eq!(rest, "unknown"),
    }
    assert_eq!(run_bin(&["-V"]).stdout, run.stdout);
}

/// Files under `dir` (recursively) whose name ends with one of `exts`.
fn files_ending(dir: &std::path::Path, exts: &[&str], out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_ending(&path, exts, out);
        } else if exts.iter().any(|e| path.to_string_lossy().ends_with(e)) {
            out.push(path);
        }
    }
}

/// What the code and the docs point a reader at is in the repository: every `*.md` path a
/// comment or a message names (from the top, e.g. `docs/troubleshooting.md`) and every relative
/// link of the Markdown pages (from the page's folder) leads to a file here, so no comment cites
/// notes that live elsewhere and no message sends a person to a page that is not shipped.
#[test]
fn every_page_the_code_and_docs_point_at_is_in_the_repository() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut code = vec![root.join("build.rs")];
    for dir in ["src", "tests", "crates", "benches", "scripts", ".ci"] {
        files_ending(&root.join(dir), &[".rs", ""], &mut code);
    }
    code.retain(|p| !p.to_string_lossy().ends_with(".md"));
    let top = std::fs::canonicalize(root).unwrap();
    // A file of this repository: one outside it (`../…`) does not count, even if it exists.
    let here = |path: &std::path::Path| {
        std::fs::canonicalize(path).is_ok_and(|real| real.starts_with(&top) && real.exists())
    };
    let mut missing = Vec::new();
    let mut named = 0;
    for file in &code {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let path_char = |c: char| c.is_ascii_alphanumeric() || "_./-".contains(c);
        for word in text.split(|c: char| !path_char(c)) {
            let stem = word.trim_end_matches(".md");
            if !word.ends_with(".md") || stem.is_empty() || stem.ends_with('/') {
                continue;
            }
            named += 1;
            if !here(&root.join(word)) && !here(&file.parent().unwrap().join(word)) {
                missing.push(format!("{}: {word}", file.display()));
            }
        }
    }
    let mut pages = Vec::new();
    files_ending(&root.join("docs"), &[".md"], &mut pages);
    for page in [
        "README.md",
        "CONTRIBUTING.md",
        "SECURITY.md",
        "CHANGELOG.md",
    ] {
        pages.push(root.join(page));
    }
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for link in text.split("](").skip(1) {
            let target = link.split(')').next().unwrap_or_default();
            let target = target.split('#').next().unwrap_or_default().trim();
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            named += 1;
            if !here(&page.parent().unwrap().join(target)) {
                missing.push(format!("{}: {target}", page.display()));
            }
        }
    }
    assert!(named > 20, "the scan found almost nothing: {named}");
    assert!(missing.is_empty(), "pointed at but not here: {missing:#?}");
}
