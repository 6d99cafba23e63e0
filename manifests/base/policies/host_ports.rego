package sandbox.host_ports

import data.lib.sandbox as lib
import rego.v1

violation contains {"msg": sprintf("%s: hostPort %v is not allowed", [lib.where(c), port.hostPort])} if {
	some c in lib.containers
	some port in object.get(c.spec, "ports", [])
	port.hostPort
}
