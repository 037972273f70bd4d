//! Integration tests: the real binary against a real loopback OAuth server with single-use,
//! rotating refresh tokens and reuse detection, on real files and real locks.

mod util;

mod adversarial;
mod auth_failures;
mod bad_input;
mod codex;
mod daemon;
// `tokenkeeper demo` exists only with the `demo` feature (on by default).
#[cfg(feature = "demo")]
mod demo;
mod doctor;
mod exec;
mod faults;
// Fleet mode exists only with the `fleet` feature (on by default).
#[cfg(feature = "fleet")]
mod fleet;
mod gemini;
mod generic;
mod keychain;
mod lossless;
mod mirror;
mod packaging;
mod properties;
mod protocol;
mod providers;
mod service;
mod status;
mod tls;
// What a build without a default feature says instead (`cargo test --no-default-features`).
#[cfg(not(all(feature = "fleet", feature = "demo")))]
mod without_features;
