package sandbox.run_as_non_root

import data.lib.testdata as td
import rego.v1

test_pod_level_passes if {
	count(violation) == 0 with input as td.sandbox_input(td.good_pod_spec, {})
}

test_container_level_passes if {
	spec := object.union(json.remove(td.good_pod_spec, ["securityContext"]), {"containers": [td.container_with({"securityContext": {"runAsNonRoot": true}})]})
	count(violation) == 0 with input as td.sandbox_input(spec, {})
}

test_unset_is_denied if {
	spec := json.remove(td.good_pod_spec, ["securityContext"])
	every inp in td.all_inputs(spec, {}) {
		violation == {{"msg": "containers[app]: runAsNonRoot must be true"}} with input as inp
	}
}

test_container_override_to_false_is_denied if {
	spec := td.with_container(td.container_with({"securityContext": {"runAsNonRoot": false}}))
	count(violation) == 1 with input as td.template_input(spec, {})
}
