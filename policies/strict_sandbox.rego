# Upstream's ValidatingAdmissionPolicy example (examples/policy/vap/secure-sandbox-policy.yaml),
# rule for rule and message for message, for the strict profile: it judges the Sandbox exactly
# as written, as a ValidatingAdmissionPolicy does. Each rule below carries the number of the
# CEL validation it mirrors.
package sandbox.strict_sandbox

import rego.v1

spec := object.get(input.review.object, ["spec", "podTemplate", "spec"], {})

has_field(o, k) if _ = o[k]

# variables.allContainers. The CEL expression fails when `containers` is missing, and with
# failurePolicy: Fail that is a denial: see `missing_containers`.
all_containers := array.concat(
	array.concat(object.get(spec, "containers", []), object.get(spec, "initContainers", [])),
	object.get(spec, "ephemeralContainers", []),
)

sc(c) := object.get(c, "securityContext", {})

violation contains {"msg": "Security Violation: the Sandbox has no spec.podTemplate.spec.containers, so its containers cannot be checked (failurePolicy: Fail)"} if {
	not is_array(spec.containers)
}

# 1
violation contains {"msg": "Security Violation: All Sandboxes must use 'runtimeClassName: gvisor'"} if {
	not spec.runtimeClassName == "gvisor"
}

# 2
violation contains {"msg": "Security Violation: 'hostNetwork: true' is strictly prohibited. Sandboxes must be isolated from the node network."} if {
	has_field(spec, "hostNetwork")
	spec.hostNetwork != false
}

# 3
violation contains {"msg": "Security Violation: 'automountServiceAccountToken' must be explicitly set to 'false'. Sandbox workloads are not permitted to access the K8s API."} if {
	not spec.automountServiceAccountToken == false
}

# 4
violation contains {"msg": "Security Violation: Privileged containers are not allowed (checked in containers, initContainers, and ephemeralContainers)."} if {
	some c in all_containers
	has_field(sc(c), "privileged")
	sc(c).privileged != false
}

# 5
drops_all(c) if "ALL" in sc(c).capabilities.drop

violation contains {"msg": "Security Violation: All containers must explicitly drop 'ALL' capabilities in securityContext."} if {
	some c in all_containers
	not drops_all(c)
}

# 6
limited(c) if {
	has_field(c.resources.limits, "memory")
	has_field(c.resources.limits, "cpu")
}

violation contains {"msg": "Security Violation: All containers must define resource limits (cpu and memory) to prevent DoS."} if {
	some c in all_containers
	not limited(c)
}

# 7
non_root(c) if sc(c).runAsNonRoot == true

non_root(c) if {
	not has_field(sc(c), "runAsNonRoot")
	spec.securityContext.runAsNonRoot == true
}

violation contains {"msg": "Security Violation: Pods or Containers must set 'runAsNonRoot: true', and containers cannot override it to false."} if {
	some c in all_containers
	not non_root(c)
}

# 8
violation contains {"msg": "Security Violation: Projected Service Account Tokens, ClusterTrustBundles, and PodCertificates are prohibited."} if {
	some v in object.get(spec, "volumes", [])
	some s in v.projected.sources
	some k in ["serviceAccountToken", "clusterTrustBundle", "podCertificate"]
	has_field(s, k)
}

# 9
violation contains {"msg": "Security Violation: HostPath volumes are strictly prohibited. You cannot mount host directories."} if {
	some v in object.get(spec, "volumes", [])
	has_field(v, "hostPath")
}

# 10
violation contains {"msg": "Security Violation: Capabilities.add must be empty. You cannot add capabilities."} if {
	some c in all_containers
	count(sc(c).capabilities.add) > 0
}

# 11
violation contains {"msg": "Security Violation: 'hostPID' and 'hostIPC' must be false."} if {
	some field in ["hostPID", "hostIPC"]
	has_field(spec, field)
	spec[field] != false
}

# 12
violation contains {"msg": "Security Violation: 'hostPort' usage is prohibited."} if {
	some c in all_containers
	some p in object.get(c, "ports", [])
	has_field(p, "hostPort")
}

# 13
violation contains {"msg": "Security Violation: Custom 'sysctls' are prohibited."} if {
	count(spec.securityContext.sysctls) > 0
}

# 14
violation contains {"msg": "Security Violation: 'procMount' must be 'Default' (Unmasked is prohibited)."} if {
	some c in all_containers
	has_field(sc(c), "procMount")
	sc(c).procMount != "Default"
}

# 15
violation contains {"msg": "Scheduling Violation: Sandboxes must be scheduled on gVisor nodes (nodeSelector 'sandbox.gke.io/runtime: gvisor')."} if {
	not spec.nodeSelector["sandbox.gke.io/runtime"] == "gvisor"
}

# 16
gvisor_toleration(t) if {
	t.key == "sandbox.gke.io/runtime"
	t.value == "gvisor"
	t.effect == "NoSchedule"
}

tolerates_gvisor if {
	some t in spec.tolerations
	gvisor_toleration(t)
}

violation contains {"msg": "Scheduling Violation: Sandboxes must tolerate the gVisor taint ('sandbox.gke.io/runtime=gvisor:NoSchedule')."} if {
	not tolerates_gvisor
}
