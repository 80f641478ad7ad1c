//! MQTT over TLS (`[gateway.tls]`): the certificate chain and private key read from PEM files
//! into a rustls server configuration. The front relay ([`crate::front`]) terminates TLS and
//! relays the plain MQTT inside to rumqttd, so TLS sessions are authenticated, counted and
//! reported like plain ones.

use std::fs::File;
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The TLS listener of embedded mode, e.g. `[gateway.tls]` `cert = "/etc/polis/mqtt.crt"`
/// `key = "/etc/polis/mqtt.key"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Address of the MQTT-over-TLS listener.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// PEM file with the server certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
    /// How long a connection may take to complete its TLS handshake before it is closed.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:8883".parse().expect("valid address")
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

impl TlsConfig {
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsConfig {
        TlsConfig {
            listen: default_listen(),
            cert: cert.into(),
            key: key.into(),
            handshake_timeout: default_handshake_timeout(),
        }
    }

    /// Reads the certificate chain and key; every error names the file and what was expected.
    pub(crate) fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let chain = read_chain(&self.cert)?;
        let key = read_key(&self.key)?;
        let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|source| TlsError::Mismatch {
                cert: self.cert.clone(),
                key: self.key.clone(),
                source,
            })?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {key} {}: {source}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "gateway.tls.cert {} holds no certificate: expected PEM blocks \"-----BEGIN CERTIFICATE-----\", the server's first",
        .0.display()
    )]
    NoCertificate(PathBuf),
    #[error(
        "gateway.tls.key {} holds no private key: expected one PEM block \"-----BEGIN PRIVATE KEY-----\" (PKCS#8), \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\"",
        .0.display()
    )]
    NoKey(PathBuf),
    #[error(
        "gateway.tls.cert {} and gateway.tls.key {} do not make a usable server identity: {source}",
        cert.display(),
        key.display()
    )]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        source: tokio_rustls::rustls::Error,
    },
}

fn open(key: &'static str, path: &Path) -> Result<BufReader<File>, TlsError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| TlsError::Read {
            key,
            path: path.to_path_buf(),
            source,
        })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = rustls_pemfile::certs(&mut open("gateway.tls.cert", path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            key: "gateway.tls.cert",
            path: path.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut open("gateway.tls.key", path)?)
        .map_err(|source| TlsError::Read {
            key: "gateway.tls.key",
            path: path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey(path.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_needs_only_cert_and_key() {
        let config: TlsConfig =
            toml::from_str("cert = \"/etc/polis/mqtt.crt\"\nkey = \"/etc/polis/mqtt.key\"\n")
                .unwrap();
        assert_eq!(
            config,
            TlsConfig::new("/etc/polis/mqtt.crt", "/etc/polis/mqtt.key")
        );
        assert_eq!(config.listen, "127.0.0.1:8883".parse().unwrap());
        let missing = toml::from_str::<TlsConfig>("cert = \"a.crt\"\n")
            .unwrap_err()
            .to_string();
        assert!(missing.contains("missing field `key`"), "{missing}");
    }

    #[test]
    fn unreadable_or_wrong_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsConfig::new(dir.path().join("none.crt"), dir.path().join("none.key"));
        let Err(error) = missing.acceptor() else {
            panic!("no certificate file, yet an acceptor");
        };
        let error = error.to_string();
        assert!(
            error.starts_with("cannot read gateway.tls.cert ") && error.contains("none.crt"),
            "{error}"
        );
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "not a certificate\n").unwrap();
        let not_pem = TlsConfig::new(&text, &text);
        let Err(error) = not_pem.acceptor() else {
            panic!("no PEM, yet an acceptor");
        };
        assert_eq!(
            error.to_string(),
            format!(
                "gateway.tls.cert {} holds no certificate: expected PEM blocks \"-----BEGIN CERTIFICATE-----\", the server's first",
                text.display()
            )
        );
    }
}
