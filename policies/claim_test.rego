package claim_test

import data.claim
import data.lib.testdata as td
import rego.v1

claim_input(version, op, spec, params) := {
	"review": td.review("extensions.agents.x-k8s.io", "SandboxClaim", version, op, {
		"metadata": {"name": "c"},
		"spec": spec,
	}),
	"parameters": params,
}

good := {
	"warmPoolRef": {"name": "pool"},
	"env": [{"name": "MODEL", "value": "x"}],
	"additionalPodMetadata": {"labels": {"team": "a"}, "annotations": {"example.com/owner": "a"}},
	"lifecycle": {"shutdownTime": "2100-01-01T00:00:00Z"},
}

env_params := {"deniedNames": ["LD_PRELOAD"]}

md_params := {"reservedDomains": ["agents.x-k8s.io", "kubernetes.io", "k8s.io"]}

test_good_claim_passes if {
	inp := claim_input("v1beta1", "CREATE", good, {})
	count(claim.env.violation) == 0 with input as object.union(inp, {"parameters": env_params})
	count(claim.pod_metadata.violation) == 0 with input as object.union(inp, {"parameters": md_params})
	count(claim.shutdown_time.violation) == 0 with input as inp
	count(claim.template_ref.violation) == 0 with input as inp
}

test_denied_and_invalid_env_names if {
	spec := object.union(good, {"env": [{"name": "LD_PRELOAD", "value": "/x.so"}, {"name": "1BAD"}, {"value": "x"}]})
	claim.env.violation == {
		{"msg": "env[0]: LD_PRELOAD may not be set by a claim"},
		{"msg": "env[1]: name \"1BAD\" is not a valid environment variable name"},
		{"msg": "env[2]: name \"\" is not a valid environment variable name"},
	} with input as claim_input("v1beta1", "CREATE", spec, env_params)
}

test_reserved_label_domains_are_denied if {
	spec := object.union(good, {"additionalPodMetadata": {
		"labels": {"agents.x-k8s.io/sandbox-name-hash": "x", "node.kubernetes.io/role": "y", "kubernetes.io.example.com/ok": "z"},
		"annotations": {"k8s.io/x": "1"},
	}})
	vs := claim.pod_metadata.violation with input as claim_input("v1beta1", "CREATE", spec, md_params)
	count(vs) == 3
}

test_router_label_is_denied if {
	spec := object.union(good, {"additionalPodMetadata": {"labels": {"app": "sandbox-router"}}})
	claim.pod_metadata.violation == {{"msg": "additionalPodMetadata.labels: app=sandbox-router is reserved for the sandbox router"}} with input as claim_input("v1beta1", "CREATE", spec, md_params)
}

test_past_and_malformed_shutdown_times_are_denied if {
	past := object.union(good, {"lifecycle": {"shutdownTime": "2001-01-01T00:00:00Z"}})
	claim.shutdown_time.violation == {{"msg": "lifecycle.shutdownTime 2001-01-01T00:00:00Z is in the past"}} with input as claim_input("v1beta1", "CREATE", past, {})
	bad := object.union(good, {"lifecycle": {"shutdownTime": "tomorrow"}})
	count(claim.shutdown_time.violation) == 1 with input as claim_input("v1beta1", "CREATE", bad, {})
	ancient := object.union(good, {"lifecycle": {"shutdownTime": "1066-10-14T09:00:00Z"}})
	count(claim.shutdown_time.violation) == 1 with input as claim_input("v1beta1", "CREATE", ancient, {})
	soon := object.union(good, {"lifecycle": {"shutdownTime": "2200-01-01T00:00:00+02:00"}})
	count(claim.shutdown_time.violation) == 0 with input as claim_input("v1beta1", "CREATE", soon, {})
}

test_template_ref_by_version if {
	v1alpha1 := {"sandboxTemplateRef": {"name": "t"}}
	count(claim.template_ref.violation) == 0 with input as claim_input("v1alpha1", "CREATE", v1alpha1, {})
	claim.template_ref.violation == {{"msg": "spec.warmPoolRef.name must be set"}} with input as claim_input("v1beta1", "CREATE", v1alpha1, {})
	claim.template_ref.violation == {{"msg": "spec.sandboxTemplateRef.name must be set"}} with input as claim_input("v1alpha1", "CREATE", {}, {})
}
