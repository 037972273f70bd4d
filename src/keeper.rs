//! One login and how it is kept: the entry point for every caller (each CLI command, both
//! daemon modes). It owns the choice "this machine's file or the fleet's store?", so a caller of
//! the library cannot bypass fleet mode by reaching for the local refresh, and it is the one
//! place a [`Job`] is assembled.

use crate::error::{Error, ErrorKind};
#[cfg(feature = "fleet")]
pub use crate::fleet::Fleet;
#[cfg(feature = "fleet")]
use crate::fleet::refresh::{self as fleet_refresh, Shared};
use crate::login::Login;
use crate::oauth::endpoint::TokenEndpoint;
use crate::provider::Provider;
use crate::refresh::{self, Action, Job, Outcome, Want};
use crate::settings::Settings;
use crate::storage::credentials_file::{Check, CredentialsFile};
use crate::storage::state::StateDir;
use std::sync::Arc;
use std::time::Duration;

/// A fleet's store: none can exist in a build without the `fleet` feature, so every branch
/// that would use one is statically unreachable.
#[cfg(not(feature = "fleet"))]
#[derive(Debug)]
pub enum Fleet {}

/// The retry budget of a refresh made with a usable token in hand (see
/// [`Keeper::login_for_use`]).
const USE_RETRY_TOTAL: Duration = Duration::from_secs(10);

pub struct Keeper {
    pub provider: Arc<dyn Provider>,
    pub file: CredentialsFile,
    pub settings: Settings,
    pub state: StateDir,
    pub endpoint: TokenEndpoint,
    /// The fleet's store, when one is configured and keeps this provider's login.
    pub fleet: Option<Arc<Fleet>>,
}

/// What `status` shows of a fleet login: never anything in a build without fleet mode.
#[cfg(not(feature = "fleet"))]
pub enum StoreReport {}

/// What `status` shows of a fleet login: the store's row, or why it could not be read.
#[cfg(feature = "fleet")]
pub struct StoreReport {
    pub store: String,
    /// This machine as the fleet knows it: `host (id 1a2b3c4d)`, or the bare name before the
    /// installation has an id.
    pub machine: String,
    pub shared: Result<Shared, Error>,
}

impl Keeper {
    /// A login kept in its file, or in `fleet`'s store when the fleet can share this provider's
    /// logins.
    pub fn new(
        provider: Arc<dyn Provider>,
        file: CredentialsFile,
        settings: Settings,
        state: StateDir,
        fleet: Option<Arc<Fleet>>,
    ) -> Keeper {
        let fleet = fleet.filter(|_| provider.copy_shape().is_some());
        Keeper {
            endpoint: TokenEndpoint::new(&settings.token_url, &settings.user_agent),
            provider,
            file,
            settings,
            state,
            fleet,
        }
    }

