#![forbid(unsafe_code)]
//! Procedural macros for [cairn](https://docs.rs/cairn): `#[workflow]` and `#[step]`.
//!
//! Both turn an `async fn` into a plain `fn` returning `impl Future`, so the durable operation
//! id is taken when the function is *called* (not when first polled), which keeps `join!` of
//! steps deterministic. The original body moves to a hidden `async fn`.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{ToTokens, format_ident, quote, quote_spanned};
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

impl Kind {
    /// The attribute as users write it.
    fn attribute(self) -> &'static str {
        match self {
            Kind::Workflow => "#[cairn::workflow]",
            Kind::Step => "#[cairn::step]",
        }
    }

    /// The options the attribute takes.
    fn options(self) -> &'static [&'static str] {
        match self {
            Kind::Workflow => &["name", "max_recovery_attempts"],
            Kind::Step => &[
                "name",
                "max_attempts",
                "interval_ms",
                "backoff_rate",
                "max_interval_ms",
                "timeout_ms",
                "cancellable",
                "should_retry",
            ],
        }
    }

    /// The other attribute.
    fn other(self) -> Kind {
        match self {
            Kind::Workflow => Kind::Step,
            Kind::Step => Kind::Workflow,
        }
    }
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
                    let allowed = kind.options().join(", ");
                    let this = kind.attribute();
                    let other = kind.other();
                    // The most likely slip: an option of the other attribute.
                    let message = if other.options().contains(&key.as_str()) {
                        format!(
                            "`{key}` is an option of {}, not of {this}; {this} takes: {allowed}",
                            other.attribute()
                        )
                    } else {
                        format!("unknown option `{key}` of {this}; expected one of: {allowed}")
                    };
                    return Err(meta.error(message));
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
    let what = kind.attribute();
    let sig = &function.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            format!("{what} needs an `async fn`"),
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics.params,
            generic_hint(kind),
        ));
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        return Err(syn::Error::new_spanned(where_clause, generic_hint(kind)));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new(
            variadic.span(),
            format!("{what} functions cannot be variadic"),
        ));
    }
    let output = match &sig.output {
        ReturnType::Type(_, ty) if !surely_not_result(ty) => ty.as_ref().clone(),
        ReturnType::Type(_, ty) => {
            return Err(syn::Error::new_spanned(
                ty,
                format!(
                    "{what} functions must return `Result<T, E>`, not `{}` \
                     (T: serde::Serialize + serde::Deserialize; E: the same and `Display`, \
                     for example `cairn::Error` or a thiserror enum deriving serde's traits)",
                    tokens(ty)
                ),
            ));
        }
        ReturnType::Default => {
            return Err(syn::Error::new(
                sig.ident.span(),
                format!(
                    "{what} functions must return `Result<T, E>`: add `-> Result<T, E>` \
                     (T: serde::Serialize + serde::Deserialize; E: the same and `Display`, \
                     for example `cairn::Error` or a thiserror enum deriving serde's traits)"
                ),
            ));
        }
    };
    let mut params = Vec::new();
    for (index, input) in sig.inputs.iter().enumerate() {
        let FnArg::Typed(typed) = input else {
            return Err(syn::Error::new_spanned(
                input,
                format!(
                    "{what} functions cannot take `self`: Cairn calls them by name alone, \
                     with no receiver (at recovery too); make it a free function and reach \
                     shared values with `cairn::state::<T>()`, given to \
                     `Cairn::builder(..).state(value)`"
                ),
            ));
        };
        if matches!(typed.ty.as_ref(), Type::ImplTrait(_)) {
            return Err(syn::Error::new_spanned(&typed.ty, generic_hint(kind)));
        }
        // A step's arguments live only for the call; a workflow's are recorded and decoded.
        let owned = match kind {
            Kind::Workflow => borrowed(&typed.ty),
            Kind::Step => None,
        };
        if let Some(owned) = owned {
            return Err(syn::Error::new_spanned(
                &typed.ty,
                format!(
                    "#[cairn::workflow] arguments cannot borrow: they are recorded, and \
                     decoded again when the workflow is recovered, so they must be owned; \
                     take {owned} instead"
                ),
            ));
        }
        let label = match typed.pat.as_ref() {
            Pat::Ident(ident) => ident.ident.to_string(),
            _ => format!("arg{}", index + 1),
        };
        params.push(Param {
            ident: format_ident!("__cairn_arg{}", index, span = typed.ty.span()),
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
    let step_sig = quote! {
        #vis fn #name(#(#idents: #types),*) -> impl ::core::future::Future<Output = #output> + ::core::marker::Send
    };
    // A workflow's future is marked, so that `app.start` accepts only annotated functions.
    let workflow_sig = quote! {
        #vis fn #name(#(#idents: #types),*) -> impl ::cairn::WorkflowFuture<Output = #output>
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
                #step_sig {
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
            // Spanned on the argument's type, so a type that does not serialize is named there.
            let encodes = params.iter().zip(&indexes).map(|(p, index)| {
                let ident = &p.ident;
                quote_spanned! {p.ty.span()=>
                    ::cairn::__private::encode_arg(&#ident, #index, __cairn_wf)?
                }
            });
            let decodes = params.iter().zip(&indexes).zip(&labels).map(|((p, index), label)| {
                let (ident, ty) = (&p.ident, &p.ty);
                quote_spanned! {p.ty.span()=>
                    let #ident: #ty = match ::cairn::__private::decode_arg(&mut __cairn_args, #index, #label, #stored_name) {
                        ::core::result::Result::Ok(value) => value,
                        ::core::result::Result::Err(error) => return ::core::result::Result::Err(error.to_portable()),
                    };
                }
            });
            quote! {
                #(#attrs)*
                #workflow_sig {
                    let __cairn_call = ::cairn::__private::WorkflowCall::begin(#name, |__cairn_wf: &str| {
                        ::core::result::Result::Ok(::std::vec![#(#encodes),*])
                    });
                    ::cairn::__private::workflow_future(async move { __cairn_call.run(#convert, #body_ident(#(#idents),*)).await })
                }

                #[doc(hidden)]
                #[allow(clippy::too_many_arguments)]
                #body_fn

                #[doc(hidden)]
                fn #run_ident(
                    mut __cairn_args: ::std::vec::Vec<::cairn::__private::Value>,
                ) -> ::cairn::__private::BoxFuture<'static, ::core::result::Result<::std::string::String, ::cairn::PortableError>> {
                    ::std::boxed::Box::pin(async move {
                        #(#decodes)*
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
                        path: ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#name)),
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

/// Why a generic function cannot be annotated, and what to write instead.
fn generic_hint(kind: Kind) -> String {
    match kind {
        Kind::Workflow => "#[cairn::workflow] functions cannot be generic: recovery finds a \
             workflow by its stored name and decodes its arguments into one concrete type. \
             Write one non-generic workflow per type, each calling a generic `async fn` \
             (e.g. `#[cairn::workflow] async fn resize_png(image: Png) -> Result<Png, E> { \
             resize(image).await }`)"
            .to_owned(),
        Kind::Step => "#[cairn::step] functions cannot be generic: write one non-generic step \
             per type, or run a generic `async fn` as a step with \
             `cairn::run_step(\"name\", || generic(value)).await`"
            .to_owned(),
    }
}

/// The owned type to suggest when a workflow argument borrows (a reference, or a type with
/// a lifetime), or `None` when it owns its data.
fn borrowed(ty: &Type) -> Option<String> {
    if let Type::Reference(reference) = ty {
        let inner = &reference.elem;
        let suggestion = match inner.as_ref() {
            Type::Path(path) if path.path.is_ident("str") => "`String`".to_owned(),
            Type::Path(path) if path.path.is_ident("Path") => "`PathBuf`".to_owned(),
            Type::Slice(slice) => format!("`Vec<{}>`", tokens(&slice.elem)),
            other => format!("`{}`", tokens(other)),
        };
        return Some(suggestion);
    }
    has_lifetime(ty.to_token_stream()).then(|| {
        "a type without a lifetime (`String` for `Cow<'_, str>`, `Vec<T>` for `&[T]`)".to_owned()
    })
}

/// Whether a type's tokens contain a reference or a lifetime other than `'static` (a
/// `Cow<'static, str>` owns what it decodes).
fn has_lifetime(tokens: TokenStream2) -> bool {
    use proc_macro2::TokenTree;
    let mut tokens = tokens.into_iter().peekable();
    while let Some(token) = tokens.next() {
        let borrows = match token {
            TokenTree::Punct(punct) if punct.as_char() == '&' => true,
            TokenTree::Punct(punct) if punct.as_char() == '\'' => {
                !matches!(tokens.peek(), Some(TokenTree::Ident(name)) if name == "static")
            }
            TokenTree::Group(group) => has_lifetime(group.stream()),
            _ => false,
        };
        if borrows {
            return true;
        }
    }
    false
}

/// A type as source text, without the spaces `to_string` puts between tokens.
fn tokens(ty: &Type) -> String {
    let text = ty.to_token_stream().to_string();
    text.replace(" < ", "<")
        .replace(" <", "<")
        .replace("< ", "<")
        .replace(" >", ">")
        .replace(" ,", ",")
        .replace("& ", "&")
        .replace(" :: ", "::")
}

/// Whether a return type is certainly not a `Result` (a type alias of one, such as
/// `cairn::Result<T>`, is left for the compiler to check).
fn surely_not_result(ty: &Type) -> bool {
    const NOT_RESULTS: &[&str] = &[
        "bool", "char", "str", "String", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16",
        "i32", "i64", "i128", "isize", "f32", "f64", "Vec", "Option", "Box", "HashMap", "BTreeMap",
    ];
    match ty {
        Type::Tuple(_) | Type::Reference(_) | Type::Array(_) | Type::Slice(_) => true,
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|last| NOT_RESULTS.contains(&last.ident.to_string().as_str())),
        _ => false,
    }
}
