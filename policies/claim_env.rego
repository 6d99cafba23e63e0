package claim.env

import data.lib.sandbox as lib
import rego.v1

denied := {n | some n in object.get(input.parameters, "deniedNames", [])}

env := object.get(lib.obj, ["spec", "env"], [])

violation contains {"msg": sprintf("env[%d]: name %q is not a valid environment variable name", [i, name])} if {
	some i, e in env
	name := object.get(e, "name", "")
	not valid_name(name)
}

violation contains {"msg": sprintf("env[%d]: %s may not be set by a claim", [i, name])} if {
	some i, e in env
	name := e.name
	name in denied
}

valid_name(name) if {
	is_string(name)
	regex.match(`^[-._a-zA-Z][-._a-zA-Z0-9]*$`, name)
}
