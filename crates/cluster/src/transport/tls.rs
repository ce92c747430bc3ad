//! rustls client configuration: Mozilla's roots plus an optional extra CA.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The extra CA file could not be read.
    #[error("cannot read ca_file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The extra CA file holds no usable certificate.
    #[error("ca_file {path} holds no usable PEM certificate: {detail}")]
    Pem {
        /// The file.
        path: String,
        /// What was wrong.
        detail: String,
    },
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Config(String),
}

/// A client configuration trusting the webpki roots and every certificate in `ca_file`.
/// Uses the `ring` provider, which builds without a C toolchain dance.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| TlsError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|err| TlsError::Pem {
                path: shown.clone(),
                detail: err.to_string(),
            })?;
            roots.add(cert).map_err(|err| TlsError::Pem {
                path: shown.clone(),
                detail: err.to_string(),
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(TlsError::Pem {
                path: shown,
                detail: "no CERTIFICATE block".into(),
            });
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::Config(err.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::{TlsError, client_config};

    #[test]
    fn default_roots_load() {
        assert!(client_config(None).is_ok());
    }

    #[test]
    fn bad_ca_files_are_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("sk-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let missing = dir.join("missing.pem");
        let err = client_config(Some(&missing)).expect_err("missing file");
        assert!(matches!(err, TlsError::Read { .. }));
        assert!(err.to_string().contains("missing.pem"));
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate").expect("written");
        assert!(matches!(
            client_config(Some(&empty)),
            Err(TlsError::Pem { .. })
        ));
    }
}
