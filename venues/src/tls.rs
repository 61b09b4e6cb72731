//! TLS set-up shared by every outgoing connection (Binance WebSockets and REST).
//!
//! rustls needs a process-wide crypto provider; tokio-tungstenite and reqwest are both built
//! without one (so that only one is compiled in), and Keel installs ring's here before the first
//! connection.

use std::sync::Once;

static INSTALL: Once = Once::new();

/// Installs ring as rustls's process-wide crypto provider. Idempotent and cheap after the first
/// call.
pub fn install_crypto_provider() {
    INSTALL.call_once(|| {
        // Fails only when another provider was installed first, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_provider_is_installed_and_a_second_call_is_harmless() {
        super::install_crypto_provider();
        super::install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
