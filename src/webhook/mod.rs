//! The mutating admission webhook.

pub mod certs;
pub mod tls_server;
