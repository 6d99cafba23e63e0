//! `data` lookups across modules on the interpreter, held by regorus patch 7 (vendor/regorus,
//! PATCHES.md): the interpreter finds the modules a lookup needs in an index by package instead
//! of walking every module, and a rule's module in an index by rule. The expected values are
//! what real OPA v1 gives for the same modules and input (opa-golib-python-bindings 0.4.4): whole
//! packages and parents of packages, two modules sharing a package, a package whose name extends
//! another's (`a.bx` is not under `a.b`), defaults, aliased imports and `with`.
//!
//! Not held here, because regorus gets it wrong with and without patch 7: reading `data.a`
//! drops a rule of `a.b` whose value reads a package loaded after it (`z := data.a.bx.w + 1`
//! in the second `a.b` module, `a.bx` loaded later; OPA gives `z`).

use regorus::{Engine, Value};
use serde_json::{Value as Json, json};

const MODULES: &[(&str, &str)] = &[
    (
        "a.rego",
        "package a\nimport rego.v1\nx := 1\ndefault d := \"default\"\n",
    ),
    (
        "a_b.rego",
        "package a.b\nimport rego.v1\ny := 2\ns contains \"one\" if true\n",
    ),
    (
        "a_b2.rego",
        "package a.b\nimport rego.v1\ns contains \"two\" if input.two\nz := 11\n",
    ),
    (
        "a_b_c.rego",
        "package a.b.c\nimport rego.v1\ndefault q := false\nq if input.q\n",
    ),
    ("a_bx.rego", "package a.bx\nimport rego.v1\nw := 10\n"),
    (
        "lib.rego",
        "package lib.util\nimport rego.v1\nhelper(v) := v * 2\nk := data.a.b.y\n",
    ),
    (
        "use.rego",
        "package use
import rego.v1
import data.lib.util
whole_a := data.a
whole_ab := data.a.b
ab_keys := {k | data.a.b[k]}
via_alias := util.helper(util.k)
q := data.a.b.c.q
q_with := v if { v := data.a.b.c.q with input.q as true }
ab_with := v if { v := data.a.b with data.a.b.y as 7 }
d := data.a.d
bx := data.a.bx
",
    ),
];

/// OPA's answers, for `{"two": false}` and for `{"two": true, "q": true}`.
fn expected(two: bool) -> Json {
    let s = if two {
        json!(["one", "two"])
    } else {
        json!(["one"])
    };
    let ab = |y: i64| json!({"c": {"q": two}, "s": s, "y": y, "z": 11});
    json!({
        "ab_keys": ["c", "s", "y", "z"],
        "ab_with": ab(7),
        "bx": {"w": 10},
        "d": "default",
        "q": two,
        "q_with": true,
        "via_alias": 4,
        "whole_a": {"b": ab(2), "bx": {"w": 10}, "d": "default", "x": 1},
        "whole_ab": ab(2),
    })
}

fn engine(modules: &[(&str, &str)]) -> Engine {
    let mut engine = Engine::new();
    for (path, rego) in modules {
        engine
            .add_policy((*path).into(), (*rego).into())
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    engine
}

fn eval(engine: &Engine, rule: &str, input: &Json) -> Json {
    // A fresh clone per rule, as the server evaluates each request on a clone.
    let mut engine = engine.clone();
    engine.set_input(Value::from_json_str(&input.to_string()).unwrap());
    let value = engine
        .eval_rule(format!("data.use.{rule}"))
        .unwrap_or_else(|e| panic!("{rule}: {e}"));
    serde_json::from_str(&value.to_json_str().unwrap()).unwrap()
}

fn check(engine: &Engine) {
    for (input, two) in [
        (json!({"two": false}), false),
        (json!({"two": true, "q": true}), true),
    ] {
        let want = expected(two);
        for (rule, value) in want.as_object().unwrap() {
            assert_eq!(&eval(engine, rule, &input), value, "{rule} on {input}");
        }
    }
}

#[test]
fn lookups_across_modules_give_opas_values_in_any_load_order() {
    check(&engine(MODULES));
    let mut reversed = MODULES.to_vec();
    reversed.reverse();
    check(&engine(&reversed));
}

/// Every rule of one evaluation shares one rule cache: each lookup order still gives the same
/// values, whichever package was reached first.
#[test]
fn one_evaluation_reaching_packages_in_turn() {
    let mut modules = MODULES.to_vec();
    modules.push((
        "all.rego",
        "package use.all\nimport rego.v1\nr := [data.use.bx, data.use.whole_ab, data.use.whole_a, data.use.d, data.use.q]\n",
    ));
    let mut engine = engine(&modules);
    engine.set_input(Value::from_json_str(r#"{"two": true, "q": true}"#).unwrap());
    let got = engine.eval_rule("data.use.all.r".into()).unwrap();
    let got: Json = serde_json::from_str(&got.to_json_str().unwrap()).unwrap();
    let want = expected(true);
    assert_eq!(
        got,
        json!([
            want["bx"],
            want["whole_ab"],
            want["whole_a"],
            want["d"],
            want["q"]
        ])
    );
}

/// A module added after an evaluation is found by the next one (the index is rebuilt with the
/// rule registrations when the engine is prepared again).
#[test]
fn a_module_added_later_is_found() {
    let mut engine = engine(MODULES);
    let before = eval(&engine, "whole_ab", &json!({"two": false}));
    assert_eq!(before, expected(false)["whole_ab"]);
    engine
        .add_policy(
            "late.rego".into(),
            "package a.b.late\nimport rego.v1\nt := 3\n".into(),
        )
        .unwrap();
    let after = eval(&engine, "whole_ab", &json!({"two": false}));
    let mut want = expected(false)["whole_ab"].clone();
    want["late"] = json!({"t": 3});
    assert_eq!(after, want);
}
