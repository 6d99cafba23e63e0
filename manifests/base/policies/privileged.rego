package sandbox.privileged

import data.lib.sandbox as lib
import rego.v1

violation contains {"msg": sprintf("%s: privileged containers are not allowed", [lib.where(c)])} if {
	some c in lib.containers
	c.spec.securityContext.privileged == true
}

violation contains {"msg": "pod spec has no containers; cannot be shown unprivileged"} if lib.containers_missing
