//! Which providers' logins the fleet shares, and how: the shape itself is the provider's own fact
//! ([`Provider::copy_shape`](crate::provider::Provider::copy_shape), the JSON work in
//! `provider/shape.rs`); a provider joins the fleet by answering it.

pub use crate::provider::shape::Shape;

/// The shape of a built-in provider's login, if fleet mode can share it.
pub fn of(provider: &str) -> Option<Shape> {
    crate::provider::builtin(provider)
        .filter(|p| p.in_fleet())
        .and_then(|p| p.copy_shape())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_providers_that_name_a_shape_have_one() {
        assert_eq!(of("claude"), Some(crate::provider::claude::COPY_SHAPE));
        assert_eq!(of("codex"), None);
        assert_eq!(of("gemini"), None);
        assert_eq!(of("mytool"), None);
    }
}
