//! The Rego reproductions of issue 12 (causes 3 to 7), each held on both evaluation paths of the
//! patched regorus (vendor/regorus, PATCHES.md): the interpreter the server uses today and the
//! RVM compiler/VM. The expected values are what real OPA v1 gives for the same module and input
//! (opa-golib-python-bindings; the differential test in tests/opa/ checks the shipped policies
//! and gatekeeper-library the same way).

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::RegoVM;
use regorus::{Engine, Rc, Value};
use serde_json::{Value as Json, json};

/// `Ok(value)` (`null` when undefined) or `Err(message)` of `rule` in the interpreter.
fn interpreter(rego: &str, v0: bool, rule: &str, input: &Json) -> Result<Json, String> {
    let mut engine = Engine::new();
    engine.set_rego_v0(v0);
    add_modules(&mut engine, rego)?;
    engine.set_input(Value::from_json_str(&input.to_string()).unwrap());
    let value = engine.eval_rule(rule.into()).map_err(|e| e.to_string())?;
    Ok(to_json(&value))
}

/// The same through the RVM: compiled with `rule` as entry point, run on a fresh VM.
fn rvm(rego: &str, v0: bool, rule: &str, input: &Json) -> Result<Json, String> {
    let mut engine = Engine::new();
    engine.set_rego_v0(v0);
    add_modules(&mut engine, rego)?;
    let entry: Rc<str> = Rc::from(rule);
    let compiled = engine
        .compile_with_entrypoint(&entry)
        .map_err(|e| format!("compile: {e}"))?;
    let program =
        Compiler::compile_from_policy(&compiled, &[rule]).map_err(|e| format!("rvm: {e}"))?;
    let mut vm = RegoVM::new();
    vm.load_program(program);
    vm.set_input(Value::from_json_str(&input.to_string()).unwrap());
    let value = vm
        .execute_entry_point_by_name(rule)
        .map_err(|e| e.to_string())?;
    Ok(to_json(&value))
}

/// `rego` as modules: several are separated by a line `# ---`.
fn add_modules(engine: &mut Engine, rego: &str) -> Result<(), String> {
    for (i, module) in rego.split("\n# ---\n").enumerate() {
        engine
            .add_policy(format!("repro{i}.rego"), module.into())
            .map_err(|e| format!("load: {e}"))?;
    }
    Ok(())
}

fn to_json(value: &Value) -> Json {
    match value {
        Value::Undefined => Json::Null,
        v => serde_json::from_str(&v.to_json_str().unwrap()).unwrap(),
    }
}

/// Both paths give `expected` (OPA's answer).
fn both(rego: &str, v0: bool, rule: &str, input: Json, expected: Json) {
    for (path, got) in [
        ("interpreter", interpreter(rego, v0, rule, &input)),
        ("rvm", rvm(rego, v0, rule, &input)),
    ] {
        assert_eq!(got, Ok(expected.clone()), "{path}: {rule} on {input}");
    }
}

/// Both paths fail with an error containing one of `needles` (OPA reports a conflict; the
/// interpreter words a complete rule's conflict its own way).
fn both_fail(rego: &str, v0: bool, rule: &str, input: Json, needles: &[&str]) {
    for (path, got) in [
        ("interpreter", interpreter(rego, v0, rule, &input)),
        ("rvm", rvm(rego, v0, rule, &input)),
    ] {
        let err = got.expect_err(&format!("{path}: {rule} must fail as in OPA"));
        assert!(needles.iter().any(|n| err.contains(n)), "{path}: {err}");
    }
}

/// Cause 3: a body line starting with `(` is a new literal, not a call of the line before.
#[test]
fn cause3_paren_on_a_new_line_starts_a_new_literal() {
    let v0 = "package repro\nviolation[{\"msg\": \"ok\"}] {\n  input.parameters.spread\n  (3 - 1) >= input.parameters.spread\n}\n";
    both(
        v0,
        true,
        "data.repro.violation",
        json!({"parameters": {"spread": 1}}),
        json!([{"msg": "ok"}]),
    );
    both(
        v0,
        true,
        "data.repro.violation",
        json!({"parameters": {"spread": 3}}),
        json!([]),
    );
    // On the same line it is still a call.
    let call = "package repro\nimport rego.v1\nf(x) := x + 1\nr := f(1)\n";
    both(call, false, "data.repro.r", json!({}), json!(2));
}

