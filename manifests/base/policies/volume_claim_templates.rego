package sandbox.volume_claim_templates

import data.lib.sandbox as lib
import rego.v1

templates := object.get(lib.obj, ["spec", "volumeClaimTemplates"], [])

names := [object.get(t, ["metadata", "name"], "") | some t in templates]

violation contains {"msg": sprintf("volumeClaimTemplates[%d]: name %q is not a valid DNS label", [i, name])} if {
	some i, name in names
	not valid_label(name)
}

violation contains {"msg": sprintf("volumeClaimTemplates: name %q is used %d times", [name, n])} if {
	some name in {n | some n in names}
	n := count([x | some x in names; x == name])
	n > 1
}

valid_label(name) if {
	is_string(name)
	count(name) <= 63
	regex.match(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`, name)
}
