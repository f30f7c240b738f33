use serde_json::{Value as Json, json};

use super::compile::{CompileCx, compile};
use super::evaluate::Env;
use super::refs::Shared;
use super::strings::CAT_FAULT;
use crate::context::{EvaluationContext, Value};

fn run(rule: Json, data: Json) -> Value {
    run_key(rule, data, "flag")
}

fn run_key(rule: Json, data: Json, key: &str) -> Value {
    let r = run_checked(rule.clone(), data, key);
    r.unwrap_or_else(|why| panic!("{rule} faulted: {why}"))
}

/// The result, or the fault on which flagd would fail the evaluation.
fn run_checked(rule: Json, data: Json, key: &str) -> Result<Value, &'static str> {
    let evaluators = serde_json::Map::new();
    let shared = Shared::default();
    let cx = CompileCx {
        flag_key: Some(key),
        evaluators: &evaluators,
        shared: &shared,
    };
    let e = compile(&rule, &cx).unwrap();
    let ctx = EvaluationContext::from_json(&data).unwrap();
    let env = Env::new(&ctx, key);
    let v = e.eval(&env).to_value();
    env.fault.get().map_or(Ok(v), Err)
}

/// `cat` renders its arguments as flagd's Go engine does (diegoholiveira/jsonlogic
/// v3.9.1 `concat` / `ToString`), and fails where that engine panics.
#[test]
fn cat_renders_values_as_flagd_does() {
    let cat = |args: Json, data: Json| run_checked(json!({"cat": args}), data, "flag");
    let s = |t: &str| Ok(Value::from(t));
    // null and missing attributes add nothing; other implementations write "null".
    assert_eq!(
        cat(
            json!([{"var": "$flagd.flagKey"}, {"var": "email"}]),
            json!({})
        ),
        s("flag")
    );
    assert_eq!(
        cat(
            json!([{"var": "$flagd.flagKey"}, {"var": "email"}]),
            json!({"email": null})
        ),
        s("flag")
    );
    assert_eq!(cat(json!(["a", null, "b"]), json!({})), s("ab"));
    assert_eq!(cat(json!([{"var": "email"}]), json!({})), s(""));
    // Numbers: Go's FormatFloat(n, 'f', -1, 64); every JSON number is a float64 there.
    for (n, text) in [
        (json!(1), "1"),
        (json!(1.0), "1"),
        (json!(1.5), "1.5"),
        (json!(-42), "-42"),
        (json!(0.1), "0.1"),
        (json!(0.30000000000000004), "0.30000000000000004"),
        (json!(1e21), "1000000000000000000000"),
        (json!(1e-7), "0.0000001"),
        (json!(-0.0), "-0"),
        (json!(9_007_199_254_740_993u64), "9007199254740992"),
        (json!(u64::MAX), "18446744073709552000"),
    ] {
        assert_eq!(
            cat(json!(["k", {"var": "n"}]), json!({"n": n})),
            s(&format!("k{text}")),
            "{n}"
        );
    }
    assert_eq!(
        cat(json!(["n", {"/": [1, 0]}, {"/": [-1, 0]}]), json!({})),
        s("n+Inf-Inf")
    );
    // Several arguments: the result is whitespace-trimmed; one argument: it is not.
    assert_eq!(
        cat(json!([" a", {"var": "x"}, " "]), json!({"x": "b"})),
        s("ab")
    );
    assert_eq!(cat(json!([{"var": "x"}]), json!({"x": " b "})), s(" b "));
    assert_eq!(cat(json!([]), json!({})), s(""));
    // Not a list: a string is the result; anything else fails, as in flagd.
    assert_eq!(cat(json!("x"), json!({})), s("x"));
    assert_eq!(cat(json!({"var": "x"}), json!({"x": "y"})), s("y"));
    assert_eq!(cat(json!({"var": "x"}), json!({})), Err(CAT_FAULT));
    assert_eq!(cat(json!(5), json!({})), Err(CAT_FAULT));
    // Booleans, arrays and objects: flagd's engine panics, the evaluation fails.
    for bad in [
        json!(true),
        json!(false),
        json!([1, "a"]),
        json!([]),
        json!({"a": 1}),
        json!({}),
    ] {
        assert_eq!(
            cat(json!(["k", {"var": "x"}]), json!({"x": bad})),
            Err(CAT_FAULT),
            "{bad}"
        );
    }
    assert_eq!(cat(json!(["k", true]), json!({})), Err(CAT_FAULT));
    assert_eq!(cat(json!(["k", ["a"]]), json!({})), Err(CAT_FAULT));
    // Lazy operators do not reach a cat they skip, exactly as in flagd.
    assert_eq!(
        run_checked(
            json!({"if": [false, {"cat": [true]}, "ok"]}),
            json!({}),
            "flag"
        ),
        s("ok")
    );
    // A bucket rule fails the evaluation even when fractional has no key to hash.
    assert_eq!(
        run_checked(
            json!({"fractional": [["a", 1], [{"cat": [true]}, 1]]}),
            json!({}),
            "flag"
        ),
        Err(CAT_FAULT)
    );
}

