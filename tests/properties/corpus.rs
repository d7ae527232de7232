//! Seed inputs and proptest settings shared by the property targets.

use std::path::{Path, PathBuf};

use proptest::test_runner::{Config, FileFailurePersistence};
use serde::de::DeserializeOwned;

/// Returns the directory of `target`'s seed inputs.
fn directory(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(target)
}

/// Returns the proptest settings of `target`: the case count from `PROPTEST_CASES` (proptest's
/// default of 256 otherwise) and failures recorded beside the target's seeds.
pub fn config(target: &str) -> Config {
    // Proptest wants a `&'static str` and resolves it against the working directory, which
    // cargo sets to the package root for tests.
    let path: &'static str = format!("tests/fuzz-corpus/{target}/proptest-regressions.txt").leak();
    Config {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(path))),
        ..Config::default()
    }
}

/// Parses every `*.json` seed of `target`, sorted by file name, and returns it with its name.
///
/// # Panics
///
/// When the directory contains no seed or a seed does not parse: a corpus that silently stopped
/// being replayed would test nothing.
pub fn seeds<T: DeserializeOwned>(target: &str) -> Vec<(String, T)> {
    let directory = directory(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&directory)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", directory.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no seed in {}", directory.display());
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let case = serde_json::from_str(&text)
                .unwrap_or_else(|error| panic!("seed {} does not parse: {error}", path.display()));
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                case,
            )
        })
        .collect()
}
