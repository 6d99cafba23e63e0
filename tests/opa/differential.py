#!/usr/bin/env python3
"""Judge the cases our engine judged with real OPA and report every difference.

Input (a JSON plan written by tests/opa_differential.rs):
  {"sets": [{"name", "modules": {path: rego}, "cases": [
      {"review", "policy", "package", "input", "ours": [msg...] | {"error": text}}]}],
   "known": [{"set", "policy", "review", "reason"}]}

OPA is opa-golib-python-bindings (OPA's Go library; it parses Rego v1 only). A module that
OPA refuses as v0 is brought to v1 by `v0_to_v1` below (syntax only: `if` before bodies,
`contains` for partial sets, one rule per extra body), the step policies/README.md documents.

Prints one line per difference, then `compared: N cases (S sets x R reviews), differences: D,
known: K`, and exits 1 when a difference is not listed as known. Exit 3: OPA is not installed.
"""

import json
import re
import sys

try:
    from opa_bindings import OpaEngine, OpaError
except ImportError:  # reported by the Rust test as a skip (local) or a failure (CI)
    print("opa-golib-python-bindings is not installed", file=sys.stderr)
    sys.exit(3)


def _scan(text):
    """Yield (index, char, depth) for characters outside strings and comments."""
    depth = 0
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "#":
            while i < n and text[i] != "\n":
                i += 1
            continue
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            continue
        if c == "`":
            i = text.index("`", i + 1) + 1
            continue
        if c in "([{":
            yield i, c, depth
            depth += 1
        elif c in ")]}":
            depth -= 1
            yield i, c, depth
        else:
            yield i, c, depth
        i += 1


PARTIAL_SET = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*)\[(.*)\]$", re.S)


def v0_to_v1(text):
    """Rewrite a Rego v0 module (as `opa fmt` writes them) into v1 syntax for OPA.

    Statements start at column 0. At nesting depth 0 a `{` that is not a value (after `=` or
    `:=`) opens a rule body: `if` goes before it; a partial set head `p[x]` becomes
    `p contains x`; an extra body `} {` becomes a second rule with the same head (v0 reads it
    as another definition of the rule); `else [= v] {` gets its `if`.
    """
    out = []
    last = 0
    stmt = 0  # start of the current statement
    head = ""
    body_open = False  # whether the `{` last opened at depth 0 began a body
    body_closed = -1  # where the last body ended
    for i, c, depth in _scan(text):
        if depth != 0:
            continue
        at_line_start = i == 0 or text[i - 1] == "\n"
        if at_line_start and not c.isspace() and c != "}":
            stmt = i
        if c == "}" and body_open:
            body_closed = i
            body_open = False
        if c != "{":
            continue
        before = text[stmt:i].rstrip()
        if re.search(r"(:=|[^=!<>]=)$", before):
            continue  # a value, not a body
        body_open = True
        if body_closed >= 0 and not text[body_closed + 1 : i].strip():
            out.append(text[last:i].rstrip() + "\n" + head + " if {")
        elif re.search(r"\belse(\s*:?=.*)?$", before.split("\n")[-1]):
            out.append(text[last:i].rstrip() + " if {")
        else:
            m = PARTIAL_SET.match(before)
            head = f"{m.group(1)} contains {m.group(2)}" if m and "=" not in _top_level(before) else before
            out.append(text[last:stmt] + head + " if {")
        last = i + 1
    out.append(text[last:])
    return "".join(out)


def _top_level(raw):
    """The characters of `raw` outside brackets."""
    return "".join(c for _, c, d in _scan(raw) if d == 0 and c not in "[]")


def load(engine, path, rego):
    try:
        engine.add_policy(path, rego)
        return "v1"
    except OpaError as first:
        if first.code != "parse_error":
            raise
        converted = v0_to_v1(rego)
        try:
            engine.add_policy(path, converted)
        except OpaError as e:
            raise OpaError(e.code, f"{e.message}\n--- converted from v0:\n{converted}") from None
        return "v0"


def opa_messages(engine, case):
    try:
        result = engine.eval_document(case["package"][len("data."):] + ".violation", case["input"])
    except OpaError as e:
        if e.code == "undefined":
            return []
        return {"error": e.message}
    return sorted(v.get("msg") if isinstance(v, dict) else json.dumps(v) for v in result)


def main():
    plan = json.load(open(sys.argv[1]))
    known = {(k["set"], k["policy"], k["review"]): k["reason"] for k in plan.get("known", [])}
    compared = differences = known_hits = 0
    reviews = set()
    converted = []
    unknown = []
    for s in plan["sets"]:
        engine = OpaEngine()
        engine.add_data({"inventory": {}})
        for path, rego in sorted(s["modules"].items()):
            if load(engine, path, rego) == "v0":
                converted.append(path)
        for case in s["cases"]:
            compared += 1
            reviews.add(case["review"])
            ours = case["ours"]
            if isinstance(ours, list):
                ours = sorted(ours)
            theirs = opa_messages(engine, case)
            if ours == theirs or (isinstance(ours, dict) and isinstance(theirs, dict)):
                continue  # the same violations, or both engines fail the evaluation
            differences += 1
            key = (s["name"], case["policy"], case["review"])
            line = f"DIFF {s['name']} / {case['policy']} / {case['review']}: ours {json.dumps(ours)} opa {json.dumps(theirs)}"
            if key in known:
                known_hits += 1
                print(f"{line} (known: {known[key]})")
            else:
                unknown.append(line)
                print(line)
        engine.close()
    print(f"v0 modules brought to v1: {len(converted)}")
    print(
        f"compared: {compared} cases ({len(plan['sets'])} policy sets x {len(reviews)} reviews), "
        f"differences: {differences}, known: {known_hits}"
    )
    sys.exit(1 if unknown else 0)


if __name__ == "__main__":
    main()
