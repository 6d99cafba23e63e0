# Helpers for referential policies: lookups in data.inventory, Gatekeeper's layout of the
# cluster state the server keeps (`sync` in the configuration; `scan` builds it from its input):
#   data.inventory.cluster[groupVersion][kind][name]
#   data.inventory.namespace[namespace][groupVersion][kind][name]
# Versions are not compared: v1alpha1 and v1beta1 describe the same stored object.
package lib.inventory

import rego.v1

# Referential rules judge only where an inventory is kept. A server without cluster access has
# none, and "nothing found" there would be a guess, not a fact.
kept if data.inventory

# The group of an apiVersion: "apps/v1" -> "apps", "v1" -> "" (core).
group_of(api_version) := group if {
	parts := split(api_version, "/")
	count(parts) == 2
	group := parts[0]
}

group_of(api_version) := "" if not contains(api_version, "/")

# Objects of `group`/`kind` in namespace `ns`, by name.
namespaced(ns, group, kind) := {name: obj |
	some gv, name
	obj := data.inventory.namespace[ns][gv][kind][name]
	group_of(gv) == group
}

# The namespace of the object under review.
review_namespace := input.review.namespace if input.review.namespace != ""

review_namespace := input.review.object.metadata.namespace if {
	object.get(input.review, "namespace", "") == ""
}
