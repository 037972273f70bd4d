//! What the unit tests share: a throw-away folder with a path, a file or folders in it, a JSON
//! document from text, an environment of a few variables.

use std::path::PathBuf;

/// A throw-away folder (removed when dropped: keep it) and the path `name` in it.
pub fn temp_path(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temp folder");
    let path = dir.path().join(name);
    (dir, path)
}

/// A throw-away folder and the file `name` in it, holding `text`.
pub fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let (dir, path) = temp_path(name);
    std::fs::write(&path, text).expect("a file");
    (dir, path)
}

/// A throw-away folder and the folders `names` made in it (with their parents).
pub fn temp_folders<const N: usize>(names: [&str; N]) -> (tempfile::TempDir, [PathBuf; N]) {
    let dir = tempfile::tempdir().expect("a temp folder");
    let paths = names.map(|name| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(&path).expect("a folder");
        path
    });
    (dir, paths)
}

/// `text` parsed as JSON.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).expect("JSON")
}

/// An environment that holds `pairs` alone, read as the functions that take `env` read one.
pub fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}
