//! The mutating admission webhook.

pub mod certs;
