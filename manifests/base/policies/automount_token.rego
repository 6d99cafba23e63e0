package sandbox.automount_token

import data.lib.sandbox as lib
import rego.v1

violation contains {"msg": "automountServiceAccountToken must be set to false"} if {
	spec := lib.pod_spec
	object.get(spec, "automountServiceAccountToken", true) != false
}