/// Cause 4: sprintf prints Go's `%!v(MISSING)` and `%!(EXTRA ...)` instead of failing.
#[test]
fn cause4_sprintf_missing_and_extra_arguments_as_go_prints_them() {
    let rego = r#"package repro
import rego.v1
missing := sprintf("%v and %v", ["a"])
none := sprintf("%d %s", [])
extra := sprintf("%v", ["a", 1, 2.5, {"k": 1}, [1], true])
"#;
    both(
        rego,
        false,
        "data.repro.missing",
        json!({}),
        json!("a and %!v(MISSING)"),
    );
    both(
        rego,
        false,
        "data.repro.none",
        json!({}),
        json!("%!d(MISSING) %!s(MISSING)"),
    );
    both(
        rego,
        false,
        "data.repro.extra",
        json!({}),
        json!(r#"a%!(EXTRA int64=1, float64=2.5, string={"k": 1}, string=[1], string=true)"#),
    );
}

/// Cause 5: several v0 bodies are several definitions: a set collects both; a complete rule or
/// a function whose bodies disagree is a conflict; bodies that agree are fine.
#[test]
fn cause5_several_bodies_are_several_definitions() {
    let set = r#"package repro
violation[{"msg": m}] { input.parameters.a; m := "first" } { input.parameters.b; m := "second" }
"#;
    both(
        set,
        true,
        "data.repro.violation",
        json!({"parameters": {"a": true, "b": true}}),
        json!([{"msg": "first"}, {"msg": "second"}]),
    );
    both(
        set,
        true,
        "data.repro.violation",
        json!({"parameters": {"b": true}}),
        json!([{"msg": "second"}]),
    );
    let function = "package repro\nf(x) = y { x; y := 1 } { x; y := 2 }\nr = f(true)\n";
    both_fail(
        function,
        true,
        "data.repro.r",
        json!({}),
        &["functions must not produce multiple outputs"],
    );
    let agree = "package repro\nf(x) = y { x; y := 1 } { x; y := 1 }\nr = f(true)\n";
    both(agree, true, "data.repro.r", json!({}), json!(1));
    let complete = "package repro\np = x { input.a; x := 1 } { input.b; x := 2 }\n";
    both(complete, true, "data.repro.p", json!({"a": true}), json!(1));
    both(complete, true, "data.repro.p", json!({"b": true}), json!(2));
    both_fail(
        complete,
        true,
        "data.repro.p",
        json!({"a": true, "b": true}),
        &[
            "complete rules must not produce multiple outputs",
            "rule conflicts with rule",
        ],
    );
}

/// Cause 6: `not f(a, b)` with `b` undefined: OPA evaluates the arguments outside the
/// negation, so the body fails (no violation).
#[test]
fn cause6_call_arguments_are_evaluated_outside_not() {
    let rego = r#"package repro
in_range(rule, ranges) { rule == "MustRunAs"; ranges[_].min <= 1 }
violation[{"msg": "out of range"}] {
  params := input.parameters
  not in_range(params.rule, params.ranges)
}
"#;
    both(
        rego,
        true,
        "data.repro.violation",
        json!({"parameters": {"rule": "MustRunAs"}}),
        json!([]),
    );
    both(
        rego,
        true,
        "data.repro.violation",
        json!({"parameters": {"rule": "MustRunAs", "ranges": [{"min": 5}]}}),
        json!([{"msg": "out of range"}]),
    );
}

/// Cause 7: `not f(x) == true` with `f(x)` undefined is false in OPA (the call is evaluated
/// outside the negation); and the table of negations measured against OPA v1.
#[test]
fn cause7_negation_of_undefined_calls_as_opa() {
    let rego = r#"package repro
import rego.v1
f(x) if { x == "zz" }
g(x) := x
f_eq_true if { not f(input.missing) == true }
f_eq_true_defined if { not f(input.s) == true }
plain_ref if { not input.missing }
equal_ref if { not input.missing == 1 }
unify_ref if { not input.missing = 1 }
not_equal if { not input.missing != 1 }
less if { not input.missing < 1 }
plus if { not input.missing + 1 }
builtin if { not startswith(input.missing, "a") }
builtin_defined if { not startswith(input.s, "a") }
count_eq if { not count(input.missing) == 0 }
array if { not [input.missing] }
array_eq if { not [input.missing] == [1] }
index if { not input.x[input.missing] }
index_defined if { not input.x[input.s] }
member if { not 1 in input.missing }
nested if { not f(g(input.missing)) }
function_defined if { not f(input.s) }
"#;
    let input = json!({"s": "bcd", "x": {}});
    // OPA v1 (opa-golib-python-bindings 0.4.4): which of these rules are true.
    let opa_true = [
        "plain_ref",
        "equal_ref",
        "unify_ref",
        "builtin_defined",
        "index_defined",
        "function_defined",
    ];
    let opa_false = [
        "f_eq_true",
        "f_eq_true_defined",
        "not_equal",
        "less",
        "plus",
        "builtin",
        "count_eq",
        "array",
        "array_eq",
        "index",
        "member",
        "nested",
    ];
    for rule in opa_true {
        both(
            rego,
            false,
            &format!("data.repro.{rule}"),
            input.clone(),
            json!(true),
        );
    }
    for rule in opa_false {
        both(
            rego,
            false,
            &format!("data.repro.{rule}"),
            input.clone(),
            Json::Null,
        );
    }
}

/// Patch 8: `x := expr` with `expr` undefined makes the body undefined on the RVM too; the RVM
/// went on with `x` undefined, so `spec := undefined; not spec.x` held. Values from OPA v1.
#[test]
fn rvm_colon_assignment_of_undefined_fails_the_body() {
    let rego = r#"package p
u := input.obj if input.nope
a contains "a" if { spec := u; spec }
b contains "b" if { spec := u; not spec.x }
c contains "c" if { not u.x }
d contains "d" if { spec := input.nope; not spec.x }
"#;
    let absent = json!({"obj": {"y": 1}});
    let present = json!({"kind": "S", "spec": {"x": 7}, "nope": true, "obj": {"x": 1}});
    for (rule, when_absent, when_present) in [
        ("data.p.a", json!([]), json!(["a"])),
        ("data.p.b", json!([]), json!([])),
        ("data.p.c", json!(["c"]), json!([])),
        ("data.p.d", json!([]), json!(["d"])),
    ] {
        both(rego, false, rule, absent.clone(), when_absent);
        both(rego, false, rule, present.clone(), when_present);
    }
}

/// Patch 9: a reference through an import alias (`lib.spec.x`) calls the rule it names, and the
/// alias alone still stands for the whole package. Values from OPA v1.
#[test]
fn rvm_import_alias_reaches_the_rule() {
    let rego = r#"package lib.s
is_s if input.kind == "S"
spec := input.spec if is_s
other := 2
# ---
package q
import data.lib.s as lib
v contains lib.spec.x if true
w := lib.other
z contains k if { some k, _ in lib }
"#;
    let absent = json!({"obj": {"y": 1}});
    let present = json!({"kind": "S", "spec": {"x": 7}, "nope": true, "obj": {"x": 1}});
    for (rule, when_absent, when_present) in [
        ("data.q.v", json!([]), json!([7])),
        ("data.q.w", json!(2), json!(2)),
        (
            "data.q.z",
            json!(["other"]),
            json!(["is_s", "other", "spec"]),
        ),
    ] {
        both(rego, false, rule, absent.clone(), when_absent);
        both(rego, false, rule, present.clone(), when_present);
    }
}

/// Patch 13: a set of objects is iterated over a snapshot of its elements; the order, keys and
/// `every` are unchanged (values from OPA v1).
#[test]
fn rvm_iterates_a_set_of_objects_in_order() {
    let rego = r#"package s
items contains {"a": 2, "n": input.n}
items contains {"a": 1}
items contains {"b": [3]}
out := [x | some x in items]
keys := [k | some k, _ in items]
every_ok if { every x in items { count(x) > 0 } }
"#;
    let sorted = json!([{"a": 1}, {"a": 2, "n": 5}, {"b": [3]}]);
    both(rego, false, "data.s.out", json!({"n": 5}), sorted.clone());
    both(rego, false, "data.s.keys", json!({"n": 5}), sorted);
    both(rego, false, "data.s.every_ok", json!({"n": 5}), json!(true));
}

/// Patch 14: an object is decoded straight into its frozen storage. Keys arriving in any order
/// come out sorted, a repeated key keeps its last value (as Go's `encoding/json`, and so OPA,
/// decode it), and the object reads, compares and evaluates as one built key by key does.
#[test]
fn decoded_objects_are_sorted_and_keep_the_last_of_a_repeated_key() {
    let text = r#"{"z": 1, "a": {"y": [1, {"q": 2, "b": 3}], "c": "x"}, "m": 1, "z": 2, "e": {}}"#;
    let decoded = Value::from_json_str(text).unwrap();
    assert_eq!(
        decoded.to_json_str().unwrap().replace([' ', '\n'], ""),
        r#"{"a":{"c":"x","y":[1,{"b":3,"q":2}]},"e":{},"m":1,"z":2}"#
    );
    let mut inner = std::collections::BTreeMap::new();
    inner.insert(Value::from("q"), Value::from(2));
    inner.insert(Value::from("b"), Value::from(3));
    let mut a = std::collections::BTreeMap::new();
    a.insert(Value::from("c"), Value::from("x"));
    a.insert(
        Value::from("y"),
        Value::from(vec![Value::from(1), Value::from(inner)]),
    );
    let mut top = std::collections::BTreeMap::new();
    top.insert(Value::from("a"), Value::from(a));
    top.insert(Value::from("e"), Value::new_object());
    top.insert(Value::from("m"), Value::from(1));
    top.insert(Value::from("z"), Value::from(1));
    top.insert(Value::from("z"), Value::from(2));
    let built = Value::from(top);
    assert_eq!(decoded, built);
    assert_eq!(decoded["z"], Value::from(2));
    assert_eq!(decoded["a"]["c"], Value::from("x"));
    assert_eq!(decoded["a"]["y"][1]["b"], Value::from(3));

    // What a policy sees of it, on both paths (OPA: `keys` ["a","e","m","z"], `z` 2).
    let rego = "package t\nkeys := sort(object.keys(input))\nz := input.z\nb := input.a.y[1].b\n";
    for (rule, want) in [
        ("data.t.keys", json!(["a", "e", "m", "z"])),
        ("data.t.z", json!(2)),
        ("data.t.b", json!(3)),
    ] {
        let mut engine = Engine::new();
        add_modules(&mut engine, rego).unwrap();
        engine.set_input(Value::from_json_str(text).unwrap());
        let got = engine.eval_rule(rule.into()).unwrap();
        assert_eq!(to_json(&got), want, "interpreter {rule}");

        let mut engine = Engine::new();
        add_modules(&mut engine, rego).unwrap();
        let entry: Rc<str> = Rc::from(rule);
        let compiled = engine.compile_with_entrypoint(&entry).unwrap();
        let program = Compiler::compile_from_policy(&compiled, &[rule]).unwrap();
        let mut vm = RegoVM::new();
        vm.load_program(program);
        vm.set_input(Value::from_json_str(text).unwrap());
        let got = vm.execute_entry_point_by_name(rule).unwrap();
        assert_eq!(to_json(&got), want, "rvm {rule}");
    }
}

/// Patch 16: every body of a rule starts with its retained registers (a function's arguments,
/// a set's result) and the rest undefined, whatever an earlier body left in them: definitions
/// that bind the same locals and fail part-way, an `else` chain, a set with several bodies.
/// Values from OPA v1.
#[test]
fn rvm_each_body_starts_from_its_arguments_alone() {
    let rego = r#"package p
import rego.v1
f(x) := y if { t := x * 10; t > 1000; y := "big" }
f(x) := y if { t := x * 10; t <= 1000; t > 100; y := "mid" }
f(x) := "small" if x * 10 <= 100
g(x) := a if { a := x.a; a > 1 } else := b if { b := x.b; b > 1 } else := "none"
s contains v if { some v in input.xs; v > 2 }
s contains w if { w := input.y; w > 6 }
out := {"f": [f(1), f(50), f(500)], "g": [g({"a": 5}), g({"a": 0, "b": 3}), g({"a": 0, "b": 0})], "s": s}
"#;
    let f_and_g = json!({"f": ["small", "mid", "big"], "g": [5, 3, "none"]});
    let mut with_set = f_and_g.clone();
    with_set["s"] = json!([3, 5, 7]);
    both(
        rego,
        false,
        "data.p.out",
        json!({"xs": [1, 3, 5], "y": 7}),
        with_set,
    );
    let mut empty_set = f_and_g;
    empty_set["s"] = json!([]);
    both(
        rego,
        false,
        "data.p.out",
        json!({"xs": [], "y": 1}),
        empty_set,
    );
}

/// Patch 17: whether `[`/`{` opens a comprehension is told by a `|` at its own depth; `set()`
/// (one token, closed by its `)`) and nested literals inside a comprehension's term keep it
/// one. Values from OPA v1.
#[test]
fn comprehensions_whose_term_holds_brackets_or_an_empty_set() {
    let rego = r#"package p
import rego.v1
a := [set() | true]
o := {k: set() | some k in ["x", "y"]}
s := {count(set()) | true}
out := {"a": a, "o": o, "s": s, "n": [[[1], {"b": [set()]}]]}
"#;
    let expected = json!({"a": [[]], "o": {"x": [], "y": []}, "s": [0], "n": [[[1], {"b": [[]]}]]});
    both(rego, false, "data.p.out", json!({}), expected);
}
