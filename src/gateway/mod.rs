//! The gateway: pre-signed, expiring URLs that let a pod's loader fetch one artifact with a
//! plain HTTP GET, and the HTTP listener that verifies them and streams the blob out of the
//! registry with the registry's read-only account. The same listener serves the upload API, which
//! streams a JAR from an authorized client into the registry of an upload-source AppArtifact.

pub mod keys;
pub mod range;
pub mod registry_clients;
pub mod server;
pub mod signing;
pub mod upload;
