package sandbox.volume_claim_templates

import data.lib.testdata as td
import rego.v1

with_vcts(names) := object.union(td.sandbox_input(td.good_pod_spec, {}), {"review": {"object": {"spec": {
	"volumeClaimTemplates": [{"metadata": {"name": n}, "spec": {}} | some n in names],
}}}})

test_valid_unique_names_pass if {
	count(violation) == 0 with input as with_vcts(["workspace", "cache-1"])
	count(violation) == 0 with input as td.sandbox_input(td.good_pod_spec, {})
}

test_invalid_names_are_denied if {
	every name in ["Workspace", "-x", "a_b", "", concat("", ["a" | some _ in numbers.range(1, 64)])] {
		count(violation) == 1 with input as with_vcts([name])
	}
}

test_missing_name_is_denied if {
	inp := object.union(td.sandbox_input(td.good_pod_spec, {}), {"review": {"object": {"spec": {"volumeClaimTemplates": [{"spec": {}}]}}}})
	violation == {{"msg": "volumeClaimTemplates[0]: name \"\" is not a valid DNS label"}} with input as inp
}

test_duplicates_are_denied if {
	violation == {{"msg": "volumeClaimTemplates: name \"data\" is used 2 times"}} with input as with_vcts(["data", "logs", "data"])
}
