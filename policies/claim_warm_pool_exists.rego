package claim.warm_pool_exists

import data.lib.inventory as inv
import data.lib.sandbox as lib
import rego.v1

# The pool a claim names: spec.warmPoolRef.name (v1beta1); v1alpha1's spec.warmpool when it
# names a pool rather than a choice ("none": no pool, "default": any pool of the template).
pool_name := lib.obj.spec.warmPoolRef.name if lib.review.kind.version != "v1alpha1"

pool_name := lib.obj.spec.warmpool if {
	lib.review.kind.version == "v1alpha1"
	not lib.obj.spec.warmpool in {"", "none", "default"}
}

violation contains {"msg": msg, "details": {"warmPool": pool_name}} if {
	inv.kept
	not lib.being_deleted
	is_string(pool_name)
	pool_name != ""
	ns := inv.review_namespace
	pools := inv.namespaced(ns, lib.extensions_group, "SandboxWarmPool")
	not pools[pool_name]
	msg := sprintf("SandboxWarmPool %q does not exist in namespace %s", [pool_name, ns])
}
