//! This machine's copy of the fleet's login: the shared login written into the CLI's own file
//! (or, for Claude Code on macOS, wherever Claude keeps it) in the provider's shape without its
//! refresh token (Claude Code's `refreshToken` and Codex CLI's `tokens.refresh_token` empty,
//! Gemini CLI's `refresh_token` left out, a `[[login]]` table's `refresh_token` pointer holding
//! "") and every other key kept, so the CLI uses the access
//! token and never refreshes. The write happens under the CLI's own write lock, whatever its kind
//! (Claude Code's lock folder, Codex CLI's two `flock`s, none for Gemini CLI or a `[[login]]`
//! table's tool, which may rewrite its file in place and so gets an atomic rename). A file holding a login of the machine's own is
//! never overwritten.

use crate::error::{Error, FleetError};
use crate::fleet::login::{Shared, name_and_shape};
use crate::fleet::shape::Shape;
use crate::lock::own_lock::OwnLock;
use crate::mirror::write::CopyWrite;
use crate::refresh::Job;
use crate::secret::fingerprint;
use serde_json::Value;

/// Writes the shared login into this machine's file without its refresh token, keeping every
/// other key, creating the file (0600, and its folder, 0700) where there is none; under our own
/// lock (`own`, when the caller holds it already) and the CLI's write lock. Returns whether the
/// file changed. A file holding a login of its own (a refresh token the fleet never had) is
/// left alone, with an error that says what to do.
pub fn project(job: &Job<'_>, shared: &Shared, own: Option<&OwnLock>) -> Result<bool, Error> {
    let (_, shape) = name_and_shape(job)?;
    let folder = job.file.folder();
    let not_writable = |path: std::path::PathBuf, source: std::io::Error| Error::Inaccessible {
        action: "write the fleet's access token to",
        path,
        source,
        hint: format!(
            "tokenkeeper needs to write in {}; make the folder writable by you",
            folder.display()
        ),
    };
    let decide = |local: Option<&Value>| projection_of(job, shape, shared, local);
    // Looked at first, so that a current file makes no folder either.
    if !folder.exists() {
        if decide(None)?.is_none() {
            return Ok(false);
        }
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&folder)
            .map_err(|e| not_writable(folder.clone(), e))?;
    }
    let write = CopyWrite {
        provider: job.provider,
        file: job.file,
        lock_wait: job.settings.lock_timeout,
        own,
        not_writable: &not_writable,
    };
    write.write(decide)
}

/// What this machine's file should become, or None when it holds that already. A file holding
/// a login of its own (a refresh token the fleet never had) is an error.
fn projection_of(
    job: &Job<'_>,
    shape: &Shape,
    shared: &Shared,
    local: Option<&Value>,
) -> Result<Option<Value>, Error> {
    if let Some(doc) = local
        && !is_fleets(shape.refresh_token(doc), shared)
    {
        let owner = job.file.owner();
        return Err(Error::Fleet(FleetError::LocalFile(format!(
            "{} holds a {} login of its own (a refresh token the fleet never had); tokenkeeper leaves it alone. Make it the fleet's login with `tokenkeeper fleet push`, or remove the file to use the fleet's",
            job.file.path().display(),
            owner.name
        ))));
    }
    let projected = shape.project(local, &shared.payload.login);
    Ok((local != Some(&projected)).then_some(projected))
}

/// Whether a machine's own refresh token (`""` for none) belongs to the fleet's login: empty,
/// the current one, or one the login has spent. Anything else is a login of the machine's own.
pub fn is_fleets(local_refresh: &str, shared: &Shared) -> bool {
    if local_refresh.is_empty() {
        return true;
    }
    let fp = fingerprint(local_refresh);
    fp == shared.login.refresh_token.fingerprint() || shared.payload.spent.contains(&fp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::refresh::tests::shared;

    #[test]
    fn a_machine_file_is_the_fleets_unless_it_holds_a_refresh_token_the_fleet_never_had() {
        let s = shared("r3", 10, &["r1", "r2"], None);
        assert!(is_fleets("", &s));
        assert!(is_fleets("r3", &s), "the current one (right after a push)");
        assert!(is_fleets("r1", &s), "a spent one: an old copy");
        assert!(!is_fleets("mine", &s), "a login of the machine's own");
    }
}
