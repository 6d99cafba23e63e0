//! What the certificate Secret should hold, given what it holds now: pure, so every renewal and
//! rotation step is unit-tested without an API server.
//!
//! The Secret holds the current CA (`ca.crt`, `ca.key`), during a CA rotation the next CA
//! (`ca-next.crt`, `ca-next.key`), the trust bundle patched into the webhooks (`ca-bundle.crt`)
//! and the serving pair (`tls.crt`, `tls.key`).
//!
//! CA rotation takes two reconciles, so that no replica serves a certificate the API server does
//! not trust yet: first the next CA is generated and added to the bundle (the serving certificate
//! is still signed by the current CA); once every webhook's caBundle holds the next CA, it is
//! promoted and a serving certificate signed by it is issued. Old CAs stay in the bundle until
//! they expire, so replicas still serving an older certificate keep being trusted.

use std::collections::BTreeMap;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::certs::{
    self, CertError, PemPair, TlsFiles, TlsPem, generate_ca, generate_serving, server_config_from,
};

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const NEXT_CA_CERT: &str = "ca-next.crt";
pub const NEXT_CA_KEY: &str = "ca-next.key";
pub const BUNDLE: &str = "ca-bundle.crt";
pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";

/// The Secret's `data`.
pub type SecretData = BTreeMap<String, Vec<u8>>;

#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub ca_days: u32,
    pub serving_days: u32,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            ca_days: 5 * 365,
            serving_days: 90,
        }
    }
}

/// Validity and names of one certificate.
struct Info {
    subject: Vec<u8>,
    issuer: Vec<u8>,
    not_before: i64,
    not_after: i64,
}

