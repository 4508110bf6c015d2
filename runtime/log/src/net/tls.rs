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
//!
//! The node's QUIC endpoint secrets ([`endpoint_config`]) are derived from its private
//! key, so a node restarted with the same key answers the packets edges still send on
//! their old connections with stateless resets those edges recognise, and they
//! reconnect at once instead of waiting for the idle timeout:
//!
//! ```text
//!  key.pem ──HKDF-SHA256──┬─ "stateless reset key" ─▶ reset key (HMAC-SHA256)
//!                         └─ "connection id key" ───▶ connection id key
//!  edge ──packet on its old connection id──▶ restarted node: id valid, connection unknown
//!  edge ◀──stateless reset, HMAC(reset key, id)── the edge knows the token: lost, reconnect
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::HashedConnectionIdGenerator;
use ring::{hkdf, hmac};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::ALPN;

/// Streams a peer may have open at once on one connection (QUIC's default is 100; an
/// edge opens one per subscription group, so allow more).
const MAX_CONCURRENT_STREAMS: u32 = 4096;
/// How long a link may be silent before the client counts it as dead (the default of
/// `LogClientConfig::idle_timeout`). Keep-alives go every second, so only a dead or
/// unreachable peer reaches it. A node killed and restarted on its address with its
/// key is noticed sooner, at the next packet: it answers with a stateless reset (see
/// the module docs).
pub const LINK_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often an idle client pings so the connection outlives the idle timeout (more
/// often when the idle timeout is shorter than three of these).
const CLIENT_KEEP_ALIVE: Duration = Duration::from_secs(1);

/// The shortest client idle timeout; shorter ones are raised to it.
const MIN_IDLE_TIMEOUT: Duration = Duration::from_millis(100);

/// HKDF salt of the endpoint secrets derived from a node's private key: keeps them
/// apart from anything else that key is or will be used for.
const ENDPOINT_SECRETS_SALT: &[u8] = b"tern-link/1 endpoint secrets";
/// HKDF info of the stateless reset key.
const RESET_KEY_INFO: &[u8] = b"stateless reset key";
/// HKDF info of the connection id generator's key.
const CID_KEY_INFO: &[u8] = b"connection id key";

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

/// The quinn endpoint configuration of a node whose private key is `files.key`.
///
/// Its stateless reset key and the key its connection ids are checked with are
/// derived from that private key (HKDF-SHA256, labels of their own), so they survive
/// a restart without a file of their own: a restarted node recognises the connection
/// ids of its previous run (quinn answers packets with ids it did not issue with
/// nothing) and answers them with the reset tokens it handed out then (quinn sends
/// `HMAC(reset key, connection id)`). A new key (a new certificate) means new
/// secrets: edges of the old run then notice the restart only on their idle timeout.
/// Nodes sharing one key share these secrets too, so each could reset the other's
/// connections, but only for packets that reach the wrong node.
pub fn endpoint_config(files: &TlsFiles) -> Result<quinn::EndpointConfig, TlsError> {
    let key = load_key(&files.key)?;
    let (reset_key, cid_key) = endpoint_secrets(key.secret_der());
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
    config.cid_generator(move || Box::new(HashedConnectionIdGenerator::from_key(cid_key)));
    Ok(config)
}

/// A length for HKDF output that is no key type of its own.
struct OutputLen(usize);

impl hkdf::KeyType for OutputLen {
    fn len(&self) -> usize {
        self.0
    }
}

/// The stateless reset key and the connection id key derived from `secret`.
fn endpoint_secrets(secret: &[u8]) -> (hmac::Key, u64) {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, ENDPOINT_SECRETS_SALT).extract(secret);
    let reset_key = prk
        .expand(&[RESET_KEY_INFO], hmac::HMAC_SHA256)
        .expect("32 bytes are within HKDF-SHA256's output limit")
        .into();
    let mut cid_key = [0u8; 8];
    prk.expand(&[CID_KEY_INFO], OutputLen(cid_key.len()))
        .and_then(|okm| okm.fill(&mut cid_key))
        .expect("8 bytes are within HKDF-SHA256's output limit");
    (reset_key, u64::from_le_bytes(cid_key))
}

/// The quinn client configuration trusting the certificates in `trust_pem` (the
/// node's self-signed certificate or the CA that signed it), with the idle timeout
/// [`LINK_IDLE_TIMEOUT`].
pub fn client_config(trust_pem: &Path) -> Result<quinn::ClientConfig, TlsError> {
    client_config_with(trust_pem, LINK_IDLE_TIMEOUT)
}

/// [`client_config`] with the connection counted as dead after `idle_timeout` of
/// silence (at least 100 ms; the node's own idle timeout applies too, whichever is
/// shorter wins).
pub fn client_config_with(
    trust_pem: &Path,
    idle_timeout: Duration,
) -> Result<quinn::ClientConfig, TlsError> {
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
    let idle_timeout = idle_timeout.max(MIN_IDLE_TIMEOUT);
    transport.keep_alive_interval(Some(CLIENT_KEEP_ALIVE.min(idle_timeout / 3)));
    // Beyond QUIC's range (2^62 ms) means no idle timeout at all.
    transport.max_idle_timeout(idle_timeout.try_into().ok());
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
    fn endpoint_secrets_follow_the_key_across_restarts() {
        use quinn::ConnectionIdGenerator as _;

        let secrets = |dir: &Path| {
            let files = ensure_self_signed(dir, "").expect("certificate").files;
            endpoint_config(&files).expect("endpoint config");
            let key = load_key(&files.key).expect("key");
            let (reset, cid) = endpoint_secrets(key.secret_der());
            (
                hmac::sign(&reset, b"a connection id").as_ref().to_vec(),
                cid,
            )
        };
        let first = tempfile::tempdir().expect("tempdir");
        let other = tempfile::tempdir().expect("tempdir");
        let (token, cid_key) = secrets(first.path());
        // A restart reads the same key again: the same tokens, the same valid ids.
        assert_eq!(secrets(first.path()), (token.clone(), cid_key));
        let cid = HashedConnectionIdGenerator::from_key(cid_key).generate_cid();
        assert!(
            HashedConnectionIdGenerator::from_key(secrets(first.path()).1)
                .validate(&cid)
                .is_ok()
        );
        // Another node's key gives other secrets.
        let (other_token, other_cid_key) = secrets(other.path());
        assert_ne!(other_token, token);
        assert_ne!(other_cid_key, cid_key);
    }

    #[test]
    fn garbage_pem_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cert.pem");
        fs::write(&path, "not a certificate").expect("write");
        assert!(matches!(client_config(&path), Err(TlsError::Pem { .. })));
    }
}
