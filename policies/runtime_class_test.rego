package sandbox.runtime_class

import data.lib.testdata as td
import rego.v1

params := {"sandboxedRuntimeClasses": ["gvisor", "kata-qemu"], "sandboxedHandlers": ["runsc", "kata", "kata-*"]}

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
	contains(v.msg, "\"runc\" is not a sandboxed runtime")
}

test_plain_pod_is_not_judged if {
	spec := json.remove(td.good_pod_spec, ["runtimeClassName"])
	count(violation) == 0 with input as td.plain_pod_input(spec, params)
}

test_empty_allowlist_denies_everything if {
	count(violation) == 1 with input as td.sandbox_input(td.good_pod_spec, {"sandboxedRuntimeClasses": [], "sandboxedHandlers": []})
}

test_a_profile_class_is_accepted if {
	spec := object.union(td.good_pod_spec, {"runtimeClassName": "my-gvisor"})
	inp := td.sandbox_input(spec, params)
	count(violation) == 1 with input as inp
	ctx := {"runtime_classes": {"my-gvisor": {"profile": "gvisor", "handler": "runsc"}}}
	count(violation) == 0 with input as object.union(inp, {"sandbox_admission": ctx})
}

test_a_class_is_accepted_by_its_handler if {
	spec := object.union(td.good_pod_spec, {"runtimeClassName": "secure"})
	inp := td.pod_input(spec, params)
	kata := {"runtime_class": {"metadata": {"name": "secure"}, "handler": "kata-clh"}}
	count(violation) == 0 with input as object.union(inp, {"sandbox_admission": kata})
	runc := {"runtime_class": {"metadata": {"name": "secure"}, "handler": "runc"}}
	count(violation) == 1 with input as object.union(inp, {"sandbox_admission": runc})
	other := {"runtime_class": {"metadata": {"name": "other"}, "handler": "kata"}}
	count(violation) == 1 with input as object.union(inp, {"sandbox_admission": other})
}

test_a_defaulted_class_says_so if {
	spec := object.union(td.good_pod_spec, {"runtimeClassName": "runc"})
	some v in violation with input as td.effective_sandbox_input(spec, params, ["/spec/runtimeClassName"])
	contains(v.msg, "(filled in by sandbox-admission)")
	some w in violation with input as td.effective_sandbox_input(spec, params, [])
	contains(w.msg, "(as written in the Sandbox)")
}
