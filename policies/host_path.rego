package sandbox.host_path

import data.lib.sandbox as lib
import rego.v1

violation contains {"msg": sprintf("volume %q: hostPath volumes are not allowed%s", [object.get(v, "name", ""), lib.origin(sprintf("/volumes/%d", [i]))])} if {
	some i, v in object.get(lib.pod_spec, "volumes", [])
	v.hostPath
}
