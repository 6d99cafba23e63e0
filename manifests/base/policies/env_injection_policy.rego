package sandbox.env_injection_policy

import data.lib.sandbox as lib
import rego.v1

violation contains {"msg": sprintf("envVarsInjectionPolicy: Overrides is not allowed in namespace %q", [lib.review.namespace])} if {
	lib.obj.spec.envVarsInjectionPolicy == "Overrides"
	not lib.namespace_allowed(object.get(input.parameters, "allowedNamespaces", []))
}
