package claim.pod_metadata

import data.lib.sandbox as lib
import rego.v1

metadata := object.get(lib.obj, ["spec", "additionalPodMetadata"], {})

violation contains {"msg": sprintf("additionalPodMetadata.%s: key %q is in reserved domain %q", [field, key, domain])} if {
	some field in ["labels", "annotations"]
	some key, _ in object.get(metadata, field, {})
	domain := reserved_domain(key)
}

violation contains {"msg": "additionalPodMetadata.labels: app=sandbox-router is reserved for the sandbox router"} if {
	metadata.labels.app == "sandbox-router"
}

# `node.kubernetes.io/x` is in `kubernetes.io`; `kubernetes.io.example.com/x` is not.
reserved_domain(key) := domain if {
	contains(key, "/")
	prefix := split(key, "/")[0]
	some domain in object.get(input.parameters, "reservedDomains", [])
	in_domain(prefix, domain)
}

in_domain(prefix, domain) if prefix == domain

in_domain(prefix, domain) if endswith(prefix, concat("", [".", domain]))
