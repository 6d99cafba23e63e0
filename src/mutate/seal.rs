//! The seal on the admission time: an HMAC that lets a reinvocation of the webhook tell its own
//! `admitted-at` from one a Sandbox author wrote into `podTemplate.metadata.annotations`.
//!
//! The upstream controller copies a Sandbox's template annotations to its pod, so anything the
//! webhook writes can also arrive already written: copied from a running pod, or made up. A value
//! is therefore kept only when it carries a tag that only the webhook can compute (HMAC-SHA256
//! with a key the author cannot read), bound to this pod (namespace, name, Sandbox UID) and to a
//! time within the last few minutes. A reinvocation happens within the same API request, seconds
//! after the first pass, so it keeps the value; a copy from another pod fails the binding, and an
//! old copy from an earlier pod of the same Sandbox fails the window (and could only have moved
//! the idle clock backwards, which shortens the pod's life).
//!
//! The key is derived from the serving private key, which every replica shares (one TLS Secret
//! in all three certificate modes) and which no Sandbox author can read. It follows certificate
//! rotation; the previous key stays valid so a reinvocation that straddles a rotation still
//! verifies. Without a serving key (the offline `review`, unit tests) a random key is used.

use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::{digest, hmac, rand};

/// Domain separation: the derived key is used for nothing else.
const CONTEXT: &[u8] = b"sandbox-admission bookkeeping seal v1\0";

struct Keys {
    current: hmac::Key,
    previous: Option<hmac::Key>,
    /// Digest of the material `current` came from, to make repeated rotations to it no-ops.
    source: digest::Digest,
}

pub struct Seal {
    keys: ArcSwap<Keys>,
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seal(..)")
    }
}

fn derive(material: &[u8]) -> (hmac::Key, digest::Digest) {
    let source = digest::digest(&digest::SHA256, material);
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(CONTEXT);
    ctx.update(material);
    let key = hmac::Key::new(hmac::HMAC_SHA256, ctx.finish().as_ref());
    (key, source)
}

impl Seal {
    /// A seal keyed from secret material (the serving private key's PEM).
    pub fn from_material(material: &[u8]) -> Seal {
        let (current, source) = derive(material);
        Seal {
            keys: ArcSwap::from_pointee(Keys {
                current,
                previous: None,
                source,
            }),
        }
    }

    /// A seal with a random key: for a single process (offline review, tests).
    pub fn random() -> Seal {
        let mut material = [0u8; 32];
        // The system RNG failing is not something to continue from silently, but a zero key
        // would still only affect this one process; fall back to the clock so we never panic.
        if ring::rand::SecureRandom::fill(&rand::SystemRandom::new(), &mut material).is_err() {
            let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
            material[..8].copy_from_slice(&now.to_le_bytes());
        }
        Seal::from_material(&material)
    }

    /// Key from new material (a rotated serving key); the key before stays valid for verifying.
    pub fn rotate(&self, material: &[u8]) {
        let old = self.keys.load_full();
        let (current, source) = derive(material);
        if source.as_ref() == old.source.as_ref() {
            return;
        }
        self.keys.store(Arc::new(Keys {
            current,
            previous: Some(old.current.clone()),
            source,
        }));
    }

    /// The tag for `message`, URL-safe base64 (a valid annotation value of 43 characters).
    pub fn sign(&self, message: &str) -> String {
        let tag = hmac::sign(&self.keys.load().current, message.as_bytes());
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// Whether `tag` is this webhook's tag for `message`, under the current or previous key.
    pub fn verify(&self, message: &str, tag: &str) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(tag.as_bytes()) else {
            return false;
        };
        let keys = self.keys.load();
        std::iter::once(&keys.current)
            .chain(keys.previous.as_ref())
            .any(|k| hmac::verify(k, message.as_bytes(), &raw).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_its_own_tags_only() {
        let seal = Seal::from_material(b"key one");
        let tag = seal.sign("ns/box/uid/2026-01-01T00:00:00Z");
        assert_eq!(tag.len(), 43);
        assert!(seal.verify("ns/box/uid/2026-01-01T00:00:00Z", &tag));
        assert!(!seal.verify("ns/box/uid/2030-01-01T00:00:00Z", &tag));
        assert!(!seal.verify("ns/box/uid/2026-01-01T00:00:00Z", "not base64!"));
        let other = Seal::from_material(b"key two");
        assert!(!other.verify("ns/box/uid/2026-01-01T00:00:00Z", &tag));
        assert!(!Seal::random().verify("ns/box/uid/2026-01-01T00:00:00Z", &tag));
    }

    #[test]
    fn rotation_keeps_the_previous_key_for_one_step() {
        let seal = Seal::from_material(b"one");
        let old = seal.sign("m");
        seal.rotate(b"two");
        seal.rotate(b"two");
        assert!(seal.verify("m", &old), "previous key still verifies");
        let new = seal.sign("m");
        assert_ne!(old, new);
        seal.rotate(b"three");
        assert!(seal.verify("m", &new));
        assert!(!seal.verify("m", &old), "two rotations ago is gone");
    }
}
