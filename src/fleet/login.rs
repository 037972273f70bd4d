//! A fleet login as the store holds it: what is sealed in a row (the login part of the
//! provider's document, the spent and rejected refresh tokens, the push marker), a row opened,
//! the login's name in the store and its key in the state folder. Shared by the refresh, this
//! machine's copy and the rollback check, none of which owns it.

use crate::error::{Error, FleetError};
use crate::fleet::Fleet;
use crate::fleet::database::Row;
use crate::fleet::shape::{self, Shape};
use crate::login::Login;
use crate::refresh::Job;
use crate::secret::fingerprint;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What is sealed in a row. Its `Debug` leaves out the login, which holds the tokens.
#[derive(Clone, Serialize, Deserialize)]
pub struct Payload {
    /// The login part of the provider's credentials document, refresh token included.
    pub login: Value,
    /// Fingerprints of the refresh tokens this login has spent (the latest last): a machine's
    /// file that holds one of them holds an old copy of the fleet's login, not one of its own.
    #[serde(default)]
    pub spent: Vec<String>,
    /// Fingerprint of a refresh token the server rejected: the login is dead until a push.
    #[serde(default)]
    pub rejected: Option<String>,
    /// The push marker ([`rollback`](crate::fleet::rollback)): set by every push, kept by every
    /// other write; 0 in a login pushed by an earlier version.
    #[serde(default)]
    pub epoch: i64,
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payload")
            .field("login", &crate::secret::REDACTED)
            .field("spent", &self.spent)
            .field("rejected", &self.rejected)
            .field("epoch", &self.epoch)
            .finish()
    }
}

/// A row, opened.
#[derive(Clone, Debug)]
pub struct Shared {
    pub row: Row,
    pub payload: Payload,
    pub login: Login,
}

impl Shared {
    /// The server rejected this login's refresh token.
    pub fn is_dead(&self) -> bool {
        self.login.refresh_token.is_empty()
            || self.payload.rejected.as_deref()
                == Some(self.login.refresh_token.fingerprint().as_str())
    }
}

/// The login's name in the store and its shape. The name is the provider's (`claude`, `codex`,
/// `gemini`, a `[[login]]` table's name): one row per login, and the row a Claude Code login
/// has always had.
pub fn name_and_shape<'a>(job: &Job<'a>) -> Result<(&'static str, &'a Shape), Error> {
    let owner = job.file.owner();
    shape::of(job.provider)
        .map(|s| (owner.provider, s))
        .ok_or_else(|| Error::Fleet(FleetError::Config(format!(
                "the {} login has no access-only form, so fleet mode cannot share it; pass --provider with {}, or remove [store] for this login",
                owner.provider,
                shape::shared_names()
            ))))
}

/// The state-folder key of a fleet login (its recovery file).
pub fn state_key(fleet: &Fleet, name: &str) -> String {
    format!("fleet-{name}-{}", fingerprint(&fleet.shown))
}
