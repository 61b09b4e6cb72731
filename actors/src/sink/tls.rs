//! TLS for Keel's Postgres connections (the sink's, and the cluster's system of record): rustls (ring, like every other connection Keel
//! makes) with libpq's `sslmode=verify-full` semantics. The server's chain must lead to a CA in
//! `sink.postgres.ca_file`, and its certificate must name the host the URL names (a DNS name, or
//! an IP address in an IP SAN). There is no mode that encrypts without verifying: libpq's
//! `require` (and `verify-ca`) are refused at start-up rather than silently weakened or
//! strengthened.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::SinkError;

/// How Keel talks to a Postgres server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgTls {
    /// Plain TCP (`sslmode=disable`): Postgres on this host, or through a tunnel.
    Disable,
    /// TLS, with the chain checked against the CAs of this PEM file and the host name checked
    /// against the certificate (`sslmode=verify-full`).
    VerifyFull {
        /// PEM file of the CA certificate(s) to trust.
        ca_file: std::path::PathBuf,
    },
}

/// The CA certificates of a PEM file as a root store.
///
/// # Errors
/// [`SinkError::Config`] when the file cannot be read, holds no certificate, or holds one that
/// rustls cannot use as a trust anchor.
pub fn roots(ca_file: &Path) -> Result<RootCertStore, SinkError> {
    let shown = ca_file.display();
    let bytes = std::fs::read(ca_file)
        .map_err(|err| SinkError::Config(format!("the CA file {shown} cannot be read: {err}")))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|err| SinkError::Config(format!("the CA file {shown} is not valid PEM: {err}")))?;
    if certs.is_empty() {
        return Err(SinkError::Config(format!("the CA file {shown} holds no CERTIFICATE block")));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|err| {
            SinkError::Config(format!(
                "the CA file {shown}: a certificate cannot be trusted: {err}"
            ))
        })?;
    }
    Ok(roots)
}

/// The connector for `verify-full`: rustls's own verifier (chain, validity, host name) over the
/// CAs of `ca_file`, TLS 1.2 and 1.3, no client certificate.
///
/// # Errors
/// [`SinkError::Config`] as for [`roots`].
pub fn connector(ca_file: &Path) -> Result<MakeRustlsConnect, SinkError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| SinkError::Config(format!("TLS set-up: {err}")))?
        .with_root_certificates(roots(ca_file)?)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_that_is_missing_empty_or_not_a_certificate_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = roots(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.pem") && err.contains("cannot be read"), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let err = roots(&empty).unwrap_err().to_string();
        assert!(err.contains("holds no CERTIFICATE"), "{err}");

        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(matches!(roots(&broken), Err(SinkError::Config(_))));

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .unwrap();
        let err = roots(&garbage).unwrap_err().to_string();
        assert!(err.contains("cannot be trusted"), "{err}");
    }
}
