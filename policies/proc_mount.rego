package sandbox.proc_mount

import data.lib.sandbox as lib
import rego.v1

violation contains {"msg": sprintf("%s: procMount %q is not allowed; only Default", [lib.where(c), mount])} if {
	some c in lib.containers
	mount := c.spec.securityContext.procMount
	mount != "Default"
}
