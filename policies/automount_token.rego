# A Sandbox pod that explicitly mounts its service-account token hands the sandboxed code
# Kubernetes API credentials. Leaving the field unset is not refused: the mutation sets it to
# false (and the effective pod a Sandbox is judged by shows that).
package sandbox.automount_token

import data.lib.sandbox as lib
import rego.v1

violation contains {"msg": msg} if {
	lib.pod_spec.automountServiceAccountToken == true
	msg := sprintf("automountServiceAccountToken: true is not allowed; sandboxed code gets no Kubernetes API credentials%s", [lib.origin("/automountServiceAccountToken")])
}
