//! Where a login is kept: its credentials file, or (Claude Code on macOS) the Keychain with the
//! file as fallback. Chosen once per command from the provider and its config table.

use crate::config::ProviderConfig;
use crate::credentials_file::CredentialsFile;
use crate::provider::Provider;
use std::path::PathBuf;

/// The store for `provider`'s login at `path`; an error names the config key to fix.
pub fn open(
    provider: &dyn Provider,
    path: PathBuf,
    table: &ProviderConfig,
    _env: &dyn Fn(&str) -> Option<String>,
) -> Result<CredentialsFile, String> {
    if let Some(store) = &table.store
        && provider.owner().provider != "claude"
    {
        return Err(format!(
            "store = \"{store}\": only [claude] has a store setting; remove it"
        ));
    }
    Ok(CredentialsFile::new(path, provider.owner()).with_layout(provider.layout()))
}