#[test]
fn jsonlogic_basics() {
    assert_eq!(run(json!({"==": [1, "1"]}), json!({})), Value::Bool(true));
    assert_eq!(run(json!({"===": [1, "1"]}), json!({})), Value::Bool(false));
    assert_eq!(run(json!({"!=": [null, 0]}), json!({})), Value::Bool(true));
    assert_eq!(run(json!({"<": [1, 2, 3]}), json!({})), Value::Bool(true));
    assert_eq!(run(json!({"<=": [1, 1, 0]}), json!({})), Value::Bool(false));
    assert_eq!(run(json!({">": ["b", "a"]}), json!({})), Value::Bool(true));
    assert_eq!(run(json!({"!": [[]]}), json!({})), Value::Bool(true));
    assert_eq!(run(json!({"!!": ["0"]}), json!({})), Value::Bool(true));
    assert_eq!(
        run(json!({"and": [1, "", 2]}), json!({})),
        Value::String(String::new())
    );
    assert_eq!(
        run(json!({"or": [0, null, "x"]}), json!({})),
        Value::from("x")
    );
    assert_eq!(
        run(json!({"+": [1, "2", 3.5]}), json!({})),
        Value::Float(6.5)
    );
    assert_eq!(run(json!({"-": [5]}), json!({})), Value::Int(-5));
    assert_eq!(run(json!({"%": [7, 3]}), json!({})), Value::Int(1));
    assert_eq!(run(json!({"max": [1, 9, 3]}), json!({})), Value::Int(9));
    assert_eq!(
        run(json!({"cat": ["a", 1, 2.5, null]}), json!({})),
        Value::from("a12.5")
    );
    assert_eq!(
        run(json!({"substr": ["jsonlogic", -5]}), json!({})),
        Value::from("logic")
    );
    assert_eq!(
        run(json!({"substr": ["jsonlogic", 1, -5]}), json!({})),
        Value::from("son")
    );
    assert_eq!(
        run(json!({"in": ["Spring", "Springfield"]}), json!({})),
        Value::Bool(true)
    );
    assert_eq!(
        run(
            json!({"in": [{"var": "c"}, ["NO", "SE"]]}),
            json!({"c": "SE"})
        ),
        Value::Bool(true)
    );
    assert_eq!(
        run(json!({"in": [2, [1, 2]]}), json!({})),
        Value::Bool(true)
    );
    assert_eq!(
        run(json!({"merge": [[1, 2], 3, [[4]]]}), json!({})),
        Value::from(vec![
            Value::Int(1),
            Value::Int(2),
            Value::Int(3),
            Value::Array(vec![Value::Int(4)])
        ])
    );
    assert_eq!(
        run(json!({"if": [false, 1, null, 2, 3]}), json!({})),
        Value::Int(3)
    );
    assert_eq!(run(json!({"if": [false, 1]}), json!({})), Value::Null);
}

