package sandbox.service_owner

import data.lib.inventory as inv
import data.lib.sandbox as lib
import rego.v1

# The controller makes a Service named after a Sandbox with spec.service true. A Service of that
# name that the Sandbox does not own belongs to someone else: the Sandbox would take it over or
# go without one.
owned_by_this_sandbox(service) if {
	some ref in object.get(service, ["metadata", "ownerReferences"], [])
	ref.kind == "Sandbox"
	startswith(ref.apiVersion, "agents.x-k8s.io/")
	ref.name == lib.obj.metadata.name
	uid_matches(ref)
}

# A Sandbox being created has no uid yet; one that exists must be the owner by uid too.
uid_matches(_) if not lib.obj.metadata.uid

uid_matches(ref) if ref.uid == lib.obj.metadata.uid

violation contains {"msg": msg, "details": {"service": name}} if {
	inv.kept
	not lib.being_deleted
	lib.obj.spec.service == true
	name := lib.obj.metadata.name
	ns := inv.review_namespace
	service := inv.namespaced(ns, "", "Service")[name]
	not owned_by_this_sandbox(service)
	msg := sprintf("spec.service is true but Service %s/%s already exists and is not this Sandbox's", [ns, name])
}
