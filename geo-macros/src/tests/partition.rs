//! `#[replicable(partition)]`: the expansion with a partition field, and every misuse reported
//! once, on its token.

use super::{errors, expansion};
use quote::quote;

#[test]
fn snapshot_partition_i64() {
    insta::assert_snapshot!(expansion(
        quote!(strategy = "blob"),
        quote! {
            #[derive(Queryable, Selectable)]
            #[diesel(table_name = widgets)]
            pub struct Widget {
                pub id: i64,
                #[replicable(file)]
                pub file_path: String,
                #[replicable(partition)]
                pub tenant_id: i64,
            }
        }
    ));
}

#[test]
fn snapshot_partition_optional_with_column_name() {
    insta::assert_snapshot!(expansion(
        quote!(strategy = "blob", verification = "none"),
        quote! {
            #[derive(Queryable, Selectable)]
            #[diesel(table_name = notes)]
            pub struct Note {
                pub id: i32,
                #[replicable(file)]
                pub path: String,
                #[replicable(partition)]
                #[diesel(column_name = namespace)]
                pub ns: Option<i32>,
            }
        }
    ));
}

#[test]
fn partition_types() {
    for ty in [
        quote!(i16),
        quote!(i32),
        quote!(i64),
        quote!(Option<i64>),
        quote!(::core::option::Option<i16>),
    ] {
        let e = errors(
            quote!(strategy = "blob"),
            quote! {
                struct Widget {
                    id: i64,
                    #[replicable(file)]
                    path: String,
                    #[replicable(partition)]
                    tenant: #ty,
                }
            },
        );
        assert!(e.is_empty(), "{ty}: {e:#?}");
    }
    for ty in [
        quote!(String),
        quote!(u64),
        quote!(Option<String>),
        quote!(Vec<i64>),
        quote!(Option<Option<i64>>),
    ] {
        let e = errors(
            quote!(strategy = "blob"),
            quote! {
                struct Widget {
                    id: i64,
                    #[replicable(file)]
                    path: String,
                    #[replicable(partition)]
                    tenant: #ty,
                }
            },
        );
        assert_eq!(e.len(), 1, "{ty}: {e:#?}");
        assert!(
            e[0].contains("the partition `tenant` must be an integer"),
            "{}",
            e[0]
        );
    }
}

#[test]
fn partition_misuses() {
    let two = errors(
        quote!(strategy = "blob"),
        quote! {
            struct Widget {
                id: i64,
                #[replicable(file)]
                path: String,
                #[replicable(partition)]
                a: i64,
                #[replicable(partition)]
                b: i64,
            }
        },
    );
    assert_eq!(two.len(), 1, "{two:#?}");
    assert!(two[0].starts_with("more than one field is marked `#[replicable(partition)]`"));

    let on_id = errors(
        quote!(strategy = "blob"),
        quote! {
            struct Widget {
                #[replicable(partition)]
                id: i64,
                #[replicable(file)]
                path: String,
            }
        },
    );
    assert_eq!(on_id.len(), 1, "{on_id:#?}");
    assert!(on_id[0].starts_with("the primary key cannot be the partition"));

    let on_file = errors(
        quote!(strategy = "blob"),
        quote! {
            struct Widget {
                id: i64,
                #[replicable(file, partition)]
                path: String,
            }
        },
    );
    assert_eq!(on_file.len(), 1, "{on_file:#?}");
    assert!(on_file[0].starts_with("the `#[replicable(file)]` field cannot be the partition"));

    let valued = errors(
        quote!(strategy = "blob"),
        quote! {
            struct Widget {
                id: i64,
                #[replicable(file)]
                path: String,
                #[replicable(partition = "tenant")]
                tenant: i64,
            }
        },
    );
    assert_eq!(
        valued,
        ["`partition` takes no value: write `#[replicable(partition)]`"]
    );

    let duplicate = errors(
        quote!(strategy = "blob"),
        quote! {
            struct Widget {
                id: i64,
                #[replicable(file)]
                path: String,
                #[replicable(partition, partition)]
                tenant: i64,
            }
        },
    );
    assert_eq!(
        duplicate,
        ["duplicate field option `partition`: give it only once"]
    );

    let misspelt = errors(
        quote!(strategy = "blob"),
        quote! {
            struct Widget {
                id: i64,
                #[replicable(file)]
                path: String,
                #[replicable(partiton)]
                tenant: i64,
            }
        },
    );
    assert_eq!(misspelt.len(), 1, "{misspelt:#?}");
    assert!(
        misspelt[0].contains("did you mean `partition`?"),
        "{}",
        misspelt[0]
    );

    let on_struct = errors(quote!(strategy = "blob", partition), super::widget());
    assert_eq!(on_struct.len(), 1, "{on_struct:#?}");
    assert!(
        on_struct[0].contains("`partition` are field options"),
        "{}",
        on_struct[0]
    );
}
