package warmpool_test

import data.lib.testdata as td
import data.warmpool
import rego.v1

pool(spec, params) := {
	"review": td.review("extensions.agents.x-k8s.io", "SandboxWarmPool", "v1alpha1", "CREATE", {
		"metadata": {"name": "pool"},
		"spec": spec,
	}),
	"parameters": params,
}

good := {"replicas": 3, "sandboxTemplateRef": {"name": "tmpl"}}

test_good_pool_passes if {
	count(warmpool.replicas.violation) == 0 with input as pool(good, {"maxReplicas": 5})
	count(warmpool.template_ref.violation) == 0 with input as pool(good, {})
}

test_replicas_over_ceiling_are_denied if {
	warmpool.replicas.violation == {{"msg": "replicas 3 exceeds the ceiling of 2"}} with input as pool(good, {"maxReplicas": 2})
}

test_bad_replicas_are_denied if {
	every n in [-1, 1.5, "3"] {
		count(warmpool.replicas.violation) >= 1 with input as pool(object.union(good, {"replicas": n}), {"maxReplicas": 5})
	}
}

test_missing_template_ref_is_denied if {
	every spec in [{"replicas": 1}, {"sandboxTemplateRef": {}}, {"sandboxTemplateRef": {"name": ""}}] {
		count(warmpool.template_ref.violation) == 1 with input as pool(spec, {})
	}
}
