//! What every TLS connection of ours trusts: the platform's verifier alone, or, when a person
//! names a CA file (`[tls] ca_file` in the config file, `TOKENKEEPER_CA_FILE`, `--ca-file`), the
//! platform's roots plus that file's certificates. A corporate proxy that inspects TLS signs with
//! its own CA; `SSL_CERT_FILE` would make that CA the only one trusted on Linux, replacing the
//! system's roots, so tokenkeeper adds it instead. The token endpoint, webhooks and the fleet's
//! PostgreSQL connections all take their roots from [`roots`], so the three trust the same.
//!
//! The CA file is process-wide: it is set once the configuration is read ([`trust`]), again when
//! the daemon re-reads it, and each client built afterwards uses it.

use crate::storage::bounded::read_regular;
use rustls::pki_types::CertificateDer;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

/// Larger than any CA file (a whole system bundle is about 250 KB): a read never runs away.
const MAX_CA_FILE: u64 = 4 << 20;

/// A CA file's certificates, checked when read.
#[derive(Debug)]
pub struct CaFile {
    path: PathBuf,
    certs: Vec<CertificateDer<'static>>,
    /// The platform's roots plus `certs`, loaded on the first connection that needs them.
    roots: OnceLock<Arc<Vec<CertificateDer<'static>>>>,
}

impl CaFile {
    /// Reads the PEM file at `path`; every certificate in it must be one rustls can use as a
    /// root, and there must be one. The error says what is wrong and how to fix it, for a
    /// message that also names where the file was set.
    pub fn read(path: &Path) -> Result<CaFile, String> {
        let bytes = read_regular(path, MAX_CA_FILE)
            .map_err(|e| format!("{e}; give the path of the CA's certificate (a PEM file)"))?;
        Ok(CaFile {
            path: path.to_path_buf(),
            certs: certificates(&bytes)?,
            roots: OnceLock::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many certificates the file holds.
    pub fn len(&self) -> usize {
        self.certs.len()
    }
}

/// The certificates of a PEM text, each checked (private keys and other sections are skipped).
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => {
                let der = CertificateDer::from(c.der().to_vec());
                rustls::RootCertStore::empty()
                    .add(der.clone())
                    .map_err(|e| {
                        format!(
                            "holds a certificate (the {}) that is not a usable CA certificate ({e}); give the PEM file of the CA itself",
                            ordinal(certs.len() + 1)
                        )
                    })?;
                certs.push(der);
            }
            Ok(_) => {}
            Err(e) => {
                return Err(format!(
                    "is not a readable PEM file ({e}); give the CA's certificate in PEM form (-----BEGIN CERTIFICATE-----)"
                ));
            }
        }
    }
    if certs.is_empty() {
        return Err(
            "holds no certificate; give the CA's certificate in PEM form (-----BEGIN CERTIFICATE-----), e.g. converted with `openssl x509 -inform der -in ca.cer -out ca.pem`"
                .into(),
        );
    }
    Ok(certs)
}

fn ordinal(n: usize) -> String {
    match n {
        1 => "first".into(),
        2 => "second".into(),
        3 => "third".into(),
        n => format!("{n}th"),
    }
}

static TRUSTED: RwLock<Option<Arc<CaFile>>> = RwLock::new(None);

/// Makes `ca` (or none) the CA file every connection this process makes from now on trusts,
/// besides the platform's roots.
pub fn trust(ca: Option<CaFile>) {
    *TRUSTED.write().unwrap_or_else(|e| e.into_inner()) = ca.map(Arc::new);
}

/// The CA file in use, if any.
pub fn ca_file() -> Option<Arc<CaFile>> {
    TRUSTED.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The one root store: `None` when no CA file is set (the platform's verifier decides alone),
/// else the platform's roots (as the platform verifier finds them on Linux: the system bundle,
/// or `SSL_CERT_FILE`/`SSL_CERT_DIR`) with the CA file's certificates added.
pub fn roots() -> Option<Arc<Vec<CertificateDer<'static>>>> {
    let ca = ca_file()?;
    Some(Arc::clone(ca.roots.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!("some of the platform's root certificates could not be read: {e}");
        }
        let mut all = found.certs;
        all.extend(ca.certs.iter().cloned());
        Arc::new(all)
    })))
}

/// [`roots`] as ureq takes them, for the token endpoint and webhooks.
pub fn ureq_roots() -> ureq::tls::RootCerts {
    match roots() {
        None => ureq::tls::RootCerts::PlatformVerifier,
        Some(all) => all
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn a_ca_file_is_read_with_every_certificate_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        let two = format!("{}{}", ca_pem(), ca_pem());
        std::fs::write(&path, &two).unwrap();
        let ca = CaFile::read(&path).unwrap();
        assert_eq!((ca.len(), ca.path()), (2, path.as_path()));

        let missing = CaFile::read(&dir.path().join("nope.pem")).unwrap_err();
        assert!(missing.contains("does not exist"), "{missing}");
        let folder = CaFile::read(dir.path()).unwrap_err();
        assert!(folder.contains("a folder"), "{folder}");

        for (text, words) in [
            ("not a certificate\n", "holds no certificate"),
            ("", "holds no certificate"),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "not a usable CA certificate",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
                "not a readable PEM file",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let why = CaFile::read(&path).unwrap_err();
            assert!(why.contains(words), "{text:?}: {why}");
        }
        let broken_second = format!(
            "{}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            ca_pem()
        );
        std::fs::write(&path, broken_second).unwrap();
        let why = CaFile::read(&path).unwrap_err();
        assert!(why.contains("the second"), "{why}");
    }
}
