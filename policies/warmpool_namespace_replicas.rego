package warmpool.namespace_replicas

import data.lib.inventory as inv
import data.lib.sandbox as lib
import rego.v1

# A pool's replicas as the API server defaults them (1 when unset); anything not a
# non-negative number is warmpool-replicas' business, counted here as 0.
replicas_of(pool) := n if {
	n := object.get(pool, ["spec", "replicas"], 1)
	is_number(n)
	n >= 0
} else := 0

ns := inv.review_namespace

# Every other pool of the namespace, plus this one as it would be stored.
others := {name: pool |
	some name, pool in inv.namespaced(ns, lib.extensions_group, "SandboxWarmPool")
	name != lib.obj.metadata.name
}

total := sum([replicas_of(p) | some p in others]) + replicas_of(lib.obj)

violation contains {"msg": msg, "details": {"total": total, "ceiling": input.parameters.maxNamespaceReplicas}} if {
	inv.kept
	not lib.being_deleted
	total > input.parameters.maxNamespaceReplicas
	msg := sprintf("warm pools in namespace %s would keep %d sandboxes warm; the ceiling is %d", [ns, total, input.parameters.maxNamespaceReplicas])
}
