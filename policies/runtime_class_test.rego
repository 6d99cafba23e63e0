package sandbox.runtime_class

import data.lib.testdata as td
import rego.v1

params := {"allowedRuntimeClasses": ["gvisor", "kata-qemu"]}

test_allowed_class_passes_everywhere if {
	every inp in td.all_inputs(td.good_pod_spec, params) {
		count(violation) == 0 with input as inp
	}
}

test_missing_class_is_denied_everywhere if {
	spec := json.remove(td.good_pod_spec, ["runtimeClassName"])
	every inp in td.all_inputs(spec, params) {
		count(violation) == 1 with input as inp
	}
}

test_other_class_is_denied if {
	spec := object.union(td.good_pod_spec, {"runtimeClassName": "runc"})
	some v in violation with input as td.pod_input(spec, params)
	contains(v.msg, "\"runc\" is not allowed")
}

test_plain_pod_is_not_judged if {
	spec := json.remove(td.good_pod_spec, ["runtimeClassName"])
	count(violation) == 0 with input as td.plain_pod_input(spec, params)
}

test_empty_allowlist_denies_everything if {
	count(violation) == 1 with input as td.sandbox_input(td.good_pod_spec, {"allowedRuntimeClasses": []})
}
