//! What the attribute emits when the input has errors: the item (minus our field helpers), the
//! `compile_error!`s, and a stand-in replicator so that code using `WidgetReplicator`,
//! `Widget::replicator()` or `<Widget as Replicable>` does not add errors of its own
//! (thiserror's `fallback.rs` pattern). One mistake, one error.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};
use syn::ext::IdentExt;
use syn::{Ident, Item};

use crate::ast::Input;
use crate::expand::private;
use crate::names::snake_name;

/// The item, the errors and, when the item is a non-generic struct, enum or union, the stand-in.
pub(crate) fn expand(input: &Input, errors: TokenStream) -> TokenStream {
    let item = &input.stripped;
    let stub = match (&input.ident, item) {
        (Some(ident), Item::Struct(_) | Item::Enum(_) | Item::Union(_)) if !input.has_generics => {
            stub(ident, &input.vis)
        }
        _ => TokenStream::new(),
    };
    let mut out = item.to_token_stream();
    out.extend(errors);
    out.extend(stub);
    out
}

fn stub(ident: &Ident, vis: &syn::Visibility) -> TokenStream {
    let p = private();
    let core = quote!(#p::geo_core);
    let replicator = Ident::new(&format!("{}Replicator", ident.unraw()), ident.span());
    let name = snake_name(&ident.unraw().to_string());
    let type_name = ident.unraw().to_string();
    let doc = format!(
        "Stand-in for the replicator of [`{ident}`]: `#[replicable]` reported errors, fix them \
         first."
    );
    let empty = quote!(#core::Migration { up: "", down: "" });
    quote! {
        #[doc = #doc]
        #vis struct #replicator<'a>(::core::marker::PhantomData<&'a #ident>);

        #[automatically_derived]
        impl<'a> #replicator<'a> {
            /// Stand-in (the attribute has errors).
            #vis const DESCRIPTOR: &'static #core::ReplicableDescriptor =
                &#core::ReplicableDescriptor {
                    name: #name,
                    plural: #name,
                    type_name: #type_name,
                    strategy: #core::Strategy::Blob,
                    verification: #core::VerificationMode::None,
                    enabled_by_default: false,
                    events: #core::EventCapture::Manual,
                    tables: #core::Tables {
                        model: "",
                        model_id: "",
                        model_file: "",
                        registry: "",
                        registry_model_id: "",
                        verification: ::core::option::Option::None,
                        partition: ::core::option::Option::None,
                    },
                    migrations: Self::MIGRATIONS,
                };

            /// Stand-in (the attribute has errors).
            #vis const MIGRATIONS: #core::MigrationSet = #core::MigrationSet {
                sqlite_primary: #empty,
                sqlite_secondary: #empty,
                postgres_primary: #empty,
                postgres_secondary: #empty,
            };

            /// Stand-in (the attribute has errors).
            #vis fn model_record(&self) -> &'a #ident {
                ::core::unreachable!()
            }
        }

        #[automatically_derived]
        impl<'a> #core::Replicator for #replicator<'a> {
            fn descriptor(&self) -> &'static #core::ReplicableDescriptor {
                Self::DESCRIPTOR
            }

            fn model_record_id(&self) -> ::core::primitive::i64 {
                ::core::unreachable!()
            }
        }

        #[automatically_derived]
        impl<'a> #core::BlobReplicator for #replicator<'a> {
            fn blob_path(&self) -> &::core::primitive::str {
                ::core::unreachable!()
            }
        }

        #[automatically_derived]
        impl #ident {
            /// Stand-in (the attribute has errors).
            #vis fn replicator(&self) -> #replicator<'_> {
                #replicator(::core::marker::PhantomData)
            }
        }

        #[automatically_derived]
        impl #core::Replicable for #ident {
            const DESCRIPTOR: &'static #core::ReplicableDescriptor =
                <#replicator<'static>>::DESCRIPTOR;

            type Replicator<'a> = #replicator<'a> where Self: 'a;

            fn replicator(&self) -> #replicator<'_> {
                #replicator(::core::marker::PhantomData)
            }

            fn model_record_id(&self) -> ::core::primitive::i64 {
                ::core::unreachable!()
            }
        }
    }
}
