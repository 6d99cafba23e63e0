package sandbox.host_ports

import data.lib.sandbox as lib
import rego.v1

violation contains {"msg": msg} if {
	some c in lib.containers
	some i, port in object.get(c.spec, "ports", [])
	port.hostPort
	origin := lib.origin(sprintf("%s/ports/%d/hostPort", [c.path, i]))
	msg := sprintf("%s: hostPort %v is not allowed%s", [lib.where(c), port.hostPort, origin])
}
