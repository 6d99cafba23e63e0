//! Certificates: generating a CA and serving certificate (rcgen, ECDSA P-256), writing them in a
//! Kubernetes TLS Secret's layout, and turning PEM files into a rustls server configuration that
//! uses the ring provider only.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub mod manage;
pub mod patch;
pub mod reload;

pub const CA_FILE: &str = "ca.crt";
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";
pub const CA_KEY_FILE: &str = "ca.key";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration rejected: {0}")]
    Tls(String),
}

/// The ring crypto provider, installed process-wide once. kube's client and our server both use it;
/// with two providers compiled in and none installed, rustls would panic at first use.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA or serving certificate with its key, as PEM.
#[derive(Clone)]
pub struct PemPair {
    pub cert: String,
    pub key: String,
}

/// A freshly generated CA and a serving certificate signed by it.
pub struct Bundle {
    pub ca: PemPair,
    pub serving: PemPair,
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // Back-date a little: clocks in a cluster disagree.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

/// Generate a new CA.
pub fn generate_ca(common_name: &str, days: u32) -> Result<PemPair, CertError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, days);
    let cert = params.self_signed(&key)?;
    Ok(PemPair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Generate a serving certificate for `names` (DNS names or IP addresses), signed by `ca`.
pub fn generate_serving(ca: &PemPair, names: &[String], days: u32) -> Result<PemPair, CertError> {
    let ca_key = KeyPair::from_pem(&ca.key)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    for name in names {
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => rcgen::SanType::DnsName(name.clone().try_into()?),
        };
        params.subject_alt_names.push(san);
    }
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names.first().map_or("sandbox-admission", String::as_str),
    );
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut params, days);
    let cert = params.signed_by(&key, &issuer)?;
    Ok(PemPair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A new CA and a serving certificate for `names`.
pub fn generate_bundle(names: &[String], days: u32) -> Result<Bundle, CertError> {
    let ca = generate_ca("sandbox-admission CA", days)?;
    let serving = generate_serving(&ca, names, days)?;
    Ok(Bundle { ca, serving })
}

fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    let err = |source| CertError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    // Write then rename, so a watcher never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).map_err(err)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    #[cfg(not(unix))]
    let _ = private;
    std::fs::rename(&tmp, path).map_err(err)
}

impl Bundle {
    /// Write `ca.crt`, `ca.key`, `tls.crt`, `tls.key` into `dir`.
    pub fn write(&self, dir: &Path, with_ca_key: bool) -> Result<(), CertError> {
        write_file(&dir.join(CA_FILE), &self.ca.cert, false)?;
        if with_ca_key {
            write_file(&dir.join(CA_KEY_FILE), &self.ca.key, true)?;
        }
        write_file(&dir.join(KEY_FILE), &self.serving.key, true)?;
        write_file(&dir.join(CERT_FILE), &self.serving.cert, false)
    }
}

/// Read a file, with the path in the error.
pub fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })
}

pub fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CertError::Pem {
            path: path.to_owned(),
            message: "no PEM certificate found".into(),
        });
    }
    Ok(certs)
}

fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, CertError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| CertError::Pem {
        path: path.to_owned(),
        message: format!("no usable private key: {e}"),
    })
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// Given files (a mounted Secret, or `--tls-cert/--tls-key`).
    Files(TlsFiles),
    /// Self-signed CA and certificate, generated into (or reused from) this directory.
    SelfSigned { dir: PathBuf },
}

/// The serving certificate's files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// The bytes of a serving certificate, key and optional client CA, read together so that a
/// reload compares and builds from one consistent snapshot.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub client_ca: Option<Vec<u8>>,
}

impl TlsPem {
    pub fn read(files: &TlsFiles) -> Result<TlsPem, CertError> {
        Ok(TlsPem {
            cert: read(&files.cert)?,
            key: read(&files.key)?,
            client_ca: files.client_ca.as_deref().map(read).transpose()?,
        })
    }
}

/// Build the server's rustls configuration: TLS 1.2 and 1.3, ring, h2 and HTTP/1.1, and client
/// certificate verification when a client CA is given.
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, CertError> {
    server_config_from(files, &TlsPem::read(files)?)
}

