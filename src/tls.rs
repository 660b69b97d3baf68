//! The only module that imports rustls: the client TLS configurations of the Redis and
//! Postgres connections. One crypto provider (ring) serves both.
//!
//! Redis: a TLS URL (`rediss://`, `rediss-cluster://`) verifies the server's chain and
//! name against `--redis-ca-file`, or the system's roots without it.
//!
//! Postgres: `sslmode` as libpq reads it.
//! - `disable`: plaintext. `prefer` (the default): TLS when the server offers it, without
//!   verification, else plaintext.
//! - `require`: TLS or no connection; the certificate is not verified, unless a root
//!   certificate is named, which makes it `verify-ca` (libpq does the same).
//! - `verify-ca`: the chain must lead to `sslrootcert`. `verify-full`: also the host name.
//! - `sslrootcert` defaults to `~/.postgresql/root.crt`; `sslrootcert=system` means the
//!   system's roots.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

pub use rustls::ClientConfig as TlsClientConfig;
pub use tokio_postgres_rustls::MakeRustlsConnect;

/// A TLS setting that cannot be used; the message names the setting.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct TlsError {
    pub setting: &'static str,
    pub reason: String,
}

/// How a Postgres connection uses TLS (`sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl std::str::FromStr for SslMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // libpq's `allow` tries plaintext first; hotchan never picks plaintext over
            // TLS by itself, so it is refused rather than guessed.
            other => {
                return Err(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                ))
            }
        })
    }
}

impl SslMode {
    /// Whether the connection must be TLS (no plaintext fallback).
    pub fn requires_tls(self) -> bool {
        !matches!(self, SslMode::Disable | SslMode::Prefer)
    }
}

/// Where the roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    System,
    File(PathBuf),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The roots a Redis TLS URL is verified against: `--redis-ca-file`, or the system's.
pub fn redis_client_config(ca_file: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let roots = match ca_file {
        Some(path) => Roots::File(path.to_owned()),
        None => Roots::System,
    };
    let store = root_store(&roots, "--redis-ca-file / HOTCHAN_REDIS_CA_FILE")?;
    Ok(builder()?
        .with_root_certificates(store)
        .with_no_client_auth())
}

/// The Postgres connector for `mode`, with `root_cert` as the URL's `sslrootcert` (or
/// `None` for libpq's default file).
pub fn postgres_connector(
    mode: SslMode,
    root_cert: Option<&Roots>,
) -> Result<MakeRustlsConnect, TlsError> {
    const SETTING: &str = "sslrootcert in --database-url";
    let default_file =
        || std::env::var_os("HOME").map(|home| Path::new(&home).join(".postgresql/root.crt"));
    // libpq: `require` with a root certificate present verifies like `verify-ca`.
    let mode = match (mode, root_cert) {
        (SslMode::Require, Some(_)) => SslMode::VerifyCa,
        (SslMode::Require, None) if default_file().is_some_and(|f| f.exists()) => SslMode::VerifyCa,
        (mode, _) => mode,
    };
    let config = match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => builder()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth(),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = match root_cert {
                Some(roots) => roots.clone(),
                None => Roots::File(default_file().ok_or_else(|| TlsError {
                    setting: SETTING,
                    reason: format!(
                        "sslmode={mode:?} needs a root certificate and HOME is not set"
                    ),
                })?),
            };
            let store = Arc::new(root_store(&roots, SETTING)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(store, provider())
                .build()
                .map_err(|e| TlsError {
                    setting: SETTING,
                    reason: e.to_string(),
                })?;
            let verifier: Arc<dyn ServerCertVerifier> = if mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            };
            builder()?
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, TlsError> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError {
            setting: "TLS",
            reason: e.to_string(),
        })
}

fn root_store(roots: &Roots, setting: &'static str) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    let fail = |reason: String| TlsError { setting, reason };
    match roots {
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system bundle may hold certificates rustls cannot parse; skip those.
                let _ = store.add(cert);
            }
            if store.is_empty() {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_owned(), |e| e.to_string());
                return Err(fail(format!(
                    "no usable system root certificates ({why}); install ca-certificates or name a CA file"
                )));
            }
        }
        Roots::File(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail(format!("{} is not a PEM bundle: {e}", path.display())))?;
            for cert in certs {
                store
                    .add(cert)
                    .map_err(|e| fail(format!("{}: {e}", path.display())))?;
            }
            if store.is_empty() {
                return Err(fail(format!("{} holds no certificate", path.display())));
            }
        }
    }
    Ok(store)
}

/// `prefer` and `require` without a root: TLS that proves nothing about the server (as in
/// libpq), but whose handshake signatures are still checked.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must verify; the host name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_reads_libpq_names_and_refuses_others() {
        assert_eq!("verify-full".parse::<SslMode>(), Ok(SslMode::VerifyFull));
        assert_eq!("disable".parse::<SslMode>(), Ok(SslMode::Disable));
        assert!("allow".parse::<SslMode>().is_err());
        assert!(SslMode::Require.requires_tls() && !SslMode::Prefer.requires_tls());
    }

    #[test]
    fn a_missing_ca_file_names_the_setting() {
        let e = redis_client_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(e.to_string().contains("--redis-ca-file"), "{e}");
        let e = postgres_connector(
            SslMode::VerifyFull,
            Some(&Roots::File("/nonexistent/root.crt".into())),
        )
        .err()
        .expect("refused");
        assert!(e.to_string().contains("sslrootcert"), "{e}");
    }
}
