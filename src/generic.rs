//! Any OAuth login kept in a JSON file, described by a `[[login]]` table of the config file.

use crate::config::LoginTable;
use crate::error::Error;
use std::path::Path;

#[derive(Debug)]
pub struct Generic {}

impl Generic {
    pub fn new(
        _table: &LoginTable,
        config_path: &Path,
    ) -> Result<std::sync::Arc<dyn crate::provider::Provider>, Error> {
        Err(Error::Config {
            path: config_path.to_path_buf(),
            problem: "[[login]] is not built yet".into(),
        })
    }
}
