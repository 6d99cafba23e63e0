# Sandbox pods run in a sandboxed runtime (gVisor or Kata), recognised by what the RuntimeClass
# is, not by a fixed list of names: a class of one of this installation's runtime profiles, a
# known sandboxed class name (managed Kata offerings use their own), or, with cluster access, a
# RuntimeClass whose handler is a sandboxed handler.
package sandbox.runtime_class

import data.lib.sandbox as lib
import rego.v1

classes := object.get(input.parameters, "sandboxedRuntimeClasses", [])

handlers := object.get(input.parameters, "sandboxedHandlers", [])

sandboxed(class) if lib.context.runtime_classes[class]

sandboxed(class) if class in classes

sandboxed(class) if {
	rc := lib.context.runtime_class
	rc.metadata.name == class
	some pattern in handlers
	lib.matches_pattern(rc.handler, pattern)
}

violation contains {"msg": msg, "details": {"sandboxedRuntimeClasses": classes}} if {
	spec := lib.pod_spec
	not spec.runtimeClassName
	msg := "runtimeClassName is not set; a sandbox must run in a sandboxed runtime (gVisor or Kata)"
}

violation contains {"msg": msg, "details": {"sandboxedRuntimeClasses": classes, "sandboxedHandlers": handlers}} if {
	class := lib.pod_spec.runtimeClassName
	not sandboxed(class)
	msg := sprintf("runtimeClassName %q is not a sandboxed runtime%s; use a runtime profile's class, one of %v, or a RuntimeClass whose handler matches %v", [class, lib.origin("/runtimeClassName"), classes, handlers])
}