#[test]
fn vars_and_arrays() {
    let data =
        json!({"user": {"name": "ann", "tags": ["a", "b"]}, "n": [1, 2, 3], "targetingKey": "tk"});
    assert_eq!(
        run(json!({"var": "user.name"}), data.clone()),
        Value::from("ann")
    );
    assert_eq!(
        run(json!({"var": "user.tags.1"}), data.clone()),
        Value::from("b")
    );
    assert_eq!(
        run(json!({"var": ["user.age", 42]}), data.clone()),
        Value::Int(42)
    );
    assert_eq!(
        run(json!({"var": "targetingKey"}), data.clone()),
        Value::from("tk")
    );
    assert_eq!(
        run(json!({"var": {"cat": ["us", "er.name"]}}), data.clone()),
        Value::from("ann")
    );
    assert_eq!(
        run_key(json!({"var": "$flagd.flagKey"}), data.clone(), "k1"),
        Value::from("k1")
    );
    assert_eq!(
        run(
            json!({"map": [{"var": "n"}, {"*": [{"var": ""}, 2]}]}),
            data.clone()
        ),
        Value::from(vec![2, 4, 6])
    );
    assert_eq!(
        run(
            json!({"filter": [{"var": "n"}, {">": [{"var": ""}, 1]}]}),
            data.clone()
        ),
        Value::from(vec![2, 3])
    );
    assert_eq!(
        run(
            json!({"reduce": [{"var": "n"}, {"+": [{"var": "current"}, {"var": "accumulator"}]}, 0]}),
            data.clone()
        ),
        Value::Int(6)
    );
    assert_eq!(
        run(
            json!({"all": [{"var": "n"}, {">": [{"var": ""}, 0]}]}),
            data.clone()
        ),
        Value::Bool(true)
    );
    assert_eq!(
        run(
            json!({"some": [{"var": "n"}, {">": [{"var": ""}, 2]}]}),
            data.clone()
        ),
        Value::Bool(true)
    );
    assert_eq!(
        run(
            json!({"none": [{"var": "n"}, {">": [{"var": ""}, 2]}]}),
            data.clone()
        ),
        Value::Bool(false)
    );
    assert_eq!(
        run(json!({"missing": ["user", "x", "y"]}), data.clone()),
        Value::from(vec!["x", "y"])
    );
    assert_eq!(
        run(json!({"missing_some": [1, ["user", "x"]]}), data),
        Value::Array(vec![])
    );
}

#[test]
fn custom_operators_return_null_on_bad_input() {
    assert_eq!(
        run(json!({"starts_with": [{"var": "n"}, "a"]}), json!({"n": 1})),
        Value::Null
    );
    assert_eq!(run(json!({"ends_with": ["abc"]}), json!({})), Value::Null);
    assert_eq!(
        run(json!({"sem_ver": ["1.0.0", "==="]}), json!({})),
        Value::Null
    );
    assert_eq!(
        run(json!({"sem_ver": ["1.0.0", "===", "1.0.0"]}), json!({})),
        Value::Null
    );
    assert_eq!(
        run(json!({"sem_ver": [1.2, ">", "1.1"]}), json!({})),
        Value::Bool(true)
    );
    assert_eq!(
        run(
            json!({"fractional": [{"var": "k"}, ["a", 0], ["b", 0]]}),
            json!({"k": "x"})
        ),
        Value::Null
    );
    assert_eq!(
        run(
            json!({"fractional": [["a", 1.5]]}),
            json!({"targetingKey": "x"})
        ),
        Value::Null
    );
    assert_eq!(
        run(json!({"fractional": [["a"]]}), json!({})),
        Value::Null,
        "no targeting key"
    );
    assert_eq!(
        run(
            json!({"fractional": [["a", 2147483648i64]]}),
            json!({"targetingKey": "x"})
        ),
        Value::Null
    );
}

#[test]
fn fractional_matches_flagd_vectors() {
    let rule = json!({"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "user.name"}]}, ["clubs", 25], ["diamonds", 25], ["hearts", 25], ["spades", 25]]});
    for (name, want) in [
        ("jack", "hearts"),
        ("queen", "spades"),
        ("ten", "clubs"),
        ("nine", "diamonds"),
        ("3", "clubs"),
    ] {
        assert_eq!(
            run_key(
                rule.clone(),
                json!({"user": {"name": name}}),
                "fractional-flag"
            ),
            Value::from(want),
            "{name}"
        );
    }
    let short = json!({"fractional": [["heads"], ["tails", 1]]});
    assert_eq!(
        run_key(
            short.clone(),
            json!({"targetingKey": "jon@company.com"}),
            "fractional-flag-shorthand"
        ),
        Value::from("heads")
    );
    assert_eq!(
        run_key(
            short,
            json!({"targetingKey": "jane@company.com"}),
            "fractional-flag-shorthand"
        ),
        Value::from("tails")
    );
}

#[test]
fn unknown_operators_and_refs_fail_compilation() {
    let mut evaluators = serde_json::Map::new();
    evaluators.insert("inner".into(), json!({"$ref": "other"}));
    let shared = Shared::default();
    let cx = CompileCx {
        flag_key: Some("f"),
        evaluators: &evaluators,
        shared: &shared,
    };
    assert_eq!(
        compile(&json!({"invalid": [1]}), &cx).unwrap_err().0,
        "unknown operator \"invalid\""
    );
    assert!(compile(&json!({"if": [{"$ref": "nope"}, 1, 2]}), &cx).is_err());
    assert!(
        compile(&json!({"$ref": "inner"}), &cx).is_err(),
        "nested refs are not resolved"
    );
}
