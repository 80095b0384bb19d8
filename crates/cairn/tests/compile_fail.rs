//! The macros' mistakes are compile errors that say what to write instead: each case in
//! `tests/ui/` is compiled and its errors compared with the `.stderr` beside it.
//!
//! The expected output follows the compiler's wording, which can change between Rust
//! releases: regenerate it with `TRYBUILD=overwrite cargo test -p cairn --test compile_fail`
//! and read the diff.

/// Generic functions, methods, borrowed or unserializable arguments, a missing `Result`, an
/// error type that cannot be recorded, an unknown option, and a function that is not a
/// workflow passed to `start` are each refused at compile time with a hint.
#[test]
fn macro_mistakes_fail_to_compile_with_a_hint() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
