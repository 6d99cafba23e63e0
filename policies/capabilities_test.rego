package sandbox.capabilities

import data.lib.testdata as td
import rego.v1

test_drop_all_passes if {
	count(violation) == 0 with input as td.sandbox_input(td.good_pod_spec, {"allowedCapabilities": []})
}

test_missing_drop_is_left_to_the_mutation if {
	bare := json.remove(td.good_container("init"), ["securityContext"])
	spec := object.union(td.good_pod_spec, {"initContainers": [bare]})
	every inp in td.all_inputs(spec, {"allowedCapabilities": []}) {
		count(violation) == 0 with input as inp
	}
}

test_added_capability_in_an_init_container_is_denied_everywhere if {
	c := object.union(td.good_container("init"), {"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}})
	spec := object.union(td.good_pod_spec, {"initContainers": [c]})
	every inp in td.all_inputs(spec, {"allowedCapabilities": []}) {
		violation == {{"msg": "initContainers[init]: adding capability \"SYS_ADMIN\" is not allowed"}} with input as inp
	}
}

test_non_string_capability_is_denied if {
	c := td.container_with({"securityContext": {"capabilities": {"add": [7]}}})
	count(violation) == 1 with input as td.sandbox_input(td.with_container(c), {"allowedCapabilities": ["CHOWN"]})
}

test_added_capability_is_denied_unless_allowed if {
	c := td.container_with({"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "CAP_CHOWN"]}}})
	spec := td.with_container(c)
	violation == {{"msg": "containers[app]: adding capability \"NET_ADMIN\" is not allowed"}} with input as td.sandbox_input(spec, {"allowedCapabilities": ["CHOWN"]})
	count(violation) == 2 with input as td.sandbox_input(spec, {"allowedCapabilities": []})
}

test_no_containers_fails_closed if {
	spec := json.remove(td.good_pod_spec, ["containers"])
	count(violation) == 1 with input as td.sandbox_input(spec, {})
}
