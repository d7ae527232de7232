//! Property tests of the pure builders and checks that take input an attacker or a tenant
//! controls: URL signing, coordinates and names, the webhook's JSON patch and the Zot config.
//!
//! They stand in for coverage-guided fuzzing, which needs a nightly toolchain that CI does not
//! have. Each target draws `PROPTEST_CASES` random cases (256 by default) and also replays the
//! seed inputs committed under `tests/fuzz-corpus/<target>/`. A failing case that proptest
//! finds is recorded in that directory's `proptest-regressions.txt` and replayed first on the
//! next run, so commit that file together with the fix.

mod properties {
    pub mod coordinates;
    pub mod corpus;
    pub mod patch;
    pub mod signing;
    pub mod zot;
}
