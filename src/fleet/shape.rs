//! Which providers' logins the fleet shares, and how: every provider that names the shape of an
//! access-only copy of its login ([`Provider::copy_shape`](crate::provider::Provider::copy_shape),
//! the JSON work in `provider/shape.rs`) joins the fleet by that alone: Claude Code, Codex CLI,
//! Gemini CLI, and every `[[login]]` table (its shape drawn from its pointers), which each
//! machine of the fleet must hold alike.

use crate::provider::Provider;
pub use crate::provider::shape::Shape;

/// The shape of `provider`'s login, if fleet mode can share it.
pub fn of(provider: &dyn Provider) -> Option<&Shape> {
    provider.copy_shape()
}

/// The logins the fleet shares, for messages: `claude, codex, gemini, or a [[login]] table's
/// name`.
pub fn shared_names() -> String {
    let names: Vec<&str> = crate::provider::all()
        .filter(|p| of(p.as_ref()).is_some())
        .map(|p| p.facts().owner.provider)
        .collect();
    format!("{}, or a [[login]] table's name", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{claude, codex, gemini};

    #[test]
    fn every_provider_is_shared_in_its_own_shape_a_login_table_in_the_one_of_its_pointers() {
        assert_eq!(of(&claude::Claude), Some(&claude::COPY_SHAPE));
        assert_eq!(of(&codex::Codex), Some(&codex::COPY_SHAPE));
        assert_eq!(of(&gemini::Gemini::default()), Some(&gemini::COPY_SHAPE));
        assert_eq!(
            shared_names(),
            "claude, codex, gemini, or a [[login]] table's name"
        );
        let table = crate::provider::login_table::LoginTable {
            name: "mytool".into(),
            credentials: "/h/.mytool/auth.json".into(),
            access_token: "/tokens/access".into(),
            refresh_token: "/tokens/refresh".into(),
            expires_at: Some("/meta/expires".into()),
            expiry_unit: "ms".into(),
            token_url: "https://auth.example.test/oauth/token".into(),
            client_id: "client-1".into(),
            ..Default::default()
        };
        let generic = crate::provider::generic::Generic::build(
            &table,
            std::path::Path::new("/etc/tk/config.toml"),
        )
        .unwrap();
        let shape = of(&generic).expect("a table's login is shared");
        assert_eq!(shape.keys().collect::<Vec<_>>(), ["tokens", "meta"]);
        let owner = crate::testing::json(
            r#"{"tokens":{"access":"a","refresh":"r"},"meta":{"expires":5},"mine":1}"#,
        );
        assert_eq!(shape.refresh_token(&owner), "r");
        assert_eq!(
            serde_json::to_string(&shape.project(None, &shape.extract(&owner))).unwrap(),
            r#"{"tokens":{"access":"a","refresh":""},"meta":{"expires":5}}"#
        );
    }
}
