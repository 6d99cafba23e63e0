# Every container runs as non-root: runAsNonRoot true on the container, or unset there and true
# on the pod. A hygiene rule: it warns by default and denies under the strict profile.
package sandbox.run_as_non_root

import data.lib.sandbox as lib
import rego.v1

# Positive, so that `not non_root(c)` is true when the field is unset: OPA evaluates a call
# inside `not` outside it, so `not f(c) == true` with `f(c)` undefined would pass the container.
non_root(c) if lib.effective_security(c, "runAsNonRoot") == true

violation contains {"msg": sprintf("%s: runAsNonRoot must be true", [lib.where(c)])} if {
	some c in lib.containers
	not non_root(c)
}

violation contains {"msg": "pod spec has no containers; runAsNonRoot cannot be checked"} if lib.containers_missing
