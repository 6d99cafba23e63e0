package sandbox.projected_token

import data.lib.testdata as td
import rego.v1

test_projected_config_map_passes if {
	spec := object.union(td.good_pod_spec, {"volumes": [{"name": "cfg", "projected": {"sources": [{"configMap": {"name": "c"}}]}}]})
	count(violation) == 0 with input as td.sandbox_input(spec, {})
}

test_projected_token_is_denied if {
	spec := object.union(td.good_pod_spec, {"volumes": [{"name": "tok", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}, {"clusterTrustBundle": {"path": "b"}}]}}]})
	every inp in td.all_inputs(spec, {}) {
		count(violation) == 2 with input as inp
	}
}
