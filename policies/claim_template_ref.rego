package claim.template_ref

import data.lib.sandbox as lib
import rego.v1

ref_field := "sandboxTemplateRef" if lib.review.kind.version == "v1alpha1"

ref_field := "warmPoolRef" if lib.review.kind.version != "v1alpha1"

violation contains {"msg": sprintf("spec.%s.name must be set", [ref_field])} if {
	name := object.get(lib.obj, ["spec", ref_field, "name"], "")
	not non_empty_string(name)
}

non_empty_string(s) if {
	is_string(s)
	s != ""
}
