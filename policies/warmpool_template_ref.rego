package warmpool.template_ref

import data.lib.sandbox as lib
import rego.v1

violation contains {"msg": "spec.sandboxTemplateRef.name must name a SandboxTemplate"} if {
	not valid_name(object.get(lib.obj, ["spec", "sandboxTemplateRef", "name"], ""))
}

valid_name(name) if {
	is_string(name)
	name != ""
}