    /// What the refresh protocol needs, borrowed from this login.
    pub fn job(&self) -> Job<'_> {
        Job {
            provider: self.provider.as_ref(),
            file: &self.file,
            settings: &self.settings,
            endpoint: &self.endpoint,
            state: &self.state,
        }
    }

    /// Refreshes unless the login answers `want` as it is: through the fleet's store when there
    /// is one, else in this machine's file.
    pub fn refresh_if_due(&self, want: Want) -> Result<Outcome, Error> {
        self.refresh_with(&self.settings, None, want)
    }

    /// For a caller about to use the access token right away (`exec`, `token`): refreshes when
    /// less than `min_ttl` is left, as [`Keeper::refresh_if_due`]; but when the refresh cannot be
    /// done now (the endpoint unavailable, a lock busy) and the token in hand still has at least
    /// `usable_floor` left, goes on with it and returns the failure beside it, as a warning to
    /// show. With a usable token in hand the refresh gets a short retry budget: a run should not
    /// wait a minute for a refresh it can do without.
    pub fn login_for_use(&self, min_ttl: Duration) -> Result<(Outcome, Option<Error>), Error> {
        let want = Want::at_least(min_ttl);
        let floor = self.settings.usable_floor;
        let usable = |login: &Login| {
            !login.access_token.is_empty()
                && login.remaining_ms(crate::login::now_ms()) >= crate::login::duration_ms(floor)
        };
        let in_hand = self.read_login().ok().filter(usable);
        let result = match in_hand {
            Some(login) => {
                let mut settings = self.settings.clone();
                settings.retry.total = settings.retry.total.min(USE_RETRY_TOTAL);
                self.refresh_with(&settings, Some(login), want)
            }
            None => self.refresh_if_due(want),
        };
        match result {
            Ok(outcome) => Ok((outcome, None)),
            Err(e) if matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::LockTimeout) => {
                match self.read_login().ok().filter(usable) {
                    Some(login) => Ok((
                        Outcome {
                            action: Action::Deferred,
                            login,
                            attempts: 0,
                        },
                        Some(e),
                    )),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// [`Keeper::refresh_if_due`] with other settings (a shorter retry budget), and the login
    /// just read by [`Keeper::read_login`] when the caller has it (not read again; a fleet's
    /// refresh reads its own).
    fn refresh_with(
        &self,
        settings: &Settings,
        in_hand: Option<Login>,
        want: Want,
    ) -> Result<Outcome, Error> {
        let job = Job {
            settings,
            ..self.job()
        };
        match &self.fleet {
            #[cfg(feature = "fleet")]
            Some(fleet) => fleet_refresh::ensure_fresh(fleet, &job, want),
            #[cfg(not(feature = "fleet"))]
            Some(fleet) => match **fleet {},
            None => {
                // Read once: the login as it is now decides between a copy and a refresh.
                let login = match in_hand {
                    Some(login) => login,
                    None => self.read_login()?,
                };
                if self.is_copy(&login) {
                    self.use_copy(login, want.force)
                } else {
                    refresh::refresh_if_due(&job, Some(login), want)
                }
            }
        }
    }

    /// Whether `login` is an access-only copy kept by an owner elsewhere (`[[mirror]]`, a fleet
    /// machine's file read without the fleet): an access token and no refresh token, in a
    /// provider that has copies. A wiped login has no access token either, and stays dead.
    fn is_copy(&self, login: &Login) -> bool {
        self.provider.copy_shape().is_some()
            && login.refresh_token.is_empty()
            && !login.access_token.is_empty()
    }

    /// A copy is used while its token lasts and never refreshed: that is its owner's job, and a
    /// copy holds nothing to refresh with. An expired (or refused, `force`) token is the end.
    fn use_copy(&self, login: Login, force: bool) -> Result<Outcome, Error> {
        let now = crate::login::now_ms();
        if !force && login.remaining_ms(now) > 0 {
            return Ok(Outcome {
                action: Action::NotDue,
                login,
                attempts: 0,
            });
        }
        let why = if force {
            "Its access token was refused".to_string()
        } else {
            format!(
                "Its access token expired at {}",
                crate::login::format_time(login.expires_at)
            )
        };
        Err(Error::AccessOnlyCopy {
            path: self.file.path().to_path_buf(),
            provider: self.file.owner().name,
            relogin: self.file.owner().relogin,
            why,
        })
    }

    /// The login as this machine's file holds it now. A fleet machine's file has no refresh
    /// token by design; it counts as ended only when its access token is gone.
    pub fn read_login(&self) -> Result<Login, Error> {
        if self.fleet.is_none() {
            return refresh::read_login_unless(&self.job(), Check::Login, |l| self.is_copy(l));
        }
        let login = refresh::parse_current(self.provider.as_ref(), &self.file)?;
        if login.access_token.is_empty() {
            return Err(Error::Dead {
                path: self.file.path().to_path_buf(),
                reason: "it holds no access token".into(),
                relogin: self.file.owner().relogin,
            });
        }
        Ok(login)
    }

    /// The store's row for `status` (no lock, no write); None when the login is not a fleet's.
    #[cfg(not(feature = "fleet"))]
    pub fn inspect_store(&self) -> Option<StoreReport> {
        None
    }

    /// The store's row for `status` (no lock, no write); None when the login is not a fleet's.
    #[cfg(feature = "fleet")]
    pub fn inspect_store(&self) -> Option<StoreReport> {
        let fleet = self.fleet.as_ref()?;
        let job = self.job();
        let shared = fleet_refresh::connect(fleet)
            .and_then(|mut store| fleet_refresh::fetch(&mut store, fleet, &job));
        let id = self.state.existing_machine_id().unwrap_or_default();
        Some(StoreReport {
            store: fleet.shown.clone(),
            machine: crate::fleet::shown_machine(&fleet.machine, &id),
            shared,
        })
    }
}
