package warmpool.replicas

import data.lib.sandbox as lib
import rego.v1

ceiling := object.get(input.parameters, "maxReplicas", 0)

violation contains {"msg": sprintf("replicas %v exceeds the ceiling of %v", [n, ceiling])} if {
	n := lib.obj.spec.replicas
	is_number(n)
	n > ceiling
}

violation contains {"msg": sprintf("replicas must be a non-negative integer, got %v", [n])} if {
	n := lib.obj.spec.replicas
	not non_negative_integer(n)
}

non_negative_integer(n) if {
	is_number(n)
	n >= 0
	round(n) == n
}