fn info(pem: &[u8]) -> Option<Info> {
    let der = CertificateDer::from_pem_slice(pem).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(Info {
        subject: cert.subject().as_raw().to_vec(),
        issuer: cert.issuer().as_raw().to_vec(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

impl Info {
    /// Two thirds of the lifetime are over: time to renew.
    fn due(&self, now: i64) -> bool {
        now >= self.not_before + (self.not_after - self.not_before) * 2 / 3
    }
}

/// Every certificate of a PEM bundle, as separate PEM strings.
pub fn split_bundle(pem: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(pem);
    let end = "-----END CERTIFICATE-----";
    text.split_inclusive(end)
        .filter_map(|chunk| {
            let start = chunk.find("-----BEGIN CERTIFICATE-----")?;
            chunk
                .ends_with(end)
                .then(|| format!("{}\n", &chunk[start..]))
        })
        .collect()
}

/// Does every bundle in `bundles` contain the certificate `pem`?
pub fn all_trust(bundles: &[Vec<u8>], pem: &[u8]) -> bool {
    let Ok(wanted) = CertificateDer::from_pem_slice(pem) else {
        return false;
    };
    bundles.iter().all(|bundle| {
        CertificateDer::pem_slice_iter(bundle)
            .filter_map(Result::ok)
            .any(|c| c == wanted)
    })
}

fn pair(data: &SecretData, cert: &str, key: &str) -> Option<PemPair> {
    Some(PemPair {
        cert: String::from_utf8(data.get(cert)?.clone()).ok()?,
        key: String::from_utf8(data.get(key)?.clone()).ok()?,
    })
}

/// A CA whose key signs (it parses and is not expired).
fn usable_ca(ca: Option<PemPair>, now: i64) -> Option<(PemPair, Info)> {
    let ca = ca?;
    let i = info(ca.cert.as_bytes())?;
    rcgen::KeyPair::from_pem(&ca.key).ok()?;
    (now < i.not_after).then_some((ca, i))
}

fn new_ca(life: &Lifetimes) -> Result<(PemPair, Info), CertError> {
    // A unique subject per CA: a serving certificate's issuer then names the CA that signed it.
    let name = format!(
        "sandbox-admission CA {}",
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ")
    );
    let ca = generate_ca(&name, life.ca_days)?;
    let i = info(ca.cert.as_bytes())
        .ok_or_else(|| CertError::Tls("generated CA does not parse".into()))?;
    Ok((ca, i))
}

/// The Secret data to store, and what changed (empty: nothing to write).
///
/// `next_trusted`: every webhook's caBundle already holds the next CA (if there is one).
pub fn plan(
    existing: Option<&SecretData>,
    names: &[String],
    next_trusted: bool,
    now: i64,
    life: &Lifetimes,
) -> Result<(SecretData, Vec<String>), CertError> {
    let empty = SecretData::new();
    let old = existing.unwrap_or(&empty);
    let mut changes = Vec::new();

    let (mut ca, mut ca_info) = match usable_ca(pair(old, CA_CERT, CA_KEY), now) {
        Some(found) => found,
        None => {
            changes.push("generated a new CA".to_owned());
            new_ca(life)?
        }
    };
    let mut next = usable_ca(pair(old, NEXT_CA_CERT, NEXT_CA_KEY), now);
    if next.is_none() && ca_info.due(now) {
        changes
            .push("generated the next CA; trusted next to the current one until promoted".into());
        next = Some(new_ca(life)?);
    }
    if next_trusted && let Some((n, i)) = next.take() {
        changes.push("promoted the next CA (every webhook trusts it)".into());
        ca = n;
        ca_info = i;
    }

    // The bundle: current and next CA, then every older CA still valid. The old `ca.crt` counts
    // too: a Secret made by hand (no CA key) is taken over without distrusting the pods that
    // still serve its certificate.
    let mut bundle: Vec<String> = vec![ca.cert.clone()];
    if let Some((n, _)) = &next {
        bundle.push(n.cert.clone());
    }
    let previous = [BUNDLE, CA_CERT]
        .iter()
        .filter_map(|k| old.get(*k))
        .flat_map(|b| split_bundle(b));
    for cert in previous {
        let keep = info(cert.as_bytes()).is_some_and(|i| now < i.not_after);
        let known = bundle.iter().any(|b| {
            CertificateDer::from_pem_slice(b.as_bytes()).ok()
                == CertificateDer::from_pem_slice(cert.as_bytes()).ok()
        });
        if keep && !known {
            bundle.push(cert);
        }
    }

    let serving = pair(old, TLS_CERT, TLS_KEY).filter(|s| serving_ok(s, names, &ca_info, now));
    let serving = match serving {
        Some(s) => s,
        None => {
            changes.push("issued a new serving certificate".into());
            generate_serving(&ca, names, life.serving_days)?
        }
    };

    let mut data = SecretData::new();
    data.insert(CA_CERT.into(), ca.cert.into_bytes());
    data.insert(CA_KEY.into(), ca.key.into_bytes());
    if let Some((n, _)) = next {
        data.insert(NEXT_CA_CERT.into(), n.cert.into_bytes());
        data.insert(NEXT_CA_KEY.into(), n.key.into_bytes());
    }
    data.insert(BUNDLE.into(), bundle.concat().into_bytes());
    data.insert(TLS_CERT.into(), serving.cert.into_bytes());
    data.insert(TLS_KEY.into(), serving.key.into_bytes());
    if changes.is_empty() && existing != Some(&data) {
        changes.push("rewrote the Secret's layout".into());
    }
    Ok((data, changes))
}

/// The serving pair loads, its key matches, it covers `names`, the current CA signed it and it
/// is not due for renewal.
fn serving_ok(serving: &PemPair, names: &[String], ca: &Info, now: i64) -> bool {
    let files = TlsFiles {
        cert: TLS_CERT.into(),
        key: TLS_KEY.into(),
        client_ca: None,
    };
    let pem = TlsPem {
        cert: serving.cert.clone().into_bytes(),
        key: serving.key.clone().into_bytes(),
        client_ca: None,
    };
    let Some(i) = info(serving.cert.as_bytes()) else {
        return false;
    };
    server_config_from(&files, &pem).is_ok()
        && certs::covers(serving.cert.as_bytes(), names)
        && i.issuer == ca.subject
        && !i.due(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["svc.ns.svc".into()]
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn issuer_of(data: &SecretData, key: &str) -> Vec<u8> {
        info(&data[key]).unwrap().issuer
    }

    fn subject_of(data: &SecretData, key: &str) -> Vec<u8> {
        info(&data[key]).unwrap().subject
    }

    fn bundle_len(data: &SecretData) -> usize {
        split_bundle(&data[BUNDLE]).len()
    }

    #[test]
    fn creates_then_keeps() {
        crate::certs::install_crypto_provider();
        let life = Lifetimes::default();
        let (data, changes) = plan(None, &names(), false, now(), &life).unwrap();
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(issuer_of(&data, TLS_CERT), subject_of(&data, CA_CERT));
        assert_eq!(bundle_len(&data), 1);
        let (again, changes) = plan(Some(&data), &names(), false, now(), &life).unwrap();
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(again, data);
    }

    #[test]
    fn renews_serving_at_two_thirds_and_for_new_names() {
        crate::certs::install_crypto_provider();
        let life = Lifetimes::default();
        let (data, _) = plan(None, &names(), false, now(), &life).unwrap();
        let later = now() + 61 * 86_400;
        let (renewed, changes) = plan(Some(&data), &names(), false, later, &life).unwrap();
        assert_eq!(changes, vec!["issued a new serving certificate"]);
        assert_ne!(renewed[TLS_CERT], data[TLS_CERT]);
        assert_eq!(renewed[CA_CERT], data[CA_CERT], "the CA is kept");
        let other = vec!["other.ns.svc".to_string()];
        let (_, changes) = plan(Some(&data), &other, false, now(), &life).unwrap();
        assert_eq!(changes, vec!["issued a new serving certificate"]);
    }

    #[test]
    fn rotates_the_ca_in_two_steps_with_both_trusted() {
        crate::certs::install_crypto_provider();
        // The simulated clock moves; generation uses the real one. A serving lifetime longer
        // than the CA's keeps serving renewal out of this test (covered above).
        let life = Lifetimes {
            ca_days: 30,
            serving_days: 90,
        };
        let (data, _) = plan(None, &names(), false, now(), &life).unwrap();
        let later = now() + 21 * 86_400;
        // Step 1: the next CA joins the bundle; serving is still signed by the current CA.
        let (step1, changes) = plan(Some(&data), &names(), false, later, &life).unwrap();
        assert!(changes.iter().any(|c| c.contains("next CA")), "{changes:?}");
        assert_eq!(step1[CA_CERT], data[CA_CERT]);
        assert_eq!(bundle_len(&step1), 2);
        assert_eq!(issuer_of(&step1, TLS_CERT), subject_of(&step1, CA_CERT));
        assert!(all_trust(&[step1[BUNDLE].clone()], &step1[NEXT_CA_CERT]));
        // Not yet trusted by every webhook: nothing moves.
        let (same, changes) = plan(Some(&step1), &names(), false, later, &life).unwrap();
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(same, step1);
        // Step 2: promoted; the serving certificate is re-issued by it; the old CA stays trusted.
        let (step2, changes) = plan(Some(&step1), &names(), true, later, &life).unwrap();
        assert!(
            changes.iter().any(|c| c.contains("promoted")),
            "{changes:?}"
        );
        assert_eq!(step2[CA_CERT], step1[NEXT_CA_CERT]);
        assert!(!step2.contains_key(NEXT_CA_CERT));
        assert_eq!(issuer_of(&step2, TLS_CERT), subject_of(&step2, CA_CERT));
        assert!(all_trust(&[step2[BUNDLE].clone()], &data[CA_CERT]));
        assert!(all_trust(&[step2[BUNDLE].clone()], &step2[CA_CERT]));
        // Once the old CA has expired it leaves the bundle.
        let much_later = now() + 31 * 86_400;
        let (step3, _) = plan(Some(&step2), &names(), false, much_later, &life).unwrap();
        assert!(!all_trust(&[step3[BUNDLE].clone()], &data[CA_CERT]));
    }

    #[test]
    fn a_hand_made_secret_is_taken_over_with_its_ca_still_trusted() {
        crate::certs::install_crypto_provider();
        let made = crate::certs::generate_bundle(&names(), 365).unwrap();
        let mut data = SecretData::new();
        data.insert(CA_CERT.into(), made.ca.cert.clone().into_bytes());
        data.insert(TLS_CERT.into(), made.serving.cert.into_bytes());
        data.insert(TLS_KEY.into(), made.serving.key.into_bytes());
        let (taken, changes) =
            plan(Some(&data), &names(), false, now(), &Lifetimes::default()).unwrap();
        assert!(changes.iter().any(|c| c.contains("new CA")), "{changes:?}");
        assert_eq!(bundle_len(&taken), 2);
        assert!(all_trust(&[taken[BUNDLE].clone()], made.ca.cert.as_bytes()));
        assert!(all_trust(&[taken[BUNDLE].clone()], &taken[CA_CERT]));
    }

    #[test]
    fn garbage_is_replaced() {
        crate::certs::install_crypto_provider();
        let mut data = SecretData::new();
        data.insert(CA_CERT.into(), b"junk".to_vec());
        data.insert(TLS_KEY.into(), b"junk".to_vec());
        let (fixed, changes) =
            plan(Some(&data), &names(), false, now(), &Lifetimes::default()).unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(issuer_of(&fixed, TLS_CERT), subject_of(&fixed, CA_CERT));
    }
}
