//! `tokenkeeper completions SHELL` and `tokenkeeper man`: the shell completion scripts and the
//! man pages, generated from the clap definitions of this very binary, so they never disagree
//! with it. Packagers run these at build time (scripts/package-deb); anyone can run them to
//! install by hand.

use super::output;
use clap::CommandFactory;
use std::path::Path;

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<u8, crate::Error> {
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

/// Writes tokenkeeper(1) to stdout, or with `dir` every page into that folder: tokenkeeper.1,
/// which lists the commands, and tokenkeeper-<command>.1 for each (nested ones too), which
/// show their options.
pub fn man(dir: Option<&Path>) -> Result<u8, crate::Error> {
    // `help` is clap's, not a command of ours with a page of its own.
    let command = super::Cli::command().disable_help_subcommand(true);
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| crate::Error::Io {
            what: "cannot write the man pages",
            path,
            source,
        }
    };
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(failed(dir))?;
            clap_mangen::generate_to(command, dir).map_err(failed(dir))?;
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .map_err(failed(Path::new("tokenkeeper.1")))?;
            output::stdout(&String::from_utf8_lossy(&page));
        }
    }
    Ok(0)
}
