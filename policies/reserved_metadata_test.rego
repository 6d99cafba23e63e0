package sandbox.reserved_metadata

import rego.v1

params := {"prefix": "sandbox-admission.io/", "allowedAnnotations": ["runtime", "network-profile"]}

review(kind, group, spec) := {
	"kind": {"group": group, "version": "v1beta1", "kind": kind},
	"operation": "CREATE",
	"object": {"metadata": {"name": "box"}, "spec": spec},
}

template_spec(metadata) := {"podTemplate": {"metadata": metadata, "spec": {"containers": [{"name": "c", "image": "i"}]}}}

test_sandbox_forging_the_idle_clock_is_refused_by_name if {
	spec := template_spec({"annotations": {"sandbox-admission.io/admitted-at": "2030-01-01T00:00:00Z"}})
	violation == {{
		"msg": "podTemplate.metadata.annotations: \"sandbox-admission.io/admitted-at\" is reserved: sandbox-admission sets it at admission",
		"details": {"field": "annotations", "key": "sandbox-admission.io/admitted-at"},
	}} with input as {"review": review("Sandbox", "agents.x-k8s.io", spec), "parameters": params}
}

test_template_labels_are_refused_each_named if {
	spec := template_spec({"labels": {"sandbox-admission.io/sandbox-uid": "x", "sandbox-admission.io/runtime": "gvisor", "app": "ok"}})
	keys := {v.details.key | some v in violation} with input as {"review": review("SandboxTemplate", "extensions.agents.x-k8s.io", spec), "parameters": params}
	keys == {"sandbox-admission.io/sandbox-uid", "sandbox-admission.io/runtime"}
}

test_claim_additional_pod_metadata_is_refused if {
	spec := {"additionalPodMetadata": {"annotations": {"sandbox-admission.io/idle-timeout": "87600h"}}}
	some v in violation with input as {"review": review("SandboxClaim", "extensions.agents.x-k8s.io", spec), "parameters": params}
	startswith(v.msg, "additionalPodMetadata.annotations: \"sandbox-admission.io/idle-timeout\"")
}

test_profile_choices_and_other_prefixes_pass if {
	spec := template_spec({
		"annotations": {"sandbox-admission.io/runtime": "kata", "sandbox-admission.io/network-profile": "isolated", "example.com/x": "y"},
		"labels": {"sandbox-admission.io.example/x": "y", "app": "a"},
	})
	count(violation) == 0 with input as {"review": review("Sandbox", "agents.x-k8s.io", spec), "parameters": params}
}

test_profile_choice_as_a_label_is_refused if {
	spec := template_spec({"labels": {"sandbox-admission.io/network-profile": "none"}})
	count(violation) == 1 with input as {"review": review("Sandbox", "agents.x-k8s.io", spec), "parameters": params}
}

test_other_prefix_configured if {
	spec := template_spec({"annotations": {"sandbox-admission.io/admitted-at": "x", "acme.io/admitted-at": "y"}})
	keys := {v.details.key | some v in violation} with input as {"review": review("Sandbox", "agents.x-k8s.io", spec), "parameters": {"prefix": "acme.io/", "allowedAnnotations": []}}
	keys == {"acme.io/admitted-at"}
}

test_deletion_status_and_other_kinds_are_not_judged if {
	spec := template_spec({"annotations": {"sandbox-admission.io/admitted-at": "x"}})
	deleting := object.union(review("Sandbox", "agents.x-k8s.io", spec), {"object": {"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}})
	count(violation) == 0 with input as {"review": deleting, "parameters": params}
	status := object.union(review("Sandbox", "agents.x-k8s.io", spec), {"subResource": "status"})
	count(violation) == 0 with input as {"review": status, "parameters": params}
	count(violation) == 0 with input as {"review": review("Sandbox", "example.com", spec), "parameters": params}
}
