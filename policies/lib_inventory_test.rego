package lib.inventory_test

import data.lib.inventory
import rego.v1

inv := {"namespace": {"team": {
	"extensions.agents.x-k8s.io/v1beta1": {"SandboxWarmPool": {"a": {"spec": {"replicas": 1}}}},
	"extensions.agents.x-k8s.io/v1alpha1": {"SandboxWarmPool": {"b": {"spec": {"replicas": 2}}}},
	"v1": {"Service": {"s": {}}},
}}}

test_lookups_span_versions if {
	pools := inventory.namespaced("team", "extensions.agents.x-k8s.io", "SandboxWarmPool") with data.inventory as inv
	object.keys(pools) == {"a", "b"}
	services := inventory.namespaced("team", "", "Service") with data.inventory as inv
	object.keys(services) == {"s"}
	count(inventory.namespaced("other", "", "Service")) == 0 with data.inventory as inv
}

test_groups if {
	inventory.group_of("apps/v1") == "apps"
	inventory.group_of("v1") == ""
}

test_kept_only_with_an_inventory if {
	inventory.kept with data.inventory as {}
	not inventory.kept
}

test_review_namespace if {
	inventory.review_namespace == "a" with input as {"review": {"namespace": "a"}}
	inventory.review_namespace == "b" with input as {"review": {"object": {"metadata": {"namespace": "b"}}}}
}
