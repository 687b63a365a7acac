//! TLS for the signalling and API ports: certificates read from PEM files (OME's `<TLS>`), served
//! through a resolver whose certificate is swapped without a restart.
//!
//! A [`Certificate`] holds the key and chain being served; [`Certificate::reload`] reads the
//! files again and swaps them in only if they load (a key that does not belong to the
//! certificate, a half-written file: the old one stays). It is reloaded when the files change
//! ([`watch`]: their identity, size and modification time, polled every [`POLL_INTERVAL`]) and on
//! OME's `POST /v1/vhosts:reloadAllCertificates`. A connection keeps the certificate it was
//! opened with; only new handshakes see the new one.

use crate::config::{Config, ConfigError, TlsFiles};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

/// How often the certificate files are looked at.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// The file holds no `CERTIFICATE` (or no private key) PEM block, or a malformed one.
    #[error("{}: no {what} in PEM form{}", path.display(), detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Pem { path: PathBuf, what: &'static str, detail: Option<String> },
    /// The key is of a kind rustls cannot sign with, the certificate is not DER, or the key
    /// does not belong to the certificate.
    #[error("{} with {}: {source}", cert.display(), key.display())]
    Unusable { cert: PathBuf, key: PathBuf, source: rustls::Error },
}

/// A certificate being served, swapped whole on reload.
#[derive(Debug)]
pub struct Certificate {
    files: TlsFiles,
    served: RwLock<Arc<CertifiedKey>>,
    /// The files' stamp when they were last read (whether they loaded or not).
    seen: Mutex<Stamp>,
}

/// What tells that a file changed: its identity (a renewal may point a symbolic link at a new
/// file), size and modification time; `None` for a file that cannot be looked at.
type Stamp = Vec<Option<(u64, u64, u64, SystemTime)>>;

impl Certificate {
    /// Loads `files`.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let seen = stamp(&files);
        let key = read(&files)?;
        Ok(Self { files, served: RwLock::new(Arc::new(key)), seen: Mutex::new(seen) })
    }

    /// Reads the files again and serves them from the next handshake on; on an error the
    /// certificate served stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let mut seen = self.seen.lock().expect("stamp lock");
        *seen = stamp(&self.files);
        let key = read(&self.files)?;
        *self.served.write().expect("certificate lock") = Arc::new(key);
        Ok(())
    }

    /// [`Self::reload`] if the files changed since they were last read; `None` if they did not.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        if *self.seen.lock().expect("stamp lock") == stamp(&self.files) {
            return None;
        }
        Some(self.reload())
    }

    /// The certificate chain served now, leaf first.
    #[cfg(test)]
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.served.read().expect("certificate lock").cert.clone()
    }

    /// The path of its certificate file, for logs.
    pub fn path(&self) -> &Path {
        &self.files.cert
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.served.read().expect("certificate lock").clone())
    }
}

/// The crypto every listener uses: rustls's ring provider.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the chain (`<CertPath>` then `<ChainCertPath>`) and the key, and checks they belong together.
fn read(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let mut chain = certificates(&files.cert)?;
    if let Some(extra) = &files.chain {
        chain.extend(certificates(extra)?);
    }
    let key = private_key(&files.key)?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|source| TlsError::Unusable { cert: files.cert.clone(), key: files.key.clone(), source })
}

fn contents(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |detail: Option<String>| TlsError::Pem { path: path.to_owned(), what: "certificate", detail };
    let chain = CertificateDer::pem_slice_iter(&contents(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(Some(e.to_string())))?;
    if chain.is_empty() {
        return Err(pem_error(None));
    }
    Ok(chain)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&contents(path)?).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        what: "private key",
        detail: (!matches!(e, rustls::pki_types::pem::Error::NoItemsFound)).then(|| e.to_string()),
    })
}

fn stamp(files: &TlsFiles) -> Stamp {
    [Some(&files.cert), Some(&files.key), files.chain.as_ref()]
        .into_iter()
        .flatten()
        .map(|path| std::fs::metadata(path).ok().and_then(|m| Some((m.dev(), m.ino(), m.len(), m.modified().ok()?))))
        .collect()
}

