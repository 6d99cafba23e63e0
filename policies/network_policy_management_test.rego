package sandbox.network_policy_management

import data.lib.testdata as td
import rego.v1

unmanaged(params) := object.union(td.template_input(td.good_pod_spec, params), {"review": {"object": {"spec": {"networkPolicyManagement": "Unmanaged"}}}})

test_managed_passes if {
	count(violation) == 0 with input as td.template_input(td.good_pod_spec, {"allowedNamespaces": []})
}

test_unmanaged_is_denied_outside_allowed_namespaces if {
	violation == {{"msg": "networkPolicyManagement: Unmanaged is not allowed in namespace \"team\""}} with input as unmanaged({"allowedNamespaces": ["platform"]})
}

test_unmanaged_passes_in_allowed_namespace if {
	count(violation) == 0 with input as unmanaged({"allowedNamespaces": ["te*"]})
}
