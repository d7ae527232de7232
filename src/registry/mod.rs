//! The `ArtifactRegistry` controller and the Zot registry it runs for `spec.zot`: Zot's
//! configuration, the checks of the spec, the registry's accounts, the Kubernetes objects that
//! run it, and the check of an external registry for `spec.external`. [`access`] gives the
//! other controllers a client and the tenancy rule of a registry.

pub mod access;
pub mod controller;
pub mod credentials;
pub mod external;
pub mod managed;
pub mod resources;
pub mod validation;
pub mod zot;
