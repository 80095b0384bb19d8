//! Portable JSON: how every value Cairn stores is written and read back.
//!
//! Values are compact JSON. Workflow inputs are `{"positionalArgs":[…],"namedArgs":{}}`;
//! errors are [`PortableError`] objects.
//!
//! Cairn also reads `js_superjson`, the default format of DBOS's TypeScript SDK, so that its
//! `DBOSClient` can send to, enqueue onto and record values for Cairn workflows unchanged
//! (see [`superjson`]). A row written in a format Cairn cannot read (`py_pickle`, a custom
//! serializer) is kept as raw text and refused with an [`Error::Decode`] naming the workflow,
//! the column and the format.

use std::any::Any;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, PortableError, Result};
use crate::store::PORTABLE_JSON;

/// The `serialization` name of DBOS TypeScript's default serializer (`DBOSJSON`): superjson's
/// `{"json":…,"meta":…}` record marked with `"__dbos_serializer":"superjson"`.
pub(crate) const JS_SUPERJSON: &str = "js_superjson";

/// Encode a value as compact JSON text.
pub(crate) fn encode<T: Serialize + ?Sized>(
    value: &T,
    what: impl FnOnce() -> String,
) -> Result<String> {
    serde_json::to_string(value).map_err(|source| Error::Serialize {
        what: what(),
        source,
    })
}

/// A stored format Cairn reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `portable_json`, or NULL (rows written before the column existed).
    Portable,
    /// DBOS TypeScript's `js_superjson`.
    Superjson,
}

fn decode_error_of(workflow_id: &str, column: &str, reason: String) -> Error {
    Error::Decode {
        workflow_id: workflow_id.to_owned(),
        column: column.to_owned(),
        reason,
    }
}

/// The format a `serialization` column names; any other is refused with its name.
fn format_of(serialization: Option<&str>, workflow_id: &str, column: &str) -> Result<Format> {
    match serialization {
        None | Some(PORTABLE_JSON) => Ok(Format::Portable),
        Some(JS_SUPERJSON) => Ok(Format::Superjson),
        Some(other) => Err(decode_error_of(
            workflow_id,
            column,
            format!(
                "cannot decode format {other} (Cairn reads {PORTABLE_JSON} and {JS_SUPERJSON})"
            ),
        )),
    }
}

/// A stored value as portable JSON: superjson values are mapped the way portable_json writes
/// the same types (see [`superjson`]).
fn portable_value(text: &str, format: Format, workflow_id: &str, column: &str) -> Result<Value> {
    match format {
        Format::Portable => serde_json::from_str(text)
            .map_err(|e| decode_error_of(workflow_id, column, format!("not JSON: {e}"))),
        Format::Superjson => superjson::to_portable(text).map_err(|reason| {
            decode_error_of(workflow_id, column, format!("{JS_SUPERJSON}: {reason}"))
        }),
    }
}

