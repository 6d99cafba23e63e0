package sandbox.proc_mount

import data.lib.testdata as td
import rego.v1

test_default_passes if {
	spec := td.with_container(td.container_with({"securityContext": {"procMount": "Default"}}))
	count(violation) == 0 with input as td.sandbox_input(spec, {})
}

test_unmasked_is_denied if {
	spec := td.with_container(td.container_with({"securityContext": {"procMount": "Unmasked"}}))
	every inp in td.all_inputs(spec, {}) {
		violation == {{"msg": "containers[app]: procMount \"Unmasked\" is not allowed; only Default"}} with input as inp
	}
}
