package sandbox.automount_token

import data.lib.testdata as td
import rego.v1

test_false_or_unset_passes if {
	unset := json.remove(td.good_pod_spec, ["automountServiceAccountToken"])
	every spec in [td.good_pod_spec, unset] {
		every inp in td.all_inputs(spec, {}) {
			count(violation) == 0 with input as inp
		}
	}
}

test_explicit_true_is_denied_everywhere if {
	on := object.union(td.good_pod_spec, {"automountServiceAccountToken": true})
	every inp in td.all_inputs(on, {}) {
		count(violation) == 1 with input as inp
	}
}

test_effective_denial_says_the_author_wrote_it if {
	on := object.union(td.good_pod_spec, {"automountServiceAccountToken": true})
	some v in violation with input as td.effective_sandbox_input(on, {}, [])
	endswith(v.msg, "(as written in the Sandbox)")
}