/// A workflow outcome Cairn encoded (portable JSON), in the format its `workflow_status` row
/// names, since readers decode `workflow_output` with that format. A workflow DBOS
/// TypeScript's client enqueued is marked `js_superjson`: its outcome is written as a superjson
/// record, which plain JSON needs no annotations for; any other row gets the text as is.
pub(crate) fn in_row_format(portable: String, row_format: Option<&str>) -> String {
    match row_format {
        Some(JS_SUPERJSON) => format!(r#"{{"json":{portable},"__dbos_serializer":"superjson"}}"#),
        _ => portable,
    }
}

/// Decode a stored value into `T`, naming the workflow and column if it cannot be.
pub(crate) fn decode<T: DeserializeOwned>(
    text: &str,
    serialization: Option<&str>,
    workflow_id: &str,
    column: &str,
) -> Result<T> {
    let mismatch = |e: serde_json::Error| {
        decode_error_of(
            workflow_id,
            column,
            format!("not the expected type {}: {e}", std::any::type_name::<T>()),
        )
    };
    match format_of(serialization, workflow_id, column)? {
        // Straight from the text: the common case builds no intermediate tree.
        Format::Portable => serde_json::from_str(text).map_err(mismatch),
        format => serde_json::from_value(portable_value(text, format, workflow_id, column)?)
            .map_err(mismatch),
    }
}

/// Decode a stored error into a [`PortableError`]. A JSON value that is not an error object
/// (a bare string, say) becomes an error whose message is that value.
pub(crate) fn decode_error(
    text: &str,
    serialization: Option<&str>,
    workflow_id: &str,
    column: &str,
) -> Result<PortableError> {
    let format = format_of(serialization, workflow_id, column)?;
    Ok(match portable_value(text, format, workflow_id, column)? {
        Value::Object(ref map) if map.contains_key("message") || map.contains_key("name") => {
            let text_of = |key: &str| {
                map.get(key)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            PortableError {
                name: text_of("name"),
                message: text_of("message"),
                code: map.get("code").filter(|v| !v.is_null()).cloned(),
                data: map.get("data").filter(|v| !v.is_null()).cloned(),
            }
        }
        Value::String(message) => PortableError::new("Error", message),
        other => PortableError::new("Error", other.to_string()),
    })
}

/// Encode a workflow's arguments as DBOS's portable input object.
pub(crate) fn encode_inputs(positional: &[Value]) -> Result<String> {
    // Written by hand to keep DBOS's key order.
    let positional = encode(positional, || "workflow inputs".to_owned())?;
    Ok(format!(
        r#"{{"positionalArgs":{positional},"namedArgs":{{}}}}"#
    ))
}

/// Decode a workflow's portable input object into its positional arguments. Named arguments
/// (written by a Python or TypeScript caller) are appended in their stored order. Inputs in
/// `js_superjson` are the argument array itself (DBOS TypeScript's `DBOSClient.enqueue`
/// writes them so).
pub(crate) fn decode_inputs(
    text: Option<&str>,
    serialization: Option<&str>,
    workflow_id: &str,
) -> Result<Vec<Value>> {
    const COLUMN: &str = "workflow_input.inputs";
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    let format = format_of(serialization, workflow_id, COLUMN)?;
    let not_inputs = || {
        let expected = match format {
            Format::Portable => "an object with positionalArgs and namedArgs",
            Format::Superjson => "an array of arguments",
        };
        decode_error_of(workflow_id, COLUMN, format!("expected {expected}"))
    };
    let map = match (format, portable_value(text, format, workflow_id, COLUMN)?) {
        (Format::Superjson, Value::Array(args)) => return Ok(args),
        (Format::Portable, Value::Object(map)) => map,
        _ => return Err(not_inputs()),
    };
    let mut map = map;
    let mut args = match map.remove("positionalArgs") {
        Some(Value::Array(args)) => args,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err(not_inputs()),
    };
    if let Some(Value::Object(named)) = map.remove("namedArgs") {
        args.extend(named.into_iter().map(|(_, v)| v));
    }
    Ok(args)
}

/// Decode one positional argument of a workflow, naming it if it does not fit.
#[doc(hidden)]
pub fn decode_arg<T: DeserializeOwned>(
    args: &mut [Value],
    index: usize,
    argument: &'static str,
    workflow: &str,
) -> Result<T> {
    let value = args.get_mut(index).map(Value::take).unwrap_or(Value::Null);
    serde_json::from_value(value).map_err(|e| Error::InvalidArgument {
        argument,
        reason: format!(
            "argument {} of workflow `{workflow}` does not decode: {e}",
            index + 1
        ),
    })
}

/// Encode one positional argument of a workflow.
#[doc(hidden)]
pub fn encode_arg<T: Serialize + ?Sized>(value: &T, index: usize, workflow: &str) -> Result<Value> {
    serde_json::to_value(value).map_err(|source| Error::Serialize {
        what: format!("argument {} of workflow `{workflow}`", index + 1),
        source,
    })
}

/// An application error in its portable form, for the record: named after its type (Cairn's
/// own errors after their kind), described by its `Display`, and carrying its value in
/// `data`, so that reading the record back gives the same typed value.
pub(crate) fn portable_error_of<E: Serialize + std::fmt::Display + 'static>(
    error: &E,
) -> Result<PortableError> {
    if let Some(own) = (error as &dyn Any).downcast_ref::<Error>() {
        return Ok(own.to_portable());
    }
    let name = short_type_name::<E>();
    let data = serde_json::to_value(error).map_err(|source| Error::Serialize {
        what: format!("an error of type {}", std::any::type_name::<E>()),
        source,
    })?;
    Ok(PortableError {
        data: Some(data),
        ..PortableError::new(name, error.to_string())
    })
}

/// The typed error a record describes, as [`portable_error_of`] wrote it: `None` if it carries
/// no value (a failure of Cairn's, or a record written by another SDK), `Some(Err)` if its
/// value is not an `E`. For `E` = [`Error`] every record reads back (see
/// [`Error::from_portable`]).
pub(crate) fn typed_error<E: DeserializeOwned + 'static>(
    portable: PortableError,
) -> Option<std::result::Result<E, serde_json::Error>> {
    if std::any::TypeId::of::<E>() == std::any::TypeId::of::<Error>() {
        let own: Box<dyn Any> = Box::new(Error::from_portable(portable));
        return own.downcast::<E>().ok().map(|typed| Ok(*typed));
    }
    portable.decode_data()
}

