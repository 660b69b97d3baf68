//! Property test of the body parser: for every request type, random JSON values parse
//! exactly when they are objects of that type's shape (its field names, required fields
//! present, each field of its JSON kind), and arrays, strings, numbers, booleans and null
//! never do.

use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::channels::{CreateChannel, PutMember};
use super::extract::parse_json;
use super::messages::{EditMessage, PostMessage};
use super::ops::Flush;
use super::reads::{MarkRead, SyncBody};

/// The JSON kind a field takes.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Str,
    /// An integer that fits an `i64`.
    Int,
    StrArray,
    /// An object of `i64` values (sync's channels).
    IntMap,
}

/// A request type's shape: its fields, whether each is required, and its kind. Optional
/// fields also take `null`.
struct Shape {
    name: &'static str,
    fields: &'static [(&'static str, bool, Kind)],
    parses: Parser,
}

/// Whether a body parses as one request type.
type Parser = fn(&[u8]) -> bool;

fn parses<T: DeserializeOwned>(bytes: &[u8]) -> bool {
    parse_json::<T>(bytes).is_ok()
}

const SHAPES: &[Shape] = &[
    Shape {
        name: "create channel",
        fields: &[
            ("type", true, Kind::Str),
            ("name", false, Kind::Str),
            ("id", false, Kind::Str),
            ("members", false, Kind::StrArray),
        ],
        parses: parses::<CreateChannel>,
    },
    Shape {
        name: "put member",
        fields: &[("role", false, Kind::Str)],
        parses: parses::<PutMember>,
    },
    Shape {
        name: "post message",
        fields: &[
            ("sender_id", true, Kind::Str),
            ("content", true, Kind::Str),
            ("reply_to_id", false, Kind::Int),
            ("client_msg_id", false, Kind::Str),
        ],
        parses: parses::<PostMessage>,
    },
    Shape {
        name: "edit message",
        fields: &[("content", true, Kind::Str)],
        parses: parses::<EditMessage>,
    },
    Shape {
        name: "mark read",
        fields: &[
            ("user_id", true, Kind::Str),
            ("message_id", true, Kind::Int),
        ],
        parses: parses::<MarkRead>,
    },
    Shape {
        name: "sync",
        fields: &[
            ("channels", true, Kind::IntMap),
            ("user_id", false, Kind::Str),
        ],
        parses: parses::<SyncBody>,
    },
    Shape {
        name: "flush",
        fields: &[("channel_id", false, Kind::Str)],
        parses: parses::<Flush>,
    },
];

fn is_kind(kind: Kind, value: &Value) -> bool {
    match kind {
        Kind::Str => value.is_string(),
        Kind::Int => value.as_i64().is_some(),
        Kind::StrArray => value
            .as_array()
            .is_some_and(|items| items.iter().all(Value::is_string)),
        Kind::IntMap => value
            .as_object()
            .is_some_and(|map| map.values().all(|v| v.as_i64().is_some())),
    }
}

/// Whether `value` is an object of this shape: the oracle the parser must agree with.
fn fits(shape: &Shape, value: &Value) -> bool {
    let Some(object) = value.as_object() else {
        return false;
    };
    let known = |key: &str| shape.fields.iter().any(|(name, ..)| *name == key);
    object.keys().all(|k| known(k))
        && shape
            .fields
            .iter()
            .all(|&(name, required, kind)| match object.get(name) {
                None => !required,
                Some(Value::Null) => !required,
                Some(v) => is_kind(kind, v),
            })
}

/// Every field name of every shape, plus a stranger: random objects use these keys, so
/// they often come close to a shape.
const KEYS: &[&str] = &[
    "type",
    "name",
    "id",
    "members",
    "role",
    "sender_id",
    "content",
    "reply_to_id",
    "client_msg_id",
    "user_id",
    "message_id",
    "channels",
    "channel_id",
    "unknown",
];

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop::sample::select(KEYS).prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![prop::sample::select(KEYS).prop_map(String::from), ".{0,4}"],
                inner,
                0..5,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A value of `kind`, or for optional fields sometimes `null`.
fn value_of(kind: Kind) -> BoxedStrategy<Value> {
    match kind {
        Kind::Str => ".{0,8}".prop_map(Value::from).boxed(),
        Kind::Int => any::<i64>().prop_map(Value::from).boxed(),
        Kind::StrArray => prop::collection::vec(".{0,4}".prop_map(Value::from), 0..4)
            .prop_map(Value::Array)
            .boxed(),
        Kind::IntMap => prop::collection::btree_map(".{0,6}", any::<i64>(), 0..4)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k, Value::from(v))).collect()))
            .boxed(),
    }
}

/// Objects of a shape: every required field, any subset of the optional ones.
fn fitting(shape: &'static Shape) -> impl Strategy<Value = Value> {
    let fields: Vec<_> = shape
        .fields
        .iter()
        .map(|&(name, required, kind)| {
            let value = if required {
                value_of(kind).prop_map(Some).boxed()
            } else {
                prop_oneof![
                    Just(None),
                    Just(Some(Value::Null)),
                    value_of(kind).prop_map(Some)
                ]
                .boxed()
            };
            (Just(name), value)
        })
        .collect();
    fields.prop_map(|pairs| {
        Value::Object(
            pairs
                .into_iter()
                .filter_map(|(name, v)| Some((name.to_owned(), v?)))
                .collect(),
        )
    })
}

fn check(shape: &Shape, value: &Value) -> Result<(), TestCaseError> {
    let bytes = serde_json::to_vec(value).unwrap();
    prop_assert_eq!(
        (shape.parses)(&bytes),
        fits(shape, value),
        "{}: {}",
        shape.name,
        value
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn a_random_json_value_parses_only_when_it_is_an_object_of_the_shape(value in any_json()) {
        for shape in SHAPES {
            check(shape, &value)?;
        }
    }

    #[test]
    fn every_object_of_a_shape_parses(
        (index, value) in (0..SHAPES.len()).prop_flat_map(|i| (Just(i), fitting(&SHAPES[i])))
    ) {
        let shape = &SHAPES[index];
        prop_assert!(fits(shape, &value));
        check(shape, &value)?;
    }
}

#[test]
fn positional_bodies_from_the_issue_are_refused() {
    let bodies: [(&[u8], Parser); 7] = [
        (b"[]", parses::<Flush>),
        (br#"["admin"]"#, parses::<PutMember>),
        (br#"["group"]"#, parses::<CreateChannel>),
        (
            br#"["5c1c9a52-5d7a-4b8e-9a65-6f1d2f1e2a11","hi"]"#,
            parses::<PostMessage>,
        ),
        (br#"["edited"]"#, parses::<EditMessage>),
        (
            br#"["5c1c9a52-5d7a-4b8e-9a65-6f1d2f1e2a11",1]"#,
            parses::<MarkRead>,
        ),
        (
            br#"[{"5c1c9a52-5d7a-4b8e-9a65-6f1d2f1e2a11":0}]"#,
            parses::<SyncBody>,
        ),
    ];
    for (body, parse) in bodies {
        assert!(!parse(body), "{}", String::from_utf8_lossy(body));
    }
    for body in [&b"\"x\""[..], b"1", b"true", b"null", b" [] "] {
        let Err(refusal) = parse_json::<Flush>(body) else {
            panic!("{} parsed", String::from_utf8_lossy(body));
        };
        assert_eq!(refusal.status(), axum::http::StatusCode::BAD_REQUEST);
    }
    assert!(
        parses::<Flush>(b" \r\n\t{}"),
        "JSON whitespace before the object"
    );
}
