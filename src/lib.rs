//! artifact-operator: stores tenants' application JARs as OCI artifacts in a Zot registry and
//! hands pods pre-signed, expiring URLs to fetch them.
//!
//! The library keeps every concept in its own module; the `artifact-operator` binary is a thin
//! command-line front end over it.

pub mod artifact;
pub mod cli;
pub mod cluster;
pub mod conditions;
pub mod crd;
pub mod error;
pub mod gateway;
pub mod leader;
pub mod loader;
pub mod migrate;
pub mod oci;
pub mod reconcile;
pub mod registry;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod webhook;

pub use error::{Error, Result};