/// `my_crate::errors::PaymentError<u8>` → `PaymentError`.
fn short_type_name<E>() -> String {
    let full = std::any::type_name::<E>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base).to_owned()
}

/// The portable error recorded for a panic, with the panic's message.
pub(crate) fn panic_error(payload: &(dyn Any + Send)) -> PortableError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-string payload".to_owned());
    PortableError::new("Panic", message)
}

/// Reading DBOS TypeScript's `js_superjson` values as portable JSON.
///
/// DBOS's TypeScript SDK (`@dbos-inc/dbos-sdk` 5.x) writes, by default, superjson's record
/// with its own marker: `{"json":7,"__dbos_serializer":"superjson"}`. Values JSON has no type
/// for are written in `json` as JSON and named in `meta.values`, a tree of annotations by path
/// (`{"when":["Date"],"tags":["set",{"0":["bigint"]}]}`, or `["Date"]` for the root; a path's
/// segments are joined by `.`, a literal dot escaped as `\.`; inside a map, `row.0` is a key
/// and `row.1` its value).
///
/// Cairn keeps `json` and maps each annotation the way DBOS's `portable_json` writes that type
/// (its `portableJsonReplacer`), so a value reads the same whichever format the sender chose:
///
/// | superjson annotation | portable JSON |
/// |---|---|
/// | `Date` | the ISO string `YYYY-MM-DDTHH:MM:SS.mmmZ`, as written |
/// | `bigint` | the decimal string (portable_json writes big integers as strings) |
/// | `set` | the array of its elements |
/// | `map` | an object when every key is a string (dates and big integers become strings); otherwise the array of `[key, value]` pairs superjson stores (portable_json refuses such maps; Cairn keeps them readable) |
/// | `undefined` | the key left out of its object; `null` in an array or at the root (as `JSON.stringify`) |
/// | `number` (`NaN`, `±Infinity`, `-0`) | `null` for the first three, `0` for `-0` (as `JSON.stringify`) |
/// | `Error` | `{"name","message",…}`, as written |
/// | `regexp`, `URL`, `symbol` | their text (`"/ab+c/i"`, the URL), as written |
/// | `typed-array`, `custom` (`Buffer`), `class` | the array or object written |
///
/// `meta.referentialEqualities` is ignored: DBOS's superjson does not deduplicate, so `json`
/// already holds every copy (a cycle, which JSON cannot hold, reads as `null`). An annotation
/// Cairn does not know is an error naming it, never a silent guess.
pub(crate) mod superjson {
    use serde_json::{Map, Value};

