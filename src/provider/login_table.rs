//! A `[[login]]` table as the config file holds it: where another tool keeps its OAuth login
//! (JSON pointers into its file) and what its token request looks like. The generic provider is
//! built from it (`generic.rs`); the config file only reads it.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One `[[login]]` table: any OAuth login kept in a JSON file (see `provider/generic.rs`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginTable {
    /// What `--provider` calls it, and how status and alerts name it.
    pub name: String,
    pub credentials: PathBuf,
    /// JSON pointers (RFC 6901) to the tokens and the expiry.
    pub access_token: String,
    pub refresh_token: String,
    pub expires_at: Option<String>,
    /// `ms`, `s`, `rfc3339` or `jwt`.
    pub expiry_unit: String,
    /// `json` (default) or `form`.
    pub body: Option<String>,
    #[serde(default)]
    pub extra_fields: RequestFields,
    #[serde(default)]
    pub headers: RequestFields,
    /// The command that logs in again, for messages.
    pub login_command: Option<String>,
    /// The variable that hands the tool only the access token (`exec --inject env`), if any.
    pub env: Option<String>,
    pub token_url: String,
    pub client_id: String,
    /// A [`Secret`](crate::secret::Secret), so that no debug print of the config shows it.
    #[serde(default, with = "crate::secret::exposed::option")]
    pub client_secret: Option<crate::secret::Secret>,
    pub scope: Option<String>,
    pub user_agent: Option<String>,
    pub min_ttl: Option<String>,
    pub request_timeout: Option<String>,
    pub retry_total: Option<String>,
    pub lock_timeout: Option<String>,
    /// Send the refresh token over plain `http://` to a host that is not this machine.
    pub allow_http: Option<bool>,
    /// `exec` and `token` go on with the access token in hand, when a refresh cannot be done,
    /// as long as it has at least this much left.
    pub usable_floor: Option<String>,
}

/// Names and values a token request carries (`extra_fields`, `headers`). A value may be a
/// secret (an API key header, an assertion), so a debug print shows the names alone.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct RequestFields(pub BTreeMap<String, String>);

impl std::ops::Deref for RequestFields {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for RequestFields {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<'a> IntoIterator for &'a RequestFields {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl std::fmt::Debug for RequestFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, crate::secret::REDACTED)))
            .finish()
    }
}