/// [`server_config`] from bytes already read; `files` names them in errors. A key that does not
/// belong to the certificate is an error (rustls compares the public keys).
pub fn server_config_from(files: &TlsFiles, pem: &TlsPem) -> Result<ServerConfig, CertError> {
    let certs = parse_certs(&files.cert, &pem.cert)?;
    let key = parse_key(&files.key, &pem.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| CertError::Tls(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            // Never fall back to no client authentication because the CA bytes are missing.
            let ca_pem = pem.client_ca.as_deref().ok_or_else(|| CertError::Pem {
                path: path.clone(),
                message: "client CA not read".into(),
            })?;
            let mut roots = RootCertStore::empty();
            for cert in parse_certs(path, ca_pem)? {
                roots
                    .add(cert)
                    .map_err(|e| CertError::Tls(format!("{}: {e}", path.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| CertError::Tls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| CertError::Tls(format!("{}: {e}", files.cert.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// How `/readyz` describes a serving certificate: its path and, when it parses, its expiry (so an
/// operator without an expiry alert still sees it coming). Warns when it expires within a week.
pub fn describe_serving(path: &Path, pem: &[u8]) -> String {
    let not_after = CertificateDer::from_pem_slice(pem).ok().and_then(|der| {
        let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
        chrono::DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
    });
    match not_after {
        Some(t) => {
            let left = t - chrono::Utc::now();
            if left < chrono::Duration::days(7) {
                tracing::warn!(cert = %path.display(), expires = %t.to_rfc3339(), "the serving certificate expires within a week");
            }
            format!(
                "serving certificate {} (valid until {})",
                path.display(),
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        }
        None => format!("serving certificate {}", path.display()),
    }
}

/// Does the certificate in `pem` cover every name in `names` and stay valid for another day?
pub fn covers(pem: &[u8], names: &[String]) -> bool {
    let Ok(der) = CertificateDer::from_pem_slice(pem) else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return false;
    };
    let tomorrow =
        x509_parser::time::ASN1Time::from_timestamp(chrono::Utc::now().timestamp() + 86_400);
    if tomorrow.map_or(true, |t| cert.validity().not_after < t) {
        return false;
    }
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    names.iter().all(|name| {
        san.value.general_names.iter().any(|g| match g {
            x509_parser::extensions::GeneralName::DNSName(d) => d == name,
            x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                match name.parse::<IpAddr>() {
                    Ok(IpAddr::V4(ip)) => *bytes == ip.octets(),
                    Ok(IpAddr::V6(ip)) => *bytes == ip.octets(),
                    Err(_) => false,
                }
            }
            _ => false,
        })
    })
}

/// For `serve` with no certificate given: reuse the self-signed pair in `dir` when it still covers
/// `names`, otherwise generate a new CA and serving certificate there.
pub fn ensure_self_signed(dir: &Path, names: &[String]) -> Result<(TlsFiles, bool), CertError> {
    let files = TlsFiles {
        cert: dir.join(CERT_FILE),
        key: dir.join(KEY_FILE),
        client_ca: None,
    };
    let reusable = std::fs::read(&files.cert).is_ok_and(|pem| covers(&pem, names))
        && dir.join(CA_FILE).exists()
        && server_config(&files).is_ok();
    if reusable {
        return Ok((files, false));
    }
    generate_bundle(names, 365)?.write(dir, true)?;
    Ok((files, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pair_loads_and_covers_its_names() {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "svc.ns.svc".to_string(),
        ];
        let (files, fresh) = ensure_self_signed(dir.path(), &names).unwrap();
        assert!(fresh);
        let pem = std::fs::read(&files.cert).unwrap();
        assert!(covers(&pem, &names));
        assert!(!covers(&pem, &["other.example".to_string()]));
        server_config(&files).unwrap();
        // A second start reuses the pair.
        let (_, fresh) = ensure_self_signed(dir.path(), &names).unwrap();
        assert!(!fresh);
    }

    #[test]
    fn garbage_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tls.crt"), "not pem").unwrap();
        std::fs::write(dir.path().join("tls.key"), "not pem").unwrap();
        let files = TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            client_ca: None,
        };
        let err = server_config(&files).unwrap_err().to_string();
        assert!(err.contains("tls.crt"), "{err}");
    }
}
