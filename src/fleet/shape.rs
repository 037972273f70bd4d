//! Which providers' logins the fleet shares, and how: every provider that names the shape of an
//! access-only copy of its login ([`Facts::copy_shape`](crate::provider::Facts::copy_shape), the JSON work in `provider/shape.rs`)
//! joins the fleet by that alone: Claude Code, Codex CLI and Gemini CLI. A `[[login]]` table
//! names none, so such a login stays each machine's own.

use crate::provider::Provider;
pub use crate::provider::shape::Shape;

/// The shape of `provider`'s login, if fleet mode can share it.
pub fn of(provider: &dyn Provider) -> Option<Shape> {
    provider.facts().copy_shape
}

/// The providers whose logins the fleet shares, for messages: `claude, codex and gemini`.
pub fn shared_names() -> String {
    let names: Vec<&str> = crate::provider::all()
        .filter(|p| of(p.as_ref()).is_some())
        .map(|p| p.facts().owner.provider)
        .collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        Some((last, _)) => (*last).to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{claude, codex, gemini};

    #[test]
    fn every_built_in_provider_is_shared_in_its_own_shape_and_a_login_table_is_not() {
        assert_eq!(of(&claude::Claude), Some(claude::COPY_SHAPE));
        assert_eq!(of(&codex::Codex), Some(codex::COPY_SHAPE));
        assert_eq!(of(&gemini::Gemini::default()), Some(gemini::COPY_SHAPE));
        assert_eq!(shared_names(), "claude, codex and gemini");
        let table = crate::provider::login_table::LoginTable {
            name: "mytool".into(),
            credentials: "/h/.mytool/auth.json".into(),
            access_token: "/tokens/access".into(),
            refresh_token: "/tokens/refresh".into(),
            expiry_unit: "jwt".into(),
            token_url: "https://auth.example.test/oauth/token".into(),
            client_id: "client-1".into(),
            ..Default::default()
        };
        let generic = crate::provider::generic::Generic::build(
            &table,
            std::path::Path::new("/etc/tk/config.toml"),
        )
        .unwrap();
        assert_eq!(of(&generic), None);
    }
}
