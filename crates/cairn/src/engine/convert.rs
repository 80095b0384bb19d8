//! Whether a step's or workflow's error type can hold a failure of Cairn's.
//!
//! Failures that are Cairn's own (a panic in a step, a timed-out attempt, a cancelled child)
//! can become a value of the function's error type only if it implements
//! `From<cairn::Error>`. The macros find that out at compile time with autoref-based
//! specialization: on a concrete type, method resolution picks [`ViaFrom`] (one reference
//! deeper) when its bound holds and falls back to [`NoConversion`] otherwise. No user type
//! needs a `From<cairn::Error>` impl; those that have one get Cairn's failures as values.

use std::marker::PhantomData;

use crate::error::Error;

use super::step::Convert;

/// The probe the macros call `converter()` on, as `(&&ConvertError::<E>::new()).converter()`.
pub struct ConvertError<E>(PhantomData<fn() -> E>);

impl<E> ConvertError<E> {
    /// The probe for `E`.
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<E> Default for ConvertError<E> {
    fn default() -> Self {
        Self::new()
    }
}

/// Picked when `E: From<cairn::Error>`: failures of Cairn's convert into `E`.
pub trait ViaFrom<E> {
    /// The conversion.
    fn converter(&self) -> Convert<E>;
}

impl<E: From<Error>> ViaFrom<E> for &ConvertError<E> {
    fn converter(&self) -> Convert<E> {
        Some(E::from)
    }
}

/// Picked otherwise: failures of Cairn's fail the workflow instead.
pub trait NoConversion<E> {
    /// No conversion.
    fn converter(&self) -> Convert<E>;
}

impl<E> NoConversion<E> for ConvertError<E> {
    fn converter(&self) -> Convert<E> {
        None
    }
}

/// The parts of a `Result` type, so the macros can name a function's error type.
#[diagnostic::on_unimplemented(
    message = "a Cairn workflow or step must return `Result<T, E>`, not `{Self}`",
    label = "not a `Result`",
    note = "E is recorded when the function fails: `cairn::Error`, or your own error type deriving `serde::Serialize`, `serde::Deserialize` and implementing `Display`"
)]
pub trait ResultParts {
    /// The error type.
    type Err;
}

impl<T, E> ResultParts for Result<T, E> {
    type Err = E;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Plain;

    #[derive(Debug)]
    struct Holds;

    impl From<Error> for Holds {
        fn from(_: Error) -> Self {
            Holds
        }
    }

    /// A type with `From<cairn::Error>` gets a conversion; a type without one gets none.
    #[test]
    #[allow(clippy::needless_borrow)] // the probe needs both references (see the module doc)
    fn the_probe_finds_from_when_it_exists() {
        #[allow(unused_imports)]
        use super::{NoConversion as _, ViaFrom as _};
        assert!((&&ConvertError::<Holds>::new()).converter().is_some());
        assert!((&&ConvertError::<Plain>::new()).converter().is_none());
        assert!((&&ConvertError::<Error>::new()).converter().is_some());
    }
}
