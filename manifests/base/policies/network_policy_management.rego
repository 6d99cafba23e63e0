package sandbox.network_policy_management

import data.lib.sandbox as lib
import rego.v1

violation contains {"msg": sprintf("networkPolicyManagement: Unmanaged is not allowed in namespace %q", [lib.review.namespace])} if {
	lib.obj.spec.networkPolicyManagement == "Unmanaged"
	not lib.namespace_allowed(object.get(input.parameters, "allowedNamespaces", []))
}
