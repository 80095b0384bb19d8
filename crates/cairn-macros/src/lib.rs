#![forbid(unsafe_code)]
//! Procedural macros for [cairn](https://docs.rs/cairn): `#[workflow]` and `#[step]`.
//!
//! Both turn an `async fn` into a plain `fn` returning `impl Future`, so the durable operation
//! id is taken when the function is *called* (not when first polled), which keeps `join!` of
//! steps deterministic. The original body moves to a hidden `async fn`.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{ToTokens, format_ident, quote};
use sha2::{Digest, Sha256};
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, LitBool, LitFloat, LitInt, LitStr, Pat, ReturnType, Type};

/// Mark an `async fn` as a durable workflow. See `cairn::workflow`.
#[proc_macro_attribute]
pub fn workflow(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr, item, Kind::Workflow)
}

/// Mark an `async fn` as a checkpointed step. See `cairn::step`.
#[proc_macro_attribute]
pub fn step(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(attr, item, Kind::Step)
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Workflow,
    Step,
}

#[derive(Default)]
struct Options {
    name: Option<LitStr>,
    max_recovery_attempts: Option<LitInt>,
    max_attempts: Option<LitInt>,
    interval_ms: Option<LitInt>,
    backoff_rate: Option<LitFloat>,
    max_interval_ms: Option<LitInt>,
    timeout_ms: Option<LitInt>,
    cancellable: Option<LitBool>,
    should_retry: Option<syn::Path>,
}

impl Options {
    fn parse(attr: TokenStream, kind: Kind) -> syn::Result<Self> {
        let mut options = Options::default();
        let parser = syn::meta::parser(|meta| {
            let key = meta
                .path
                .get_ident()
                .map(|i| i.to_string())
                .unwrap_or_default();
            match (kind, key.as_str()) {
                (_, "name") => options.name = Some(meta.value()?.parse()?),
                (Kind::Workflow, "max_recovery_attempts") => {
                    options.max_recovery_attempts = Some(meta.value()?.parse()?)
                }
                (Kind::Step, "max_attempts") => options.max_attempts = Some(meta.value()?.parse()?),
                (Kind::Step, "interval_ms") => options.interval_ms = Some(meta.value()?.parse()?),
                (Kind::Step, "backoff_rate") => options.backoff_rate = Some(meta.value()?.parse()?),
                (Kind::Step, "max_interval_ms") => {
                    options.max_interval_ms = Some(meta.value()?.parse()?)
                }
                (Kind::Step, "timeout_ms") => options.timeout_ms = Some(meta.value()?.parse()?),
                (Kind::Step, "cancellable") => options.cancellable = Some(meta.value()?.parse()?),
                (Kind::Step, "should_retry") => options.should_retry = Some(meta.value()?.parse()?),
                _ => {
                    let allowed = match kind {
                        Kind::Workflow => "name, max_recovery_attempts",
                        Kind::Step => {
                            "name, max_attempts, interval_ms, backoff_rate, max_interval_ms, \
                             timeout_ms, cancellable, should_retry"
                        }
                    };
                    return Err(meta.error(format!(
                        "unknown option `{key}`; expected one of: {allowed}"
                    )));
                }
            }
            Ok(())
        });
        parser.parse(attr)?;
        Ok(options)
    }

    fn retries(&self) -> bool {
        self.max_attempts.is_some()
            || self.interval_ms.is_some()
            || self.backoff_rate.is_some()
            || self.max_interval_ms.is_some()
            || self.timeout_ms.is_some()
            || self.cancellable.is_some()
            || self.should_retry.is_some()
    }
}

/// One parameter of the annotated function.
struct Param {
    /// The name the generated wrapper uses.
    ident: syn::Ident,
    /// The name shown in error messages.
    label: String,
    ty: Type,
}