/// A TLS acceptor serving `certificate`, HTTP/1.1 only (hyper serves HTTP/1 here).
pub fn acceptor(certificate: Arc<Certificate>) -> tokio_rustls::TlsAcceptor {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// Every certificate the host serves: the virtual host's (signalling) and the API's.
#[derive(Debug, Clone, Default)]
pub struct Certificates {
    /// For the signalling `<TLSPort>`.
    pub signalling: Option<Arc<Certificate>>,
    /// For the API's `<TLSPort>`.
    pub api: Option<Arc<Certificate>>,
}

impl Certificates {
    /// Loads the certificates `config` names; an error points at the `<TLS>` element.
    pub fn load(config: &Config) -> Result<Self, ConfigError> {
        let load = |files: Option<&TlsFiles>| {
            files
                .map(|f| Certificate::load(f.clone()).map(Arc::new).map_err(|e| config.error_at(Some(f.offset), format!("TLS: {e}"))))
                .transpose()
        };
        Ok(Self { signalling: load(config.tls.as_ref())?, api: load(config.api.as_ref().and_then(|a| a.tls.as_ref()))? })
    }

    fn all(&self) -> impl Iterator<Item = &Arc<Certificate>> {
        self.signalling.iter().chain(&self.api)
    }

    /// Reloads every certificate (OME's `reloadAllCertificates`); each that fails keeps its old
    /// one, and the first error is returned.
    pub fn reload_all(&self) -> Result<(), TlsError> {
        let mut first = None;
        for certificate in self.all() {
            match certificate.reload() {
                Ok(()) => tracing::info!(cert = %certificate.path().display(), "certificate reloaded"),
                Err(e) => {
                    tracing::warn!("certificate not reloaded, the old one stays: {e}");
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Reloads each certificate whose files changed, every [`POLL_INTERVAL`], forever.
pub async fn watch(certificates: Certificates) {
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for certificate in certificates.all() {
            match certificate.reload_if_changed() {
                None => {}
                Some(Ok(())) => tracing::info!(cert = %certificate.path().display(), "certificate files changed: reloaded"),
                Some(Err(e)) => tracing::warn!("certificate files changed but do not load, the old certificate stays: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    /// A self-signed certificate for `name`: its PEM, its key's PEM and its DER.
    fn issue(name: &str) -> (String, String, CertificateDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()]).unwrap().self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }

    fn folder() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("host-tls-test-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn files(dir: &Path) -> TlsFiles {
        TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem"), chain: None, offset: 0 }
    }

    fn write(files: &TlsFiles, (cert, key, _): &(String, String, CertificateDer<'static>)) {
        put(&files.cert, cert);
        put(&files.key, key);
    }

    /// Writes `path` in place with a modification time of its own: two writes within the file
    /// system's clock tick would otherwise look alike.
    fn put(path: &Path, contents: &str) {
        static TICK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        std::fs::write(path, contents).unwrap();
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(TICK.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        std::fs::File::options().write(true).open(path).unwrap().set_modified(time).unwrap();
    }

    fn served(certificate: &Certificate) -> CertificateDer<'static> {
        certificate.chain()[0].clone()
    }

    #[test]
    fn changed_files_are_served_from_the_next_handshake_and_bad_ones_keep_the_old() {
        let dir = folder();
        let files = files(&dir);
        let first = issue("first.test");
        write(&files, &first);
        let certificate = Certificate::load(files.clone()).unwrap();
        assert_eq!(served(&certificate), first.2);
        assert!(certificate.reload_if_changed().is_none(), "unchanged files are not read again");

        // A renewal written in place.
        let second = issue("second-certificate.test");
        write(&files, &second);
        assert!(matches!(certificate.reload_if_changed(), Some(Ok(()))));
        assert_eq!(served(&certificate), second.2);

        // A half-written renewal: the new certificate with the old key. Refused, logged by the
        // caller, and not retried until the files change again.
        let third = issue("third-certificate-name.test");
        put(&files.cert, &third.0);
        assert!(matches!(certificate.reload_if_changed(), Some(Err(TlsError::Unusable { .. }))));
        assert_eq!(served(&certificate), second.2, "the old certificate stays");
        assert!(certificate.reload_if_changed().is_none());
        put(&files.key, &third.1);
        assert!(matches!(certificate.reload_if_changed(), Some(Ok(()))));
        assert_eq!(served(&certificate), third.2);

        // Not PEM at all.
        put(&files.cert, "garbage");
        assert!(matches!(certificate.reload(), Err(TlsError::Pem { what: "certificate", .. })));
        assert_eq!(served(&certificate), third.2);
    }

    #[test]
    fn the_resolver_hands_out_the_current_certificate() {
        let dir = folder();
        let files = files(&dir);
        write(&files, &issue("a.test"));
        let certificate = Arc::new(Certificate::load(files.clone()).unwrap());
        let before = certificate.served.read().unwrap().clone();
        let next = issue("b.test");
        write(&files, &next);
        certificate.reload().unwrap();
        let after = certificate.served.read().unwrap().clone();
        assert_eq!(after.cert[0], next.2);
        assert_ne!(before.cert[0], after.cert[0], "a handshake holding the old one keeps it; new ones get the new one");
    }

    #[test]
    fn load_errors_say_which_file_and_what() {
        let dir = folder();
        let mut files = files(&dir);
        let missing = Certificate::load(files.clone()).unwrap_err();
        assert!(matches!(&missing, TlsError::Read { path, .. } if *path == files.cert), "{missing}");
        assert!(missing.to_string().contains("cert.pem"), "{missing}");

        let (cert, key, _) = issue("c.test");
        std::fs::write(&files.cert, &key).unwrap();
        std::fs::write(&files.key, &key).unwrap();
        let err = Certificate::load(files.clone()).unwrap_err();
        assert!(matches!(err, TlsError::Pem { what: "certificate", detail: None, .. }), "{err}");

        std::fs::write(&files.cert, &cert).unwrap();
        std::fs::write(&files.key, &cert).unwrap();
        let err = Certificate::load(files.clone()).unwrap_err();
        assert!(matches!(err, TlsError::Pem { what: "private key", .. }), "{err}");

        // The chain file is read after the certificate; a CA certificate there is fine.
        std::fs::write(&files.key, &key).unwrap();
        let (intermediate, _, intermediate_der) = issue("intermediate.test");
        files.chain = Some(dir.join("chain.pem"));
        std::fs::write(files.chain.as_ref().unwrap(), &intermediate).unwrap();
        let certificate = Certificate::load(files).unwrap();
        assert_eq!(certificate.chain()[1], intermediate_der, "leaf first, then the chain file's");
    }
}
