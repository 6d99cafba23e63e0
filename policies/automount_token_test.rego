package sandbox.automount_token

import data.lib.testdata as td
import rego.v1

test_false_passes if {
	count(violation) == 0 with input as td.sandbox_input(td.good_pod_spec, {})
}

test_missing_or_true_is_denied if {
	unset := json.remove(td.good_pod_spec, ["automountServiceAccountToken"])
	on := object.union(td.good_pod_spec, {"automountServiceAccountToken": true})
	every spec in [unset, on] {
		every inp in td.all_inputs(spec, {}) {
			count(violation) == 1 with input as inp
		}
	}
}
