package sandbox.service_name_length

import data.lib.sandbox as lib
import rego.v1

# generateName gets five random characters appended by the API server.
name_length := count(lib.obj.metadata.name)

name_length := count(lib.obj.metadata.generateName) + 5 if not lib.obj.metadata.name

violation contains {"msg": sprintf("spec.service is true but the name is %d characters; a Service name is at most 63", [name_length])} if {
	lib.obj.spec.service == true
	name_length > 63
}
