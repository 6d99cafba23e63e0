package lib.sandbox_enforce_test

import data.lib.sandbox
import rego.v1

pod_review(ns_labels) := {
	"kind": {"group": "", "version": "v1", "kind": "Pod"},
	"operation": "CREATE",
	"namespace": "team",
	"object": {"metadata": {"name": "plain", "labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
	"namespaceObject": {"metadata": {"name": "team", "labels": ns_labels}},
}

test_any_pod_of_an_enforce_namespace_is_a_sandbox_pod if {
	sandbox.is_sandbox_pod with input as {"review": pod_review({"sandbox-admission.io/isolation": "enforce"})}
	sandbox.pod_spec.containers[0].name == "c" with input as {"review": pod_review({"sandbox-admission.io/isolation": "enforce"})}
}

test_other_namespaces_are_not_enforced if {
	not sandbox.is_sandbox_pod with input as {"review": pod_review({"sandbox-admission.io/isolation": "audit"})}
	not sandbox.is_sandbox_pod with input as {"review": pod_review({})}
	not sandbox.is_sandbox_pod with input as {"review": object.remove(pod_review({}), ["namespaceObject"])}
}

test_only_pods if {
	review := object.union(pod_review({"sandbox-admission.io/isolation": "enforce"}), {"kind": {"group": "apps", "kind": "Deployment"}})
	not sandbox.is_sandbox_pod with input as {"review": review}
}
