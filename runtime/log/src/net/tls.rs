//! TLS for the link: a self-signed development certificate and the rustls/quinn
//! configurations built from PEM files.
//!
//! On first start a log node creates `<data_dir>/tls/cert.pem` and `key.pem` (the key
//! readable by its owner only) and reuses them afterwards, so edges can be pointed at
//! one stable certificate file. Everything uses rustls' ring provider and TLS 1.3 (QUIC
//! requires it); both sides insist on the ALPN name [`ALPN`](super::ALPN).
//!
//! The client trusts exactly the certificate file it is given (the node's self-signed
//! certificate, or a cluster CA). Client certificates (mutual TLS) are not done yet.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::ALPN;

/// Streams a peer may have open at once on one connection (QUIC's default is 100; an
/// edge opens one per subscription group, so allow more).
const MAX_CONCURRENT_STREAMS: u32 = 4096;
/// How long a link may be silent before it counts as dead. Keep-alives go every
/// [`CLIENT_KEEP_ALIVE`], so only a dead or unreachable peer reaches it; a killed log
/// node is noticed within this time and the edge reconnects.
pub const LINK_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How often an idle client pings so the connection outlives the idle timeout.
const CLIENT_KEEP_ALIVE: Duration = Duration::from_secs(1);

/// Why TLS material could not be created, loaded or used. Every variant is an
/// operator problem (files, permissions) except [`TlsError::Generate`], which is ours.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate exists but its key does not; refusing to replace a certificate
    /// that clients may already trust.
    #[error("{cert} exists but {key} does not; restore the key or remove both to create new ones")]
    KeyMissing {
        /// The certificate found.
        cert: PathBuf,
        /// The key not found.
        key: PathBuf,
    },
    /// A PEM file holds nothing usable.
    #[error("{path}: {detail}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// The certificate could not be generated (a bug or a broken crypto provider).
    #[error("could not generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate, key or settings.
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The TLS configuration cannot carry QUIC (no TLS 1.3 cipher suite).
    #[error("TLS configuration unusable for QUIC: {0}")]
    Quic(String),
}

/// Where a node's certificate and private key live (PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The development certificate's files under `data_dir`: `tls/cert.pem`, `tls/key.pem`.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        let dir = data_dir.join("tls");
        Self {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }
}

/// The outcome of [`ensure_self_signed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelfSigned {
    /// Where the certificate and key are.
    pub files: TlsFiles,
    /// True when they were created by this call, false when existing ones were reused.
    pub created: bool,
}

/// Returns the development certificate under `data_dir`, creating it on first use.
///
/// A new certificate names `localhost`, `127.0.0.1`, `::1` and `listen_host` (a name or
/// an address; unspecified addresses such as `0.0.0.0` are skipped). The key file is
/// created with mode 0600. Existing files are reused as they are, whatever names they
/// hold. A leftover key without a certificate (a crash between the two writes) is
/// replaced; a certificate without its key is an error.
pub fn ensure_self_signed(data_dir: &Path, listen_host: &str) -> Result<SelfSigned, TlsError> {
    let files = TlsFiles::in_data_dir(data_dir);
    if files.cert.exists() {
        if !files.key.exists() {
            return Err(TlsError::KeyMissing {
                cert: files.cert,
                key: files.key,
            });
        }
        return Ok(SelfSigned {
            files,
            created: false,
        });
    }
    let dir = files.cert.parent().unwrap_or(data_dir);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| TlsError::Io {
            path: dir.to_path_buf(),
            source,
        })?;

    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    let host = listen_host.trim_start_matches('[').trim_end_matches(']');
    let unspecified = host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified());
    if !host.is_empty() && !unspecified && !names.iter().any(|n| n == host) {
        names.push(host.to_string());
    }
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tern log node (self-signed)");
    let cert = params.self_signed(&key)?;

    // Key first: a crash in between leaves a key without a certificate, which the next
    // start replaces; never a certificate whose key is gone.
    write_file(&files.key, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&files.cert, cert.pem().as_bytes(), 0o644)?;
    Ok(SelfSigned {
        files,
        created: true,
    })
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename) with `mode`.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("pem.tmp");
    let io = |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    };
    // A stale temporary file may carry wrong permissions; start afresh.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |e: rustls::pki_types::pem::Error| TlsError::Pem {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let bytes = fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            detail: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The quinn server configuration for a node presenting `files`.
pub fn server_config(files: &TlsFiles) -> Result<quinn::ServerConfig, TlsError> {
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(MAX_CONCURRENT_STREAMS.into());
    transport.max_concurrent_uni_streams(0u32.into());
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// The quinn client configuration trusting the certificates in `trust_pem` (the
/// node's self-signed certificate or the CA that signed it).
pub fn client_config(trust_pem: &Path) -> Result<quinn::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(trust_pem)? {
        roots.add(cert)?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(CLIENT_KEEP_ALIVE));
    transport.max_idle_timeout(LINK_IDLE_TIMEOUT.try_into().ok());
    transport.max_concurrent_bidi_streams(0u32.into());
    transport.max_concurrent_uni_streams(0u32.into());
    config.transport_config(Arc::new(transport));
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn certificate_is_created_once_with_a_private_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = ensure_self_signed(dir.path(), "log.example").expect("created");
        assert!(first.created);
        let mode = fs::metadata(&first.files.key)
            .expect("key exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let cert = fs::read(&first.files.cert).expect("cert");
        let again = ensure_self_signed(dir.path(), "other").expect("reused");
        assert!(!again.created);
        assert_eq!(fs::read(&again.files.cert).expect("cert"), cert);
        server_config(&again.files).expect("server config");
        client_config(&again.files.cert).expect("client config");
    }

    #[test]
    fn certificate_without_key_is_refused_and_key_without_certificate_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = ensure_self_signed(dir.path(), "0.0.0.0")
            .expect("created")
            .files;
        fs::remove_file(&files.cert).expect("remove cert");
        assert!(
            ensure_self_signed(dir.path(), "")
                .expect("replaced")
                .created
        );
        fs::remove_file(&files.key).expect("remove key");
        assert!(matches!(
            ensure_self_signed(dir.path(), ""),
            Err(TlsError::KeyMissing { .. })
        ));
    }

    #[test]
    fn garbage_pem_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cert.pem");
        fs::write(&path, "not a certificate").expect("write");
        assert!(matches!(client_config(&path), Err(TlsError::Pem { .. })));
    }
}
