//! Talking to a token endpoint: the one HTTP client, the refresh request and the classification of
//! every answer (tokens, transient failure, rejection), the backoff between attempts, and the JWT
//! claims some providers put their expiry in, and the cap on how long a token is believed to live.

pub mod backoff;
pub mod endpoint;
pub mod jwt;
pub mod lifetime;
pub(crate) mod request;
