package sandbox.projected_token

import data.lib.sandbox as lib
import rego.v1

forbidden := ["serviceAccountToken", "clusterTrustBundle", "podCertificate"]

violation contains {"msg": sprintf("volume %q: projected %s is not allowed", [object.get(v, "name", ""), kind])} if {
	some v in object.get(lib.pod_spec, "volumes", [])
	some source in v.projected.sources
	some kind in forbidden
	_ = source[kind]
}
