package lib.sandbox

import data.lib.testdata as td
import rego.v1

test_pod_spec_of_each_kind if {
	every inp in td.all_inputs(td.good_pod_spec, {}) {
		pod_spec == td.good_pod_spec with input as inp
	}
}

test_plain_pod_has_no_pod_spec if {
	not pod_spec with input as td.plain_pod_input(td.good_pod_spec, {})
}

test_pod_update_is_not_judged if {
	inp := td.pod_input(td.good_pod_spec, {})
	not pod_spec with input as object.union(inp, {"review": {"operation": "UPDATE"}})
}

test_ephemeral_container_update_is_judged if {
	inp := td.pod_input(td.good_pod_spec, {})
	pod_spec with input as object.union(inp, {"review": {"operation": "UPDATE", "subResource": "ephemeralcontainers"}})
}

test_deleting_sandbox_is_not_judged if {
	inp := td.sandbox_input(td.good_pod_spec, {})
	not pod_spec with input as object.union(inp, {"review": {"object": {"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}}})
}

test_missing_spec_is_empty_and_has_no_containers if {
	inp := td.sandbox_input(td.good_pod_spec, {})
	no_template := json.remove(inp, ["review/object/spec/podTemplate"])
	pod_spec == {} with input as no_template
	containers_missing with input as no_template
}

test_all_container_kinds_are_listed if {
	spec := object.union(td.good_pod_spec, {
		"initContainers": [td.good_container("init")],
		"ephemeralContainers": [td.good_container("debug")],
	})
	names := {c.name | some c in containers} with input as td.sandbox_input(spec, {})
	names == {"app", "init", "debug"}
	regular := {c.name | some c in regular_containers} with input as td.sandbox_input(spec, {})
	regular == {"app", "init"}
}

test_container_security_overrides_pod if {
	c := {"field": "containers", "name": "a", "spec": {"securityContext": {"runAsNonRoot": false}}}
	effective_security(c, "runAsNonRoot") == false with input as td.sandbox_input(td.good_pod_spec, {})
	d := {"field": "containers", "name": "a", "spec": {}}
	effective_security(d, "runAsNonRoot") == true with input as td.sandbox_input(td.good_pod_spec, {})
}

test_namespace_patterns if {
	namespace_allowed(["team"]) with input as td.sandbox_input({}, {})
	namespace_allowed(["te*"]) with input as td.sandbox_input({}, {})
	not namespace_allowed(["other", "x*"]) with input as td.sandbox_input({}, {})
}
