//! Running a wrapped command (`tokenkeeper exec`): spawning it so it dies with us, watching its
//! output, and recognising the auth failures that mean its login needs a human.

pub mod auth_failure;
pub(crate) mod child;
pub(crate) mod command;
#[cfg(target_os = "linux")]
mod spawn;
