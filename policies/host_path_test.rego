package sandbox.host_path

import data.lib.testdata as td
import rego.v1

test_empty_dir_passes if {
	spec := object.union(td.good_pod_spec, {"volumes": [{"name": "w", "emptyDir": {}}]})
	count(violation) == 0 with input as td.sandbox_input(spec, {})
}

test_host_path_is_denied if {
	spec := object.union(td.good_pod_spec, {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]})
	every inp in td.all_inputs(spec, {}) {
		violation == {{"msg": "volume \"root\": hostPath volumes are not allowed"}} with input as inp
	}
}