fn expand(attr: TokenStream, item: TokenStream, kind: Kind) -> TokenStream {
    let result = Options::parse(attr, kind).and_then(|options| {
        let function: ItemFn = syn::parse(item)?;
        generate(options, function, kind)
    });
    match result {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

fn generate(options: Options, function: ItemFn, kind: Kind) -> syn::Result<TokenStream2> {
    let what = match kind {
        Kind::Workflow => "#[cairn::workflow]",
        Kind::Step => "#[cairn::step]",
    };
    let sig = &function.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            format!("{what} needs an `async fn`"),
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            format!("{what} functions cannot be generic"),
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new(
            variadic.span(),
            format!("{what} functions cannot be variadic"),
        ));
    }
    let output = match &sig.output {
        ReturnType::Type(_, ty) => ty.as_ref().clone(),
        ReturnType::Default => {
            return Err(syn::Error::new(
                sig.ident.span(),
                format!(
                    "{what} functions must return `Result<T, E>` (E: serde::Serialize + serde::Deserialize + Display)"
                ),
            ));
        }
    };
    let mut params = Vec::new();
    for (index, input) in sig.inputs.iter().enumerate() {
        let FnArg::Typed(typed) = input else {
            return Err(syn::Error::new(
                input.span(),
                format!("{what} functions cannot take `self`"),
            ));
        };
        let label = match typed.pat.as_ref() {
            Pat::Ident(ident) => ident.ident.to_string(),
            _ => format!("arg{}", index + 1),
        };
        params.push(Param {
            ident: format_ident!("__cairn_arg{}", index),
            label,
            ty: typed.ty.as_ref().clone(),
        });
    }

    let name = &sig.ident;
    let stored_name = options
        .name
        .clone()
        .unwrap_or_else(|| LitStr::new(&name.to_string(), name.span()));
    let body_ident = format_ident!(
        "__cairn_{}_body_{}",
        if kind == Kind::Workflow {
            "workflow"
        } else {
            "step"
        },
        name
    );
    let mut body_fn = function.clone();
    body_fn.sig.ident = body_ident.clone();
    body_fn.vis = syn::Visibility::Inherited;
    body_fn.attrs.retain(|a| !a.path().is_ident("doc"));
    let attrs = &function.attrs;
    let vis = &function.vis;
    let idents: Vec<_> = params.iter().map(|p| &p.ident).collect();
    let types: Vec<_> = params.iter().map(|p| &p.ty).collect();
    let wrapper_sig = quote! {
        #vis fn #name(#(#idents: #types),*) -> impl ::core::future::Future<Output = #output> + ::core::marker::Send
    };

    // `Some(From::from)` when the error type converts from `cairn::Error`, else `None`
    // (autoref specialization on the concrete type; see cairn's `engine::convert`).
    let convert = quote! {
        {
            #[allow(unused_imports)]
            use ::cairn::__private::{NoConversion as _, ViaFrom as _};
            #[allow(clippy::needless_borrow)]
            let __cairn_convert = (&&::cairn::__private::ConvertError::<
                <#output as ::cairn::__private::ResultParts>::Err,
            >::new())
                .converter();
            __cairn_convert
        }
    };
    let tokens = match kind {
        Kind::Step => {
            let call = if options.retries() {
                let mut opts = quote!(::cairn::StepOptions::default());
                if let Some(n) = &options.max_attempts {
                    opts = quote!(#opts.max_attempts(#n));
                }
                if let Some(ms) = &options.interval_ms {
                    opts = quote!(#opts.interval(::core::time::Duration::from_millis(#ms)));
                }
                if let Some(rate) = &options.backoff_rate {
                    opts = quote!(#opts.backoff_rate(#rate));
                }
                if let Some(ms) = &options.max_interval_ms {
                    opts = quote!(#opts.max_interval(::core::time::Duration::from_millis(#ms)));
                }
                if let Some(ms) = &options.timeout_ms {
                    opts = quote!(#opts.timeout(::core::time::Duration::from_millis(#ms)));
                }
                if let Some(cancellable) = &options.cancellable {
                    opts = quote!(#opts.cancellable(#cancellable));
                }
                let attempt =
                    quote!(move || #body_ident(#(::core::clone::Clone::clone(&#idents)),*));
                let predicate = match &options.should_retry {
                    Some(predicate) => quote!(#predicate),
                    None => quote!(|_| true),
                };
                quote! {
                    __cairn_step.run_retrying_if(#opts, #convert, #predicate, #attempt).await
                }
            } else {
                quote! { __cairn_step.run(#convert, #body_ident(#(#idents),*)).await }
            };
            quote! {
                #(#attrs)*
                #wrapper_sig {
                    let __cairn_step = ::cairn::__private::StepCall::begin(#stored_name);
                    async move { #call }
                }

                #[doc(hidden)]
                #[allow(clippy::too_many_arguments)]
                #body_fn
            }
        }
        Kind::Workflow => {
            let run_ident = format_ident!("__cairn_workflow_run_{}", name);
            let type_ident = format_ident!("__cairn_workflow_type_{}", name);
            let labels: Vec<_> = params
                .iter()
                .map(|p| LitStr::new(&p.label, Span::call_site()))
                .collect();
            let indexes: Vec<_> = (0..params.len()).collect();
            let max_recovery = options
                .max_recovery_attempts
                .as_ref()
                .map(|n| n.to_token_stream())
                .unwrap_or_else(|| quote!(::cairn::DEFAULT_MAX_RECOVERY_ATTEMPTS));
            let hash = source_hash(&function);
            quote! {
                #(#attrs)*
                #wrapper_sig {
                    let __cairn_call = ::cairn::__private::WorkflowCall::begin(#name, |__cairn_wf: &str| {
                        ::core::result::Result::Ok(::std::vec![
                            #(::cairn::__private::encode_arg(&#idents, #indexes, __cairn_wf)?),*
                        ])
                    });
                    async move { __cairn_call.run(#convert, #body_ident(#(#idents),*)).await }
                }

                #[doc(hidden)]
                #[allow(clippy::too_many_arguments)]
                #body_fn

                #[doc(hidden)]
                fn #run_ident(
                    mut __cairn_args: ::std::vec::Vec<::cairn::__private::Value>,
                ) -> ::cairn::__private::BoxFuture<'static, ::core::result::Result<::std::string::String, ::cairn::PortableError>> {
                    ::std::boxed::Box::pin(async move {
                        #(
                            let #idents: #types = match ::cairn::__private::decode_arg(&mut __cairn_args, #indexes, #labels, #stored_name) {
                                ::core::result::Result::Ok(value) => value,
                                ::core::result::Result::Err(error) => return ::core::result::Result::Err(error.to_portable()),
                            };
                        )*
                        ::cairn::__private::finish(#stored_name, #body_ident(#(#idents),*)).await
                    })
                }

                #[doc(hidden)]
                fn #type_ident() -> ::core::any::TypeId {
                    ::cairn::__private::type_id_of_val(&#name)
                }

                ::cairn::__private::inventory::submit! {
                    ::cairn::__private::WorkflowRegistration {
                        name: #stored_name,
                        type_id: #type_ident,
                        run: #run_ident,
                        source_hash: #hash,
                        max_recovery_attempts: #max_recovery,
                    }
                }
            }
        }
    };
    Ok(tokens)
}

/// A short hash of the function's tokens: stable across rebuilds, different when its code changes.
fn source_hash(function: &ItemFn) -> String {
    let digest = Sha256::digest(function.to_token_stream().to_string().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
