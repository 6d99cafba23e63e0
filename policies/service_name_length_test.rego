package sandbox.service_name_length

import data.lib.testdata as td
import rego.v1

long := concat("", ["a" | some _ in numbers.range(1, 64)])

named(name, service) := object.union(td.sandbox_input(td.good_pod_spec, {}), {"review": {"object": {
	"metadata": {"name": name},
	"spec": {"service": service},
}}})

test_short_name_passes if {
	count(violation) == 0 with input as named("short", true)
}

test_long_name_without_service_passes if {
	count(violation) == 0 with input as named(long, false)
}

test_long_name_with_service_is_denied if {
	violation == {{"msg": "spec.service is true but the name is 64 characters; a Service name is at most 63"}} with input as named(long, true)
}

test_long_generate_name_is_denied if {
	inp := object.union(td.sandbox_input(td.good_pod_spec, {}), {"review": {"object": {"metadata": {"generateName": substring(long, 0, 60)}, "spec": {"service": true}}}})
	count(violation) == 1 with input as json.remove(inp, ["review/object/metadata/name"])
}
