# No container adds a Linux capability outside `allowedCapabilities` (`CAP_` prefix and case
# ignored). Dropping ALL is the mutation's job (hardening.dropAllCapabilities); the strict
# profile also requires it written in the Sandbox.
package sandbox.capabilities

import data.lib.sandbox as lib
import rego.v1

allowed := {canonical(c) | some c in object.get(input.parameters, "allowedCapabilities", [])}

canonical(cap) := upper(trim_prefix(upper(cap), "CAP_"))

# A capability the policy allows. A non-string entry is never allowed (and the API server would
# refuse it anyway): written as a positive rule so that `not` sees a defined argument, as OPA
# evaluates it.
allowed_cap(cap) if {
	is_string(cap)
	canonical(cap) in allowed
}

violation contains {"msg": msg} if {
	some c in lib.containers
	some i, cap in object.get(c.spec, ["securityContext", "capabilities", "add"], [])
	not allowed_cap(cap)
	origin := lib.origin(sprintf("%s/securityContext/capabilities/add/%d", [c.path, i]))
	msg := sprintf("%s: adding capability %v is not allowed%s", [lib.where(c), json.marshal(cap), origin])
}

violation contains {"msg": "pod spec has no containers; capabilities cannot be checked"} if lib.containers_missing
