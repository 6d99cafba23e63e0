package sandbox.host_namespaces

import data.lib.testdata as td
import rego.v1

test_good_spec_passes if {
	count(violation) == 0 with input as td.sandbox_input(td.good_pod_spec, {})
}

test_each_host_namespace_is_denied if {
	every field in ["hostNetwork", "hostPID", "hostIPC"] {
		spec := object.union(td.good_pod_spec, {field: true})
		every inp in td.all_inputs(spec, {}) {
			violation == {{"msg": sprintf("%s: true is not allowed", [field])}} with input as inp
		}
	}
}

test_explicit_false_passes if {
	spec := object.union(td.good_pod_spec, {"hostNetwork": false, "hostPID": false, "hostIPC": false})
	count(violation) == 0 with input as td.template_input(spec, {})
}
