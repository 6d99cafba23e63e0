package sandbox.privileged

import data.lib.sandbox as lib
import rego.v1

violation contains {"msg": msg} if {
	some c in lib.containers
	c.spec.securityContext.privileged == true
	origin := lib.origin(concat("", [c.path, "/securityContext/privileged"]))
	msg := sprintf("%s: privileged containers are not allowed%s", [lib.where(c), origin])
}

violation contains {"msg": "pod spec has no containers; cannot be shown unprivileged"} if lib.containers_missing
