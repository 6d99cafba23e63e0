package sandbox.runtime_class

import data.lib.sandbox as lib
import rego.v1

allowed := object.get(input.parameters, "allowedRuntimeClasses", [])

violation contains {"msg": msg, "details": {"allowed": allowed}} if {
	spec := lib.pod_spec
	not spec.runtimeClassName
	msg := sprintf("runtimeClassName is not set; a sandbox must run in one of %v", [allowed])
}

violation contains {"msg": msg, "details": {"allowed": allowed}} if {
	class := lib.pod_spec.runtimeClassName
	not class in allowed
	msg := sprintf("runtimeClassName %q is not allowed; use one of %v", [class, allowed])
}
