//! Talking to a token endpoint: the one HTTP client, the refresh request and the classification of
//! every answer (tokens, transient failure, rejection), the backoff between attempts, and the JWT
//! claims some providers put their expiry in.

pub mod backoff;
pub mod endpoint;
pub mod jwt;
pub(crate) mod request;