    /// The key and value DBOS adds to mark a record as superjson.
    const MARKER: (&str, &str) = ("__dbos_serializer", "superjson");

    /// The portable JSON of a `js_superjson` text, or why it is not one.
    pub(crate) fn to_portable(text: &str) -> Result<Value, String> {
        let record: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let Value::Object(mut record) = record else {
            return Err("expected superjson's {\"json\",\"meta\"} object".to_owned());
        };
        if record.get(MARKER.0).and_then(Value::as_str) != Some(MARKER.1) {
            return Err(format!(
                "the value carries no \"{}\":\"{}\" marker",
                MARKER.0, MARKER.1
            ));
        }
        let mut json = record
            .remove("json")
            .ok_or_else(|| "the record has no \"json\" part".to_owned())?;
        if let Some(values) = record.get("meta").and_then(|meta| meta.get("values")) {
            apply_tree(&mut json, values, &mut Vec::new())?;
        }
        Ok(json)
    }

    /// Apply an annotation tree at `origin`: children first, then the node (as superjson
    /// does), so a map's keys are final before the map itself is mapped.
    fn apply_tree(root: &mut Value, tree: &Value, origin: &mut Vec<String>) -> Result<(), String> {
        let depth = origin.len();
        match tree {
            Value::Array(node) => {
                let (annotation, children) = match node.as_slice() {
                    [annotation] => (annotation, None),
                    [annotation, children] => (annotation, Some(children)),
                    _ => return Err(format!("malformed annotation {tree}")),
                };
                if let Some(children) = children {
                    let Value::Object(children) = children else {
                        return Err(format!("malformed annotation {tree}"));
                    };
                    for (path, child) in children {
                        origin.extend(parse_path(path));
                        apply_tree(root, child, origin)?;
                        origin.truncate(depth);
                    }
                }
                apply(root, origin, annotation)
            }
            Value::Object(children) => {
                for (path, child) in children {
                    origin.extend(parse_path(path));
                    apply_tree(root, child, origin)?;
                    origin.truncate(depth);
                }
                Ok(())
            }
            other => Err(format!("malformed annotation {other}")),
        }
    }

    /// superjson's path syntax: segments joined by `.`, a literal dot escaped as `\.`.
    fn parse_path(path: &str) -> Vec<String> {
        let mut segments = vec![String::new()];
        let mut chars = path.chars().peekable();
        while let Some(c) = chars.next() {
            let c = match c {
                '\\' if chars.peek() == Some(&'.') => chars.next().unwrap_or(c),
                '.' => {
                    segments.push(String::new());
                    continue;
                }
                c => c,
            };
            if let Some(segment) = segments.last_mut() {
                segment.push(c);
            }
        }
        segments
    }

