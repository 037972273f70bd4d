//! Writing an access-only copy of a login into a CLI's credentials file, for both kinds of copy:
//! a `[[mirror]]` (the consumer's file on this machine) and a fleet machine's own file. The file
//! is looked at without any lock first, so a copy that is already current is not touched and no
//! lock file is made in its folder (a daemon may watch it); only a copy that must change is
//! written, under our own lock and the CLI's own save lock (whatever their kind), after a second
//! look under them.

use crate::error::Error;
use crate::lock::own_lock::{self, OwnLock};
use crate::lock::take::Waits;
use crate::provider::Provider;
use crate::storage::credentials_file::{CredentialsFile, WriteGuard};
use serde_json::Value;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How a copy is written: the lock waits, and the error for a folder we cannot write in.
pub struct CopyWrite<'a> {
    pub provider: &'a dyn Provider,
    pub file: &'a CredentialsFile,
    /// The longest each lock is waited for.
    pub lock_wait: Duration,
    /// Our own lock on the file's folder, when the caller holds it already.
    pub own: Option<&'a OwnLock>,
    pub not_writable: &'a dyn Fn(PathBuf, io::Error) -> Error,
}

impl CopyWrite<'_> {
    /// Writes what `decide` says the file should become (it is given the file's document, or
    /// None when there is no file; it answers None when the file is right as it is, or an error
    /// when the file must not be written). Returns whether the file was written.
    pub fn write<E: From<Error>>(
        &self,
        decide: impl Fn(Option<&Value>) -> Result<Option<Value>, E>,
    ) -> Result<bool, E> {
        let look = || -> Result<Option<Value>, E> {
            match self.file.read() {
                Ok(snap) => decide(Some(&snap.doc)),
                Err(Error::Missing { .. }) => decide(None),
                Err(e) => Err(e.into()),
            }
        };
        if look()?.is_none() {
            return Ok(false);
        }
        let deadline = Instant::now() + self.lock_wait;
        let waits = Waits {
            timeout: self.lock_wait,
            not_writable: self.not_writable,
        };
        let taken;
        let own = match self.own {
            Some(own) => own,
            None => {
                let sidecar = own_lock::sidecar_path(&self.file.folder());
                taken = waits.own(&sidecar, deadline, &mut || {
                    tracing::info!(
                        "waiting for another tokenkeeper writing {}",
                        self.file.path().display()
                    );
                })?;
                &taken
            }
        };
        let save_lock = waits.save_lock(self.provider.save_lock(self.file), deadline, own)?;
        let Some(doc) = look()? else {
            return Ok(false);
        };
        let guard = WriteGuard::new(&save_lock);
        self.file
            .write(&doc, &guard)
            .map_err(|e| (self.not_writable)(self.file.path().to_path_buf(), e))?;
        Ok(true)
    }
}
