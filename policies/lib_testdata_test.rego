# Shared fixtures for the policy unit tests (a test file: never served).
package lib.testdata

import rego.v1

good_container(name) := {
	"name": name,
	"image": "registry.k8s.io/pause:3.9",
	"securityContext": {
		"allowPrivilegeEscalation": false,
		"capabilities": {"drop": ["ALL"]},
	},
	"resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
}

good_pod_spec := {
	"runtimeClassName": "gvisor",
	"automountServiceAccountToken": false,
	"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
	"containers": [good_container("app")],
}

# The good spec with its only container replaced.
with_container(c) := object.union(good_pod_spec, {"containers": [c]})

# The good container with `patch` merged into it.
container_with(patch) := object.union(good_container("app"), patch)

review(group, kind, version, op, obj) := {
	"uid": "test",
	"kind": {"group": group, "version": version, "kind": kind},
	"operation": op,
	"namespace": "team",
	"name": obj.metadata.name,
	"object": obj,
}

sandbox(spec) := {
	"apiVersion": "agents.x-k8s.io/v1beta1",
	"kind": "Sandbox",
	"metadata": {"name": "sb", "namespace": "team"},
	"spec": {"podTemplate": {"spec": spec}},
}

sandbox_pod(spec) := {
	"apiVersion": "v1",
	"kind": "Pod",
	"metadata": {
		"name": "sb",
		"namespace": "team",
		"ownerReferences": [{"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox", "name": "sb", "uid": "1", "controller": true}],
	},
	"spec": spec,
}

sandbox_input(spec, params) := {
	"review": review("agents.x-k8s.io", "Sandbox", "v1beta1", "CREATE", sandbox(spec)),
	"parameters": params,
}

sandbox_v1alpha1_input(spec, params) := {
	"review": review("agents.x-k8s.io", "Sandbox", "v1alpha1", "CREATE", object.union(sandbox(spec), {"apiVersion": "agents.x-k8s.io/v1alpha1"})),
	"parameters": params,
}

template_input(spec, params) := {
	"review": review("extensions.agents.x-k8s.io", "SandboxTemplate", "v1beta1", "UPDATE", object.union(sandbox(spec), {"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxTemplate"})),
	"parameters": params,
}

# A Sandbox judged by its effective pod (`spec` standing for it), with the pointers the
# mutation filled in.
effective_sandbox_input(spec, params, defaulted) := inp if {
	ctx := {"judge": "effective", "effective_pod": sandbox_pod(spec), "defaulted": defaulted}
	inp := object.union(sandbox_input(spec, params), {"sandbox_admission": ctx})
}

pod_input(spec, params) := {
	"review": review("", "Pod", "v1", "CREATE", sandbox_pod(spec)),
	"parameters": params,
}

# A pod labelled by the controller but with no ownerReference (yet).
labelled_pod_input(spec, params) := {
	"review": review("", "Pod", "v1", "CREATE", {
		"apiVersion": "v1", "kind": "Pod",
		"metadata": {"name": "p", "labels": {"agents.x-k8s.io/sandbox-name-hash": "0a1b2c3d"}},
		"spec": spec,
	}),
	"parameters": params,
}

plain_pod_input(spec, params) := {
	"review": review("", "Pod", "v1", "CREATE", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}),
	"parameters": params,
}

# Every way a pod spec reaches the policies, for rules that must hold on all of them.
all_inputs(spec, params) := [
	sandbox_input(spec, params),
	sandbox_v1alpha1_input(spec, params),
	template_input(spec, params),
	pod_input(spec, params),
	labelled_pod_input(spec, params),
]
