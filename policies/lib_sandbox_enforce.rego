# Enforce mode: in a namespace labelled `sandbox-admission.io/isolation: enforce`, every pod is a
# Sandbox pod, whatever marks it carries or drops. This adds a clause to `is_sandbox_pod` of
# lib_sandbox.rego (same package). The server gives policies the Namespace from its own watch cache
# as `input.review.namespaceObject`, so the verdict does not depend on which webhook entry the API
# server called. (With a `labelPrefix` other than the default, change the key here too.)
package lib.sandbox

import rego.v1

is_sandbox_pod if {
	is_kind("", "Pod")
	object.get(input.review, ["namespaceObject", "metadata", "labels", "sandbox-admission.io/isolation"], "") == "enforce"
}
