package sandbox.resource_limits

import data.lib.testdata as td
import rego.v1

test_limits_pass if {
	count(violation) == 0 with input as td.sandbox_input(td.good_pod_spec, {})
}

test_missing_limits_are_denied if {
	c := json.remove(td.good_container("app"), ["resources/limits/memory"])
	every inp in td.all_inputs(td.with_container(c), {}) {
		violation == {{"msg": "containers[app]: resources.limits.memory must be set"}} with input as inp
	}
	bare := json.remove(td.good_container("app"), ["resources"])
	count(violation) == 2 with input as td.sandbox_input(td.with_container(bare), {})
}

test_ephemeral_containers_cannot_set_limits_and_are_skipped if {
	debug := json.remove(td.good_container("debug"), ["resources"])
	spec := object.union(td.good_pod_spec, {"ephemeralContainers": [debug]})
	count(violation) == 0 with input as td.pod_input(spec, {})
}
