package claim.shutdown_time

import data.lib.sandbox as lib
import rego.v1

rfc3339 := `^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$`

violation contains {"msg": sprintf("lifecycle.shutdownTime %v is not an RFC 3339 time", [t])} if {
	t := lib.obj.spec.lifecycle.shutdownTime
	not well_formed(t)
}

violation contains {"msg": sprintf("lifecycle.shutdownTime %s is in the past", [t])} if {
	t := lib.obj.spec.lifecycle.shutdownTime
	well_formed(t)
	in_past(t)
}

# Nanosecond timestamps only span 1678..2262: decide outside that by the year alone.
year(t) := to_number(substring(t, 0, 4))

in_past(t) if year(t) < 1971

in_past(t) if {
	year(t) >= 1971
	year(t) < 2200
	time.parse_rfc3339_ns(t) < time.now_ns()
}

well_formed(t) if {
	is_string(t)
	regex.match(rfc3339, t)
}
