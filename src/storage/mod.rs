//! Where logins and tokenkeeper's own records live: the credentials file (atomic writes that keep
//! every unknown field, the mode and the link), the macOS Keychain, the choice between the two
//! (a login's "place"), and tokenkeeper's state folder (records, recovery files).

pub(crate) mod atomic;
pub(crate) mod bounded;
pub mod credentials_file;
#[cfg(unix)]
pub(crate) mod folder;
pub(crate) mod json_doc;
pub(crate) mod keychain;
pub(crate) mod place;
pub(crate) mod state;
