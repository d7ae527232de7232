//! The AppArtifact controller and the sources it reads JARs from: URL downloads guarded
//! against server-side request forgery, ConfigMap and Secret keys, and the content checks that
//! every source passes through while it streams.

pub mod address_policy;
pub mod checks;
pub mod content;
pub mod controller;
pub mod error;
pub mod objects;
pub mod source;
pub mod status;
pub mod sync;
pub mod target;
