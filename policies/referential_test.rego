package referential_test

import data.claim.warm_pool_exists
import data.lib.testdata as td
import data.sandbox.service_owner
import data.warmpool.namespace_replicas
import data.warmpool.template_exists
import rego.v1

ext := "extensions.agents.x-k8s.io"

pool_obj(name, replicas, template) := {
	"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxWarmPool",
	"metadata": {"name": name, "namespace": "team"},
	"spec": {"replicas": replicas, "sandboxTemplateRef": {"name": template}},
}

inventory := {"namespace": {
	"team": {
		"extensions.agents.x-k8s.io/v1beta1": {
			"SandboxWarmPool": {"pool-a": pool_obj("pool-a", 10, "tmpl"), "pool-b": pool_obj("pool-b", 30, "tmpl")},
			"SandboxTemplate": {"tmpl": {"metadata": {"name": "tmpl", "namespace": "team"}}},
		},
		"v1": {"Service": {
			"taken": {"metadata": {"name": "taken", "namespace": "team"}},
			"mine": {"metadata": {"name": "mine", "namespace": "team", "ownerReferences": [{"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox", "name": "mine", "uid": "u-1", "controller": true}]}},
		}},
	},
	"other": {"extensions.agents.x-k8s.io/v1beta1": {"SandboxWarmPool": {"elsewhere": pool_obj("elsewhere", 1, "tmpl")}}},
}}

claim(version, spec) := {"review": td.review(ext, "SandboxClaim", version, "CREATE", {
	"apiVersion": concat("/", [ext, version]), "kind": "SandboxClaim",
	"metadata": {"name": "c", "namespace": "team"}, "spec": spec,
})}

test_claim_of_an_existing_pool_passes if {
	count(warm_pool_exists.violation) == 0 with input as claim("v1beta1", {"warmPoolRef": {"name": "pool-a"}}) with data.inventory as inventory
}

test_claim_of_a_missing_pool_warns if {
	v := warm_pool_exists.violation with input as claim("v1beta1", {"warmPoolRef": {"name": "nope"}}) with data.inventory as inventory
	v == {{"msg": "SandboxWarmPool \"nope\" does not exist in namespace team", "details": {"warmPool": "nope"}}}
}

test_a_pool_in_another_namespace_does_not_count if {
	count(warm_pool_exists.violation) == 1 with input as claim("v1beta1", {"warmPoolRef": {"name": "elsewhere"}}) with data.inventory as inventory
}

test_v1alpha1_claims_name_a_pool_or_a_choice if {
	count(warm_pool_exists.violation) == 1 with input as claim("v1alpha1", {"sandboxTemplateRef": {"name": "tmpl"}, "warmpool": "nope"}) with data.inventory as inventory
	count(warm_pool_exists.violation) == 0 with input as claim("v1alpha1", {"sandboxTemplateRef": {"name": "tmpl"}, "warmpool": "pool-b"}) with data.inventory as inventory
	every choice in ["default", "none"] {
		count(warm_pool_exists.violation) == 0 with input as claim("v1alpha1", {"sandboxTemplateRef": {"name": "tmpl"}, "warmpool": choice}) with data.inventory as inventory
	}
}

test_without_an_inventory_nothing_is_judged if {
	count(warm_pool_exists.violation) == 0 with input as claim("v1beta1", {"warmPoolRef": {"name": "nope"}})
	count(template_exists.violation) == 0 with input as pool("new", 1, "nope")
	count(service_owner.violation) == 0 with input as sandbox({"metadata": {"name": "taken", "namespace": "team"}, "spec": {"service": true}})
}

pool(name, replicas, template) := {
	"review": td.review(ext, "SandboxWarmPool", "v1beta1", "UPDATE", pool_obj(name, replicas, template)),
	"parameters": {"maxNamespaceReplicas": 50},
}

test_pool_of_an_existing_template_passes if {
	count(template_exists.violation) == 0 with input as pool("new", 1, "tmpl") with data.inventory as inventory
}

test_pool_of_a_missing_template_warns if {
	v := template_exists.violation with input as pool("new", 1, "nope") with data.inventory as inventory
	v == {{"msg": "SandboxTemplate \"nope\" does not exist in namespace team", "details": {"template": "nope"}}}
}

test_namespace_replicas_under_the_ceiling_pass if {
	# 10 + 30 + 10 = 50
	count(namespace_replicas.violation) == 0 with input as pool("new", 10, "tmpl") with data.inventory as inventory
}

test_namespace_replicas_over_the_ceiling_are_denied if {
	v := namespace_replicas.violation with input as pool("new", 11, "tmpl") with data.inventory as inventory
	v == {{"msg": "warm pools in namespace team would keep 51 sandboxes warm; the ceiling is 50", "details": {"total": 51, "ceiling": 50}}}
}

test_a_pool_is_counted_once_when_it_is_updated if {
	# pool-b grows from 30 to 40: 10 + 40 = 50, not 10 + 30 + 40.
	count(namespace_replicas.violation) == 0 with input as pool("pool-b", 40, "tmpl") with data.inventory as inventory
	count(namespace_replicas.violation) == 1 with input as pool("pool-b", 41, "tmpl") with data.inventory as inventory
}

test_unset_replicas_count_as_one if {
	p := object.remove(pool_obj("new", 0, "tmpl"), ["spec"])
	inp := {"review": td.review(ext, "SandboxWarmPool", "v1beta1", "CREATE", object.union(p, {"spec": {"sandboxTemplateRef": {"name": "tmpl"}}})), "parameters": {"maxNamespaceReplicas": 40}}
	v := namespace_replicas.violation with input as inp with data.inventory as inventory
	v[_].details.total == 41
}

sandbox(obj) := {"review": td.review("agents.x-k8s.io", "Sandbox", "v1beta1", "CREATE", object.union({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox"}, obj))}

test_a_service_name_taken_by_someone_else_is_denied if {
	v := service_owner.violation with input as sandbox({"metadata": {"name": "taken", "namespace": "team"}, "spec": {"service": true}}) with data.inventory as inventory
	v == {{"msg": "spec.service is true but Service team/taken already exists and is not this Sandbox's", "details": {"service": "taken"}}}
}

test_own_service_free_name_or_no_service_pass if {
	# The Sandbox's own Service (the controller made it), on update.
	count(service_owner.violation) == 0 with input as sandbox({"metadata": {"name": "mine", "namespace": "team", "uid": "u-1"}, "spec": {"service": true}}) with data.inventory as inventory
	count(service_owner.violation) == 0 with input as sandbox({"metadata": {"name": "free", "namespace": "team"}, "spec": {"service": true}}) with data.inventory as inventory
	count(service_owner.violation) == 0 with input as sandbox({"metadata": {"name": "taken", "namespace": "team"}, "spec": {}}) with data.inventory as inventory
}

test_a_service_owned_by_a_former_sandbox_of_the_same_name_is_denied if {
	count(service_owner.violation) == 1 with input as sandbox({"metadata": {"name": "mine", "namespace": "team", "uid": "u-2"}, "spec": {"service": true}}) with data.inventory as inventory
}
