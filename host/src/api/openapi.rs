//! `/openapi.json`: the OpenAPI 3.1 document of the host API, generated from the route list
//! ([`super::ROUTES`]) and the wire types' derived schemas — never written by hand, so it
//! cannot drift from what the host serves. Each operation carries its access level as
//! `x-ferry-access` (`public`, `anyone`, `cluster-secret` or the least role).

use super::{RouteSpec, ROUTES};
use crate::auth::Access;
use axum::http::header;
use axum::response::IntoResponse;
use std::sync::OnceLock;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ComponentsBuilder, Schema};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiBuilder, Paths, Ref, RefOr, Required, Type};
use utoipa::ToSchema;

/// Schemas collected while the document is built (name, schema).
pub type Schemas = Vec<(String, RefOr<Schema>)>;
/// Registers a type's schemas and returns a reference to it.
pub type SchemaFn = fn(&mut Schemas) -> RefOr<Schema>;

/// What a route answers.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    /// JSON with this status code.
    Json(u16, SchemaFn),
    /// Text of this content type.
    Text(&'static str),
}

/// `T`, by reference.
pub fn one<T: ToSchema>(schemas: &mut Schemas) -> RefOr<Schema> {
    schemas.push((T::name().into_owned(), T::schema()));
    T::schemas(schemas);
    RefOr::Ref(Ref::from_schema_name(T::name()))
}

/// A list of `T`.
pub fn list<T: ToSchema>(schemas: &mut Schemas) -> RefOr<Schema> {
    let item = one::<T>(schemas);
    ArrayBuilder::new().items(item).into()
}

fn access_name(a: Access) -> String {
    match a {
        Access::Public => "public".into(),
        Access::Anyone => "anyone".into(),
        Access::ClusterSecret => "cluster-secret".into(),
        Access::Role(r) => r.as_str().into(),
        // The default; `user` when the host's `user_vps` is on.
        Access::VpsCreate => "operator".into(),
        // The default; `viewer` when the host's `viewer_file_access` is on.
        Access::FileRead => "user".into(),
    }
}

fn method(m: &str) -> HttpMethod {
    match m {
        "POST" => HttpMethod::Post,
        "PUT" => HttpMethod::Put,
        "PATCH" => HttpMethod::Patch,
        "DELETE" => HttpMethod::Delete,
        _ => HttpMethod::Get,
    }
}

/// The `{name}` segments of a path.
fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

fn operation(spec: &RouteSpec, schemas: &mut Schemas) -> utoipa::openapi::path::Operation {
    let mut op = OperationBuilder::new()
        .summary(Some(spec.summary))
        .operation_id(Some(format!("{} {}", spec.method, spec.path)))
        .extensions(Some(
            ExtensionsBuilder::new()
                .add("x-ferry-access", access_name(spec.access))
                .build(),
        ));
    for name in path_params(spec.path) {
        op = op.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(
                    utoipa::openapi::ObjectBuilder::new().schema_type(Type::String),
                )),
        );
    }
    if let Some(body) = spec.body {
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(body(schemas))).build(),
                )
                .required(Some(Required::True))
                .build(),
        ));
    }
    let ok = match spec.reply {
        Reply::Json(status, schema) => (
            status,
            ResponseBuilder::new().description("Success").content(
                "application/json",
                ContentBuilder::new().schema(Some(schema(schemas))).build(),
            ),
        ),
        Reply::Text(content_type) => (
            200,
            ResponseBuilder::new().description("Success").content(
                content_type,
                ContentBuilder::new()
                    .schema(Some(
                        utoipa::openapi::ObjectBuilder::new().schema_type(Type::String),
                    ))
                    .build(),
            ),
        ),
    };
    let error = one::<ferry_common::ErrorBody>(schemas);
    op.response(ok.0.to_string(), ok.1.build())
        .response(
            "default",
            ResponseBuilder::new()
                .description("An error: {\"detail\": \"...\"} naming what was wrong")
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(error)).build(),
                )
                .build(),
        )
        .build()
}

/// Builds the document from [`ROUTES`].
pub fn document() -> OpenApi {
    let mut schemas = Schemas::new();
    let mut paths = Paths::new();
    for spec in ROUTES {
        let op = operation(spec, &mut schemas);
        paths.add_path_operation(spec.path, vec![method(spec.method)], op);
    }
    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas)
        .security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        )
        .security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::auth::SESSION_COOKIE,
            ))),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Ferry host API")
                .version(ferry_common::VERSION)
                .description(Some(
                    "KohakuRiver-compatible cluster scheduler API. Each operation's \
                     x-ferry-access names who may call it.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components))
        .build()
}

/// `GET /openapi.json` (built once).
pub async fn serve() -> impl IntoResponse {
    static DOC: OnceLock<String> = OnceLock::new();
    let text = DOC.get_or_init(|| document().to_json().unwrap_or_else(|_| "{}".into()));
    ([(header::CONTENT_TYPE, "application/json")], text.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::to_value(document()).unwrap()
    }

    #[test]
    fn every_route_of_the_list_is_in_the_document_with_its_access() {
        let d = doc();
        assert_eq!(d["openapi"], "3.1.0");
        for spec in ROUTES {
            let op = &d["paths"][spec.path][spec.method.to_lowercase()];
            assert!(op.is_object(), "{} {} missing", spec.method, spec.path);
            assert_eq!(op["x-ferry-access"], access_name(spec.access));
            for p in path_params(spec.path) {
                let params = op["parameters"].as_array().unwrap();
                assert!(params.iter().any(|x| x["name"] == p), "{} {p}", spec.path);
            }
        }
    }

    /// Every schema a route refers to is defined, so a client generator can resolve it.
    #[test]
    fn every_reference_resolves() {
        let d = doc();
        let text = d.to_string();
        for (i, _) in text.match_indices("#/components/schemas/") {
            let rest = &text[i + "#/components/schemas/".len()..];
            let name: String = rest.chars().take_while(|c| *c != '"').collect();
            assert!(
                d["components"]["schemas"][&name].is_object(),
                "{name} is referred to but not defined"
            );
        }
    }

    /// The schema of a reply is the reply type's: the fields the type serialises are the
    /// properties the document lists, for the main task and node types.
    #[test]
    fn reply_schemas_match_what_the_types_serialise() {
        let d = doc();
        let schemas = &d["components"]["schemas"];
        let task = serde_json::to_value(sample_task()).unwrap();
        let props = schemas["TaskResponse"]["properties"].as_object().unwrap();
        let keys: Vec<&String> = task.as_object().unwrap().keys().collect();
        assert_eq!(
            props.keys().collect::<std::collections::BTreeSet<_>>(),
            keys.into_iter().collect(),
        );
        let op = &d["paths"]["/api/status/{task_id}"]["get"];
        assert_eq!(
            op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/TaskResponse"
        );
        let submit = &d["paths"]["/api/submit"]["post"];
        assert!(submit["responses"]["202"].is_object());
        assert_eq!(
            submit["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/SubmitRequest"
        );
    }

    fn sample_task() -> ferry_common::api::TaskResponse {
        let t = crate::tasks::model::tests::sample(1);
        let mut shown = crate::tasks::views::task(&t, &Default::default(), None);
        // Present only while a runner prepares the task: set, so the comparison covers it.
        shown.preparing = Some(ferry_common::api::Preparing {
            stage: ferry_common::api::PrepareStage::Loading,
            environment: Some("env".into()),
            bytes_done: 1,
            bytes_total: Some(2),
        });
        shown.waiting_reason = Some("needs 4 cores; largest free 2 on node-a".into());
        shown
    }
}
