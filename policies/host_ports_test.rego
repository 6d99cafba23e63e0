package sandbox.host_ports

import data.lib.testdata as td
import rego.v1

test_container_port_passes if {
	spec := td.with_container(td.container_with({"ports": [{"containerPort": 8080}]}))
	count(violation) == 0 with input as td.sandbox_input(spec, {})
}

test_host_port_is_denied_in_init_containers if {
	bad := object.union(td.good_container("init"), {"ports": [{"containerPort": 80, "hostPort": 80}]})
	spec := object.union(td.good_pod_spec, {"initContainers": [bad]})
	every inp in td.all_inputs(spec, {}) {
		violation == {{"msg": "initContainers[init]: hostPort 80 is not allowed"}} with input as inp
	}
}
