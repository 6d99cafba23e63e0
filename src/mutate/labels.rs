//! Label-value rules and the upstream controller's name hash.
//!
//! A label value the API server would reject fails the whole pod creation, long after the
//! webhook answered; so every value written here is checked first.

/// Kubernetes label value: at most 63 characters, alphanumerics at both ends, `-_.` inside.
pub fn is_label_value(s: &str) -> bool {
    let bytes = s.as_bytes();
    if bytes.len() > 63 {
        return false;
    }
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return true;
    };
    first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// FNV-1a, 32 bits: what the upstream controller puts in `agents.x-k8s.io/sandbox-name-hash`.
pub fn fnv1a32(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5_u32, |hash, b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The upstream label value for a Sandbox name: eight lowercase hex digits.
pub fn name_hash(name: &str) -> String {
    format!("{:08x}", fnv1a32(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values() {
        for ok in ["", "a", "gvisor", "a-b_c.d", "0", &"x".repeat(63)] {
            assert!(is_label_value(ok), "{ok:?}");
        }
        for bad in ["-a", "a-", "a/b", "a b", "ä", &"x".repeat(64)] {
            assert!(!is_label_value(bad), "{bad:?}");
        }
    }

    #[test]
    fn fnv1a_matches_reference_vectors() {
        // Published FNV-1a 32-bit test vectors.
        assert_eq!(fnv1a32(""), 0x811c_9dc5);
        assert_eq!(fnv1a32("a"), 0xe40c_292c);
        assert_eq!(fnv1a32("foobar"), 0xbf9c_f968);
        assert_eq!(name_hash("a"), "e40c292c");
        assert_eq!(name_hash("").len(), 8);
    }
}
