package sandbox.capabilities

import data.lib.testdata as td
import rego.v1

test_drop_all_passes if {
	count(violation) == 0 with input as td.sandbox_input(td.good_pod_spec, {"allowedCapabilities": []})
}

test_missing_drop_is_denied_for_every_container_kind if {
	bare := json.remove(td.good_container("init"), ["securityContext"])
	spec := object.union(td.good_pod_spec, {"initContainers": [bare]})
	every inp in td.all_inputs(spec, {"allowedCapabilities": []}) {
		violation == {{"msg": "initContainers[init]: capabilities.drop must include ALL"}} with input as inp
	}
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
