# Helpers shared by the sandbox policies: which objects are judged, and where their pod spec is.
package lib.sandbox

import rego.v1

review := input.review

obj := review.object

sandbox_group := "agents.x-k8s.io"

extensions_group := "extensions.agents.x-k8s.io"

is_kind(group, kind) if {
	review.kind.group == group
	review.kind.kind == kind
}

is_sandbox if is_kind(sandbox_group, "Sandbox")

is_template if is_kind(extensions_group, "SandboxTemplate")

is_claim if is_kind(extensions_group, "SandboxClaim")

is_warm_pool if is_kind(extensions_group, "SandboxWarmPool")

# A pod the Sandbox controller made: a controller ownerReference to a Sandbox, or its label.
is_sandbox_pod if {
	is_kind("", "Pod")
	some ref in object.get(obj, ["metadata", "ownerReferences"], [])
	ref.controller == true
	ref.kind == "Sandbox"
	startswith(ref.apiVersion, "agents.x-k8s.io/")
}

is_sandbox_pod if {
	is_kind("", "Pod")
	_ = obj.metadata.labels["agents.x-k8s.io/sandbox-name-hash"]
}

# An object on its way out (finalizers being removed) is not judged again: refusing that
# update would leave it stuck in deletion.
being_deleted if obj.metadata.deletionTimestamp

# Pod specs are immutable once created, except for ephemeral containers (their own
# subresource), so Sandbox pods are judged on CREATE and when ephemeral containers are added.
pod_judged if review.operation == "CREATE"

pod_judged if review.subResource == "ephemeralcontainers"

# The pod spec under judgement. Missing in a Sandbox or template it is `{}`, so every rule that
# needs a field finds it absent and fails closed. Undefined for objects with no pod spec
# (plain pods, other kinds): the pod rules do not apply to them.
pod_spec := object.get(obj, ["spec", "podTemplate", "spec"], {}) if {
	is_sandbox
	not being_deleted
}

pod_spec := object.get(obj, ["spec", "podTemplate", "spec"], {}) if {
	is_template
	not being_deleted
}

pod_spec := object.get(obj, "spec", {}) if {
	is_sandbox_pod
	pod_judged
}

container_fields := ["containers", "initContainers", "ephemeralContainers"]

# Every container of the pod spec, with the field it came from.
containers contains {"field": field, "name": object.get(c, "name", "(unnamed)"), "spec": c} if {
	some field in container_fields
	list := object.get(pod_spec, field, [])
	is_array(list)
	some c in list
}

# Ephemeral containers may not set resources or ports, so those rules skip them.
regular_containers contains c if {
	some c in containers
	c.field != "ephemeralContainers"
}

# A pod spec with no usable `containers` list cannot be shown compliant by any container rule.
containers_missing if {
	pod_spec
	not has_containers
}

has_containers if {
	list := pod_spec.containers
	is_array(list)
	count(list) > 0
}

# Where a container is, for messages: `containers[app]`.
where(c) := sprintf("%s[%s]", [c.field, c.name])

# A pod-level or container-level securityContext field, the container's value winning.
effective_security(c, field) := c.spec.securityContext[field]

effective_security(c, field) := pod_spec.securityContext[field] if {
	not has_key(object.get(c.spec, "securityContext", {}), field)
}

has_key(o, k) if _ = o[k]

# Namespace allowlists: an exact name or a prefix ending in `*`.
namespace_allowed(allowed) if {
	some pattern in allowed
	pattern == review.namespace
}

namespace_allowed(allowed) if {
	some pattern in allowed
	endswith(pattern, "*")
	startswith(review.namespace, trim_suffix(pattern, "*"))
}
