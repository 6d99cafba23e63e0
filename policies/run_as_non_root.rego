package sandbox.run_as_non_root

import data.lib.sandbox as lib
import rego.v1

violation contains {"msg": sprintf("%s: runAsNonRoot must be true", [lib.where(c)])} if {
	some c in lib.containers
	not lib.effective_security(c, "runAsNonRoot") == true
}

violation contains {"msg": "pod spec has no containers; runAsNonRoot cannot be checked"} if lib.containers_missing
