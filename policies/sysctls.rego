# Only sysctls that are safe (namespaced, isolated from the node: Kubernetes' "safe" set, as
# in the Pod Security Standards' baseline) may be set; the strict profile allows none.
package sandbox.sysctls

import data.lib.sandbox as lib
import rego.v1

allowed := object.get(input.parameters, "allowedSysctls", [])

violation contains {"msg": msg} if {
	some i, s in lib.pod_spec.securityContext.sysctls
	name := object.get(s, "name", "")
	not name in allowed
	msg := sprintf("sysctl %q is not allowed%s", [name, lib.origin(sprintf("/securityContext/sysctls/%d", [i]))])
}
