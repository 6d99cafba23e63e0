# Pod metadata under sandbox-admission's own prefix is the webhook's bookkeeping (identity, idle
# clock, profiles). The controller copies a Sandbox's podTemplate.metadata to its pod, and a
# claim's additionalPodMetadata reaches the pod on adoption, after admission: refuse them here,
# naming each key, instead of letting an author pre-set (say) the idle clock's start.
package sandbox.reserved_metadata

import rego.v1

review := input.review

obj := review.object

sources := {"Sandbox": ["spec", "podTemplate", "metadata"], "SandboxTemplate": ["spec", "podTemplate", "metadata"], "SandboxClaim": ["spec", "additionalPodMetadata"]}

groups := {"Sandbox": "agents.x-k8s.io", "SandboxTemplate": "extensions.agents.x-k8s.io", "SandboxClaim": "extensions.agents.x-k8s.io"}

path := sources[review.kind.kind] if {
	groups[review.kind.kind] == review.kind.group
	not review.subResource
	not obj.metadata.deletionTimestamp
}

violation contains {"msg": msg, "details": {"field": field, "key": key}} if {
	metadata := object.get(obj, path, {})
	some field in ["labels", "annotations"]
	some key, _ in object.get(metadata, field, {})
	startswith(key, input.parameters.prefix)
	not allowed(field, key)
	msg := sprintf("%s.%s: %q is reserved: sandbox-admission sets it at admission", [concat(".", array.slice(path, 1, count(path))), field, key])
}

# Profile choices are inputs, not bookkeeping.
allowed("annotations", key) if {
	some name in input.parameters.allowedAnnotations
	key == concat("", [input.parameters.prefix, name])
}
