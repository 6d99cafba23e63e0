package sandbox.proc_mount

import data.lib.sandbox as lib
import rego.v1

violation contains {"msg": msg} if {
	some c in lib.containers
	mount := c.spec.securityContext.procMount
	mount != "Default"
	origin := lib.origin(concat("", [c.path, "/securityContext/procMount"]))
	msg := sprintf("%s: procMount %q is not allowed; only Default%s", [lib.where(c), mount, origin])
}
