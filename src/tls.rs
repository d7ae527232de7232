//! TLS set-up shared by every client and server in the process.

/// Installs ring as the process-wide rustls crypto provider.
///
/// kube and reqwest are both built without a provider of their own, so this must run before the
/// first TLS connection. Calling it twice is harmless.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed, which is the state we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
