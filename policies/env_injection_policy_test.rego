package sandbox.env_injection_policy

import data.lib.testdata as td
import rego.v1

overrides(params) := object.union(td.template_input(td.good_pod_spec, params), {"review": {"object": {"spec": {"envVarsInjectionPolicy": "Overrides"}}}})

test_allowed_policy_passes if {
	inp := object.union(td.template_input(td.good_pod_spec, {}), {"review": {"object": {"spec": {"envVarsInjectionPolicy": "Allowed"}}}})
	count(violation) == 0 with input as inp
}

test_overrides_is_denied_outside_allowed_namespaces if {
	count(violation) == 1 with input as overrides({"allowedNamespaces": []})
}

test_overrides_passes_in_allowed_namespace if {
	count(violation) == 0 with input as overrides({"allowedNamespaces": ["team"]})
}
