package sandbox.capabilities

import data.lib.sandbox as lib
import rego.v1

allowed := {canonical(c) | some c in object.get(input.parameters, "allowedCapabilities", [])}

canonical(cap) := upper(trim_prefix(upper(cap), "CAP_"))

violation contains {"msg": sprintf("%s: capabilities.drop must include ALL", [lib.where(c)])} if {
	some c in lib.containers
	not "ALL" in object.get(c.spec, ["securityContext", "capabilities", "drop"], [])
}

violation contains {"msg": sprintf("%s: adding capability %q is not allowed", [lib.where(c), cap])} if {
	some c in lib.containers
	some cap in object.get(c.spec, ["securityContext", "capabilities", "add"], [])
	not canonical(cap) in allowed
}

violation contains {"msg": "pod spec has no containers; capabilities cannot be checked"} if lib.containers_missing
