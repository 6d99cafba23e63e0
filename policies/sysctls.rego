package sandbox.sysctls

import data.lib.sandbox as lib
import rego.v1

violation contains {"msg": sprintf("sysctl %q is not allowed", [object.get(s, "name", "")])} if {
	some s in lib.pod_spec.securityContext.sysctls
}
