package sandbox.host_namespaces

import data.lib.sandbox as lib
import rego.v1

violation contains {"msg": sprintf("%s: true is not allowed%s", [field, lib.origin(concat("/", ["", field]))])} if {
	some field in ["hostNetwork", "hostPID", "hostIPC"]
	lib.pod_spec[field] == true
}
