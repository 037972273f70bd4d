//! Names the commit this binary is built from, for `tokenkeeper --version`:
//! `TOKENKEEPER_BUILD_COMMIT` is `<short hash> <commit date>` (e.g. `2613c18 2026-12-07`), or
//! `unknown` outside a git checkout of tokenkeeper (a crates.io download) or without git.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-changed=build.rs");
    // A build from a package (`cargo package`'s check, a crates.io download) has this file, a
    // checkout does not. `cargo package` checks its package in the workspace's target folder,
    // where cargo takes its build-script output for the checkout's own: naming the file makes
    // the checkout's next build, which lacks it, run this script again rather than keep
    // `unknown`. (Relative: cargo looks for it in whichever package it builds.)
    if dir.join(".cargo_vcs_info.json").exists() {
        println!("cargo:rerun-if-changed=.cargo_vcs_info.json");
    }
    let commit = commit(&dir).unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=TOKENKEEPER_BUILD_COMMIT={commit}");
}

/// `git` run in `dir`, its trimmed stdout when it succeeds.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_string())
}

fn commit(dir: &Path) -> Option<String> {
    // Only tokenkeeper's own checkout: a crate unpacked inside some other repository (vendored)
    // must not name that repository's commit.
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    if std::fs::canonicalize(top).ok()? != std::fs::canonicalize(dir).ok()? {
        return None;
    }
    let hash = git(dir, &["rev-parse", "--short", "HEAD"])?;
    let date = git(dir, &["log", "-1", "--format=%cs", "HEAD"])?;
    // Build again when HEAD moves: a checkout changes HEAD, a commit changes the branch's ref
    // (a loose file, or packed-refs). `--git-path` finds them in a worktree too, where `.git`
    // is a file. Only files that exist: cargo reruns every time for a missing one.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = git(dir, &["rev-parse", "--git-path", &name]) {
            let path = dir.join(path);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    Some(format!("{hash} {date}"))
}