    /// The value at `path`, or why there is none.
    fn at<'v>(value: &'v mut Value, path: &[String]) -> Result<&'v mut Value, String> {
        path.iter().try_fold(value, |value, segment| {
            let found = match value {
                Value::Object(map) => map.get_mut(segment),
                Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
                _ => None,
            };
            found.ok_or_else(|| {
                format!(
                    "an annotation names {}, which is not in the value",
                    path.join(".")
                )
            })
        })
    }

    /// Map the value at `path` as `annotation` says (see the module's table).
    fn apply(root: &mut Value, path: &[String], annotation: &Value) -> Result<(), String> {
        let name = match annotation {
            Value::String(name) => name.as_str(),
            // Composite annotations (`["custom","Buffer"]`, `["typed-array","Uint8Array"]`,
            // `["class",name]`, `["symbol",name]`): the JSON written is kept.
            Value::Array(parts) => match parts.first().and_then(Value::as_str) {
                Some("custom" | "typed-array" | "class" | "symbol") => return Ok(()),
                _ => return Err(format!("unknown superjson annotation {annotation}")),
            },
            other => return Err(format!("unknown superjson annotation {other}")),
        };
        match name {
            "Date" | "bigint" | "set" | "Error" | "regexp" | "URL" => {
                at(root, path)?;
                Ok(())
            }
            "undefined" => {
                let Some((last, parent)) = path.split_last() else {
                    *root = Value::Null;
                    return Ok(());
                };
                match at(root, parent)? {
                    Value::Object(map) => {
                        map.remove(last);
                    }
                    other => *at(other, std::slice::from_ref(last))? = Value::Null,
                }
                Ok(())
            }
            "number" => {
                let value = at(root, path)?;
                *value = match value.as_str() {
                    Some("-0") => Value::from(0),
                    Some("NaN" | "Infinity" | "-Infinity") => Value::Null,
                    _ => return Err(format!("unknown superjson number {value}")),
                };
                Ok(())
            }
            "map" => {
                let value = at(root, path)?;
                if let Some(object) = string_keyed(value) {
                    *value = Value::Object(object);
                }
                Ok(())
            }
            other => Err(format!("unknown superjson annotation \"{other}\"")),
        }
    }

    /// A map's `[key, value]` pairs as an object, when every key is a string.
    fn string_keyed(pairs: &mut Value) -> Option<Map<String, Value>> {
        let Value::Array(pairs) = pairs else {
            return None;
        };
        let all_strings = pairs
            .iter()
            .all(|pair| matches!(pair, Value::Array(kv) if kv.len() == 2 && kv[0].is_string()));
        if !all_strings {
            return None;
        }
        let mut object = Map::new();
        for pair in pairs.drain(..) {
            if let Value::Array(mut kv) = pair
                && let (Some(value), Some(Value::String(key))) = (kv.pop(), kv.pop())
            {
                object.insert(key, value);
            }
        }
        Some(object)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn inputs_are_portable_positional_args() {
        let text = encode_inputs(&[Value::from(42), Value::from("x")]).unwrap();
        assert_eq!(text, r#"{"positionalArgs":[42,"x"],"namedArgs":{}}"#);
        let args = decode_inputs(Some(&text), Some(PORTABLE_JSON), "w").unwrap();
        assert_eq!(args, vec![Value::from(42), Value::from("x")]);
    }

    #[test]
    fn a_foreign_format_is_refused_with_its_name() {
        let err =
            decode::<i32>("gASV", Some("py_pickle"), "wf-1", "workflow_output.output").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("wf-1")
                && text.contains("py_pickle")
                && text.contains("workflow_output.output"),
            "{text}"
        );
    }

    /// A recorded application error keeps its type's name, its message and its value.
    #[test]
    fn errors_round_trip_in_portable_form() {
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        enum PaymentError {
            Declined { order: u64 },
        }
        impl std::fmt::Display for PaymentError {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("card declined")
            }
        }
        let portable = portable_error_of(&PaymentError::Declined { order: 7 }).unwrap();
        assert_eq!(portable.name, "PaymentError");
        assert_eq!(portable.message, "card declined");
        let text = encode(&portable, String::new).unwrap();
        let read = decode_error(&text, None, "w", "c").unwrap();
        assert_eq!(read, portable);
        let typed: PaymentError = read.decode_data().unwrap().unwrap();
        assert_eq!(typed, PaymentError::Declined { order: 7 });
    }

    /// Cairn's own errors read back as the same variant.
    #[test]
    fn cairn_errors_read_back_as_the_same_variant() {
        let error = Error::StepTimedOut {
            step: "charge".into(),
            timeout_ms: 30,
        };
        let text = encode(&error, String::new).unwrap();
        let read: Error = serde_json::from_str(&text).unwrap();
        assert!(
            matches!(read, Error::StepTimedOut { ref step, timeout_ms: 30 } if step == "charge")
        );
        let app = Error::Application(PortableError::new("X", "y"));
        let read: Error = serde_json::from_str(&encode(&app, String::new).unwrap()).unwrap();
        assert!(matches!(read, Error::Application(ref p) if p.name == "X" && p.message == "y"));
    }

    // ---- js_superjson: the values below are what @dbos-inc/dbos-sdk 5.3.0's `DBOSJSON`
    // writes for the JavaScript value in each comment (captured from the SDK itself).

    fn superjson(text: &str) -> Value {
        decode::<Value>(text, Some(JS_SUPERJSON), "wf", "notifications.message").unwrap()
    }

    /// Plain values are their `json` part.
    #[test]
    fn superjson_plain_values_are_their_json_part() {
        // 7, "hi", null, {a: 1, b: "x"}
        assert_eq!(
            superjson(r#"{"json":7,"__dbos_serializer":"superjson"}"#),
            json!(7)
        );
        assert_eq!(
            superjson(r#"{"json":"hi","__dbos_serializer":"superjson"}"#),
            json!("hi")
        );
        assert_eq!(
            superjson(r#"{"json":null,"__dbos_serializer":"superjson"}"#),
            Value::Null
        );
        assert_eq!(
            superjson(r#"{"json":{"a":1,"b":"x"},"__dbos_serializer":"superjson"}"#),
            json!({"a": 1, "b": "x"})
        );
        let typed: u32 = decode(
            r#"{"json":7,"__dbos_serializer":"superjson"}"#,
            Some(JS_SUPERJSON),
            "wf",
            "c",
        )
        .unwrap();
        assert_eq!(typed, 7);
    }

    /// A date is its ISO string, as portable_json writes it.
    #[test]
    fn superjson_dates_are_iso_strings() {
        // new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678))
        let text = r#"{"json":"2024-01-02T03:04:05.678Z","meta":{"values":["Date"]},"__dbos_serializer":"superjson"}"#;
        assert_eq!(superjson(text), json!("2024-01-02T03:04:05.678Z"));
        let date: chrono::DateTime<chrono::Utc> =
            decode(text, Some(JS_SUPERJSON), "wf", "c").unwrap();
        assert_eq!(date.timestamp_millis(), 1_704_164_645_678);
    }

    /// A big integer is its decimal string, as portable_json writes it.
    #[test]
    fn superjson_bigints_are_decimal_strings() {
        // 12345678901234567890n
        let text = r#"{"json":"12345678901234567890","meta":{"values":["bigint"]},"__dbos_serializer":"superjson"}"#;
        assert_eq!(superjson(text), json!("12345678901234567890"));
    }

    /// A set is the array of its elements, each mapped in turn.
    #[test]
    fn superjson_sets_are_arrays() {
        // new Set([1, "a", new Date(0)])
        let text = r#"{"json":[1,"a","1970-01-01T00:00:00.000Z"],"meta":{"values":["set",{"2":["Date"]}]},"__dbos_serializer":"superjson"}"#;
        assert_eq!(superjson(text), json!([1, "a", "1970-01-01T00:00:00.000Z"]));
    }

    /// A map with string keys is an object; any other map keeps its `[key, value]` pairs.
    #[test]
    fn superjson_maps_are_objects_or_pairs() {
        // new Map([["a", 1], ["b", new Date(0)]])
        let strings = r#"{"json":[["a",1],["b","1970-01-01T00:00:00.000Z"]],"meta":{"values":["map",{"1.1":["Date"]}]},"__dbos_serializer":"superjson"}"#;
        assert_eq!(
            superjson(strings),
            json!({"a": 1, "b": "1970-01-01T00:00:00.000Z"})
        );
        let typed: std::collections::HashMap<String, Value> =
            decode(strings, Some(JS_SUPERJSON), "wf", "c").unwrap();
        assert_eq!(typed["a"], json!(1));
        // new Map([[1, "one"], [2, "two"]])
        let numbers = r#"{"json":[[1,"one"],[2,"two"]],"meta":{"values":["map"]},"__dbos_serializer":"superjson"}"#;
        assert_eq!(superjson(numbers), json!([[1, "one"], [2, "two"]]));
        let pairs: Vec<(u32, String)> = decode(numbers, Some(JS_SUPERJSON), "wf", "c").unwrap();
        assert_eq!(pairs, [(1, "one".to_owned()), (2, "two".to_owned())]);
        // new Map([[new Date(0), new Set([1n])]]): keys and values mapped first
        let nested = r#"{"json":[["1970-01-01T00:00:00.000Z",["1"]]],"meta":{"values":["map",{"0.0":["Date"],"0.1":["set",{"0":["bigint"]}]}]},"__dbos_serializer":"superjson"}"#;
        assert_eq!(
            superjson(nested),
            json!({"1970-01-01T00:00:00.000Z": ["1"]})
        );
    }

    /// `undefined` leaves its key out of an object, and is `null` in an array or at the root.
    #[test]
    fn superjson_undefined_is_left_out_or_null() {
        // undefined
        let root =
            r#"{"json":null,"meta":{"values":["undefined"]},"__dbos_serializer":"superjson"}"#;
        assert_eq!(superjson(root), Value::Null);
        let absent: Option<u32> = decode(root, Some(JS_SUPERJSON), "wf", "c").unwrap();
        assert_eq!(absent, None);
        // {when: new Date(0), tags: new Set(["x"]), u: undefined, arr: [undefined, 1n], "a.b": new Date(0)}
        let nested = r#"{"json":{"when":"1970-01-01T00:00:00.000Z","tags":["x"],"u":null,"arr":[null,"1"],"a.b":"1970-01-01T00:00:00.000Z"},"meta":{"values":{"when":["Date"],"tags":["set"],"u":["undefined"],"arr.0":["undefined"],"arr.1":["bigint"],"a\\.b":["Date"]}},"__dbos_serializer":"superjson"}"#;
        assert_eq!(
            superjson(nested),
            json!({
                "when": "1970-01-01T00:00:00.000Z",
                "tags": ["x"],
                "arr": [null, "1"],
                "a.b": "1970-01-01T00:00:00.000Z"
            })
        );
    }

    /// Numbers JSON cannot hold read as `JSON.stringify` writes them; errors, regular
    /// expressions, URLs and byte arrays keep the JSON written.
    #[test]
    fn superjson_other_annotations_keep_portable_forms() {
        // [Infinity, -Infinity, -0], NaN
        let numbers = r#"{"json":["Infinity","-Infinity","-0"],"meta":{"values":{"0":["number"],"1":["number"],"2":["number"]}},"__dbos_serializer":"superjson"}"#;
        assert_eq!(superjson(numbers), json!([null, null, 0]));
        let nan = r#"{"json":"NaN","meta":{"values":["number"]},"__dbos_serializer":"superjson"}"#;
        assert_eq!(superjson(nan), Value::Null);
        // new Error("boom"), /ab+c/i, new URL("https://x.test/a"), Buffer.from([1, 2]),
        // new Uint8Array([1, 2])
        let error = r#"{"json":{"name":"Error","message":"boom"},"meta":{"values":["Error"]},"__dbos_serializer":"superjson"}"#;
        assert_eq!(
            superjson(error),
            json!({"name": "Error", "message": "boom"})
        );
        let regexp =
            r#"{"json":"/ab+c/i","meta":{"values":["regexp"]},"__dbos_serializer":"superjson"}"#;
        assert_eq!(superjson(regexp), json!("/ab+c/i"));
        let url = r#"{"json":"https://x.test/a","meta":{"values":["URL"]},"__dbos_serializer":"superjson"}"#;
        assert_eq!(superjson(url), json!("https://x.test/a"));
        let buffer = r#"{"json":[1,2],"meta":{"values":[["custom","Buffer"]]},"__dbos_serializer":"superjson"}"#;
        let bytes: Vec<u8> = decode(buffer, Some(JS_SUPERJSON), "wf", "c").unwrap();
        assert_eq!(bytes, [1, 2]);
        let typed = r#"{"json":[1,2],"meta":{"values":[["typed-array","Uint8Array"]]},"__dbos_serializer":"superjson"}"#;
        assert_eq!(superjson(typed), json!([1, 2]));
        // {p: o, q: o} with one object o = {k: 1}: both copies are in `json`
        let shared = r#"{"json":{"p":{"k":1},"q":{"k":1}},"meta":{"referentialEqualities":{"p":["q"]}},"__dbos_serializer":"superjson"}"#;
        assert_eq!(superjson(shared), json!({"p": {"k": 1}, "q": {"k": 1}}));
    }

    /// A value that is not DBOS's superjson record, or names an annotation Cairn does not
    /// know, is a decode error that says why.
    #[test]
    fn malformed_superjson_is_refused_with_the_reason() {
        let refused = |text: &str| {
            decode::<Value>(text, Some(JS_SUPERJSON), "wf-9", "notifications.message")
                .unwrap_err()
                .to_string()
        };
        assert!(refused(r#"{"json":7}"#).contains("marker"));
        assert!(refused(r#"7"#).contains("js_superjson"));
        assert!(refused(r#"{"__dbos_serializer":"superjson"}"#).contains("\"json\""));
        let unknown =
            refused(r#"{"json":1,"meta":{"values":["Temporal"]},"__dbos_serializer":"superjson"}"#);
        assert!(
            unknown.contains("Temporal") && unknown.contains("wf-9"),
            "{unknown}"
        );
        let missing = refused(
            r#"{"json":{},"meta":{"values":{"a":["Date"]}},"__dbos_serializer":"superjson"}"#,
        );
        assert!(missing.contains("not in the value"), "{missing}");
    }

    /// An outcome written for a `js_superjson` row reads back (by Cairn as by DBOS TypeScript)
    /// as the value it was; other rows get portable JSON unchanged.
    #[test]
    fn outcomes_follow_the_row_format() {
        let text = encode(&json!({"a": [1, "x"]}), String::new).unwrap();
        let wrapped = in_row_format(text.clone(), Some(JS_SUPERJSON));
        assert_eq!(
            wrapped,
            r#"{"json":{"a":[1,"x"]},"__dbos_serializer":"superjson"}"#
        );
        assert_eq!(superjson(&wrapped), json!({"a": [1, "x"]}));
        assert_eq!(in_row_format(text.clone(), Some(PORTABLE_JSON)), text);
        assert_eq!(in_row_format(text.clone(), None), text);
    }

    /// DBOS TypeScript's client stores a workflow's inputs as the argument array itself; its
    /// errors read as portable errors.
    #[test]
    fn superjson_inputs_and_errors_read_back() {
        // enqueue(…, 5, new Date(0))
        let inputs = r#"{"json":[5,"1970-01-01T00:00:00.000Z"],"meta":{"values":{"1":["Date"]}},"__dbos_serializer":"superjson"}"#;
        let args = decode_inputs(Some(inputs), Some(JS_SUPERJSON), "wf").unwrap();
        assert_eq!(args, [json!(5), json!("1970-01-01T00:00:00.000Z")]);
        let not_inputs = r#"{"json":{"positionalArgs":[1]},"__dbos_serializer":"superjson"}"#;
        assert!(decode_inputs(Some(not_inputs), Some(JS_SUPERJSON), "wf").is_err());
        let error = r#"{"json":{"name":"TypeError","message":"bad","stack":"TypeError: bad"},"__dbos_serializer":"superjson"}"#;
        let portable = decode_error(error, Some(JS_SUPERJSON), "wf", "c").unwrap();
        assert_eq!(
            (portable.name.as_str(), portable.message.as_str()),
            ("TypeError", "bad")
        );
    }
}
