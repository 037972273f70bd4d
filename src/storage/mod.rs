//! Where logins and tokenkeeper's own records live: the credentials file (atomic writes that keep
//! every unknown field, the mode and the link), the macOS Keychain, the choice between the two
//! (a login's "place"), and tokenkeeper's state folder (records, recovery files).

pub mod atomic;
pub mod bounded;
pub mod credentials_file;
pub mod json_doc;
pub mod keychain;
pub mod place;
pub mod state;
