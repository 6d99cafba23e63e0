//! Named readiness checks that components set as they come up (and may set back), read by
//! `/readyz`. Kept apart from the health server so the components that report (certificate
//! reload, policy store, cluster watches) do not depend on the server that shows them.

use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct Readiness {
    checks: Mutex<BTreeMap<String, Result<String, String>>>,
}

impl Readiness {
    pub fn set(&self, name: &str, state: Result<String, String>) {
        if let Ok(mut checks) = self.checks.lock() {
            checks.insert(name.to_owned(), state);
        }
    }

    /// Every check as last set, by name.
    pub fn snapshot(&self) -> BTreeMap<String, Result<String, String>> {
        self.checks.lock().map(|c| c.clone()).unwrap_or_default()
    }
}
