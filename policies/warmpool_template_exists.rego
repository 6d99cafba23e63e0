package warmpool.template_exists

import data.lib.inventory as inv
import data.lib.sandbox as lib
import rego.v1

violation contains {"msg": msg, "details": {"template": name}} if {
	inv.kept
	not lib.being_deleted
	name := lib.obj.spec.sandboxTemplateRef.name
	is_string(name)
	name != ""
	ns := inv.review_namespace
	templates := inv.namespaced(ns, lib.extensions_group, "SandboxTemplate")
	not templates[name]
	msg := sprintf("SandboxTemplate %q does not exist in namespace %s", [name, ns])
}
