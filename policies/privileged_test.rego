package sandbox.privileged

import data.lib.testdata as td
import rego.v1

test_good_spec_passes if {
	count(violation) == 0 with input as td.sandbox_input(td.good_pod_spec, {})
}

test_privileged_ephemeral_container_is_denied if {
	bad := object.union(td.good_container("debug"), {"securityContext": {"privileged": true}})
	spec := object.union(td.good_pod_spec, {"ephemeralContainers": [bad]})
	every inp in td.all_inputs(spec, {}) {
		violation == {{"msg": "ephemeralContainers[debug]: privileged containers are not allowed"}} with input as inp
	}
}

test_missing_containers_fails_closed if {
	spec := json.remove(td.good_pod_spec, ["containers"])
	count(violation) == 1 with input as td.sandbox_input(spec, {})
	count(violation) == 1 with input as td.sandbox_input(object.union(td.good_pod_spec, {"containers": []}), {})
	count(violation) == 1 with input as td.sandbox_input(object.union(td.good_pod_spec, {"containers": "x"}), {})
}
