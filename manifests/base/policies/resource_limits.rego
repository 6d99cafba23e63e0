package sandbox.resource_limits

import data.lib.sandbox as lib
import rego.v1

violation contains {"msg": sprintf("%s: resources.limits.%s must be set", [lib.where(c), resource])} if {
	some c in lib.regular_containers
	some resource in ["cpu", "memory"]
	not c.spec.resources.limits[resource]
}

violation contains {"msg": "pod spec has no containers; limits cannot be checked"} if lib.containers_missing
