//! `tokenkeeper completions SHELL` and `tokenkeeper man`: the shell completion scripts and the
//! man page, generated from the clap definitions of this very binary, so they never disagree
//! with it. Packagers run these at build time (scripts/package-deb); anyone can run them to
//! install by hand.

use super::output;
use clap::CommandFactory;

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<u8, tokenkeeper::Error> {
    let mut script = Vec::new();
    clap_complete::generate(
        shell,
        &mut super::Cli::command(),
        "tokenkeeper",
        &mut script,
    );
    output::stdout(&String::from_utf8_lossy(&script));
    Ok(0)
}

/// Writes the man page (roff, section 1) to stdout.
pub fn man() -> Result<u8, tokenkeeper::Error> {
    let mut page = Vec::new();
    clap_mangen::Man::new(super::Cli::command())
        .render(&mut page)
        .map_err(|e| tokenkeeper::Error::Io {
            what: "cannot render the man page",
            path: "tokenkeeper.1".into(),
            source: e,
        })?;
    output::stdout(&String::from_utf8_lossy(&page));
    Ok(0)
}
