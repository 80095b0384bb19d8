//! Portable JSON: how every value Cairn stores is written and read back.
//!
//! Values are compact JSON. Workflow inputs are `{"positionalArgs":[…],"namedArgs":{}}`;
//! errors are [`PortableError`] objects. A row written in another format (`py_pickle`, a
//! custom serializer) is kept as raw text and refused with a [`Error::Decode`] naming the
//! workflow, the column and the format.

use std::any::Any;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, PortableError, Result};
use crate::store::PORTABLE_JSON;

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

/// Refuse a value whose `serialization` column names a format Cairn cannot read.
/// A NULL format is read as JSON (rows written before the column existed).
fn check_format(serialization: Option<&str>, workflow_id: &str, column: &str) -> Result<()> {
    match serialization {
        None | Some(PORTABLE_JSON) => Ok(()),
        Some(other) => Err(Error::Decode {
            workflow_id: workflow_id.to_owned(),
            column: column.to_owned(),
            reason: format!("cannot decode format {other} (Cairn reads only {PORTABLE_JSON})"),
        }),
    }
}

/// Decode a stored value into `T`, naming the workflow and column if it cannot be.
pub(crate) fn decode<T: DeserializeOwned>(
    text: &str,
    serialization: Option<&str>,
    workflow_id: &str,
    column: &str,
) -> Result<T> {
    check_format(serialization, workflow_id, column)?;
    serde_json::from_str(text).map_err(|e| Error::Decode {
        workflow_id: workflow_id.to_owned(),
        column: column.to_owned(),
        reason: format!("not the expected type {}: {e}", std::any::type_name::<T>()),
    })
}

/// Decode a stored error into a [`PortableError`]. A JSON value that is not an error object
/// (a bare string, say) becomes an error whose message is that value.
pub(crate) fn decode_error(
    text: &str,
    serialization: Option<&str>,
    workflow_id: &str,
    column: &str,
) -> Result<PortableError> {
    check_format(serialization, workflow_id, column)?;
    let value: Value = serde_json::from_str(text).map_err(|e| Error::Decode {
        workflow_id: workflow_id.to_owned(),
        column: column.to_owned(),
        reason: format!("not JSON: {e}"),
    })?;
    Ok(match value {
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
/// (written by a Python or TypeScript caller) are appended in their stored order.
pub(crate) fn decode_inputs(
    text: Option<&str>,
    serialization: Option<&str>,
    workflow_id: &str,
) -> Result<Vec<Value>> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    let value: Value = decode(text, serialization, workflow_id, "workflow_input.inputs")?;
    let not_inputs = || Error::Decode {
        workflow_id: workflow_id.to_owned(),
        column: "workflow_input.inputs".to_owned(),
        reason: "expected an object with positionalArgs and namedArgs".to_owned(),
    };
    let Value::Object(mut map) = value else {
        return Err(not_inputs());
    };
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

#[cfg(test)]
mod tests {
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
}
