//! The API's OpenAPI 3.1 description, generated from the handlers' own annotations, at
//! `GET /openapi.json`, with interactive docs (Swagger UI, served by the node itself) at
//! `/docs`.

use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::state::AppState;

/// The whole API, as one OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Strata",
        description = "A sharded, replicated data tier: accounts, posts, tasks, files and search. \
                       Errors are application/problem+json (RFC 9457)."
    ),
    paths(
        crate::health::healthz,
        crate::health::readyz,
        crate::metrics::render,
        super::auth::signup,
        super::auth::login,
        super::auth::refresh,
        super::auth::logout,
        super::auth::logout_all,
        super::me::me,
        super::me::change_password,
        super::me::sessions,
        super::me::end_session,
        super::admin::shards,
        super::admin::rebalance,
        super::admin::rebuild_search,
        super::posts::create,
        super::posts::read,
        super::posts::update,
        super::posts::remove,
        super::posts::list,
        super::tasks::create,
        super::tasks::read,
        super::tasks::update,
        super::tasks::remove,
        super::tasks::list,
        super::files::upload,
        super::files::metadata,
        super::files::download,
        super::files::remove,
        super::files::list,
        super::search::handle,
    ),
    modifiers(&BearerToken, &CommonAnswers),
    tags(
        (name = "accounts", description = "Signup, login, tokens, sessions"),
        (name = "posts", description = "Posts, public or private"),
        (name = "tasks", description = "Each user's tasks"),
        (name = "files", description = "Each user's files"),
        (name = "search", description = "Full-text search over what the caller may see"),
        (name = "operations", description = "Health, readiness, metrics, administration"),
    )
)]
pub struct ApiDoc;

/// Declares the `Authorization: Bearer <access token>` scheme the paths refer to.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .build(),
                ),
            );
    }
}

/// The answers every operation of a kind can give, added where a handler's annotation
/// leaves them out, so clients and fuzzers can trust the document: 400 (a malformed
/// path, query or body), 401 (operations that need a token), 413 and 415 (operations with
/// a body), 422 (operations with a body or query parameters), 429 (rate-limited
/// operations), 503 (anything that reaches the data tier); and the
/// `x-strata-consistency` request header on every `/v1` operation.
struct CommonAnswers;

/// A consistency token as writes return it: `shard@lsn` entries and the catalog epoch
/// (`eN`), comma-separated; what `ConsistencyToken::parse` accepts (up to
/// `MAX_ENTRIES` shards and the epoch).
const CONSISTENCY_PATTERN: &str =
    "^(?:(?:e[0-9]{1,19}|[a-z0-9_-]{1,32}@[0-9A-F]{1,8}/[0-9A-F]{1,8})(?:,|$)){0,65}$";

/// Operations whose callers are rate limited (429).
const RATE_LIMITED: &[&str] = &[
    "/v1/auth/signup",
    "/v1/auth/login",
    "/v1/auth/refresh",
    "/v1/me/password",
    "/v1/search",
];

impl Modify for CommonAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{ContentBuilder, Ref, Required, ResponseBuilder};

        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
        };
        let consistency = ParameterBuilder::new()
            .name("x-strata-consistency")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "A consistency token from an earlier answer: the read sees that write",
            ))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(CONSISTENCY_PATTERN)),
            ))
            .build();
        for (path, item) in &mut openapi.paths.paths {
            let operations: [&mut Option<Operation>; 5] = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                // An upload may be empty (a file of no bytes).
                if let (true, Some(utoipa::openapi::RefOr::T(body))) =
                    (path == "/v1/files", operation.request_body.as_mut())
                {
                    body.required = Some(Required::False);
                }
                // Ids in paths: an item id (64 hex digits) or a user id (32).
                for parameter in operation.parameters.iter_mut().flatten() {
                    let utoipa::openapi::RefOr::T(parameter) = parameter else {
                        continue;
                    };
                    let pattern = match (parameter.parameter_in.clone(), parameter.name.as_str()) {
                        (ParameterIn::Path, "id") => "^[0-9a-f]{64}$",
                        (ParameterIn::Path, "user_id") => "^[0-9a-f]{32}$",
                        _ => continue,
                    };
                    parameter.schema = Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .pattern(Some(pattern))
                            .into(),
                    );
                }
                let has_body = operation.request_body.is_some();
                let has_query = operation.parameters.iter().flatten().any(|p| {
                    matches!(p, utoipa::openapi::RefOr::T(p) if p.parameter_in == ParameterIn::Query)
                });
                let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                let data_tier = path.starts_with("/v1/");
                let mut add = |code: &str, description: &str| {
                    operation
                        .responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| problem(description).into());
                };
                add(
                    "400",
                    "Malformed request: path, query or body cannot be read",
                );
                if secured {
                    add("401", "No valid access token, or its session has ended");
                }
                if path.contains('{') {
                    add("404", "Nothing the caller may see has this id");
                }
                if has_body {
                    add("413", "The body is larger than the limit");
                    add("415", "The body is not of a supported media type");
                }
                if has_body || has_query {
                    add("422", "A field or parameter is invalid (each is named)");
                }
                if RATE_LIMITED.contains(&path.as_str()) {
                    add(
                        "429",
                        "Too many attempts; Retry-After says when to try again",
                    );
                }
                if data_tier {
                    add(
                        "503",
                        "A shard or Redis is unavailable; Retry-After says when to try again",
                    );
                    operation
                        .parameters
                        .get_or_insert_with(Vec::new)
                        .push(consistency.clone().into());
                }
            }
        }
    }
}

/// `GET /openapi.json` and `GET /docs`.
pub fn router() -> Router<AppState> {
    // Swagger UI's files are built into the node (the crate's vendored copy): `/docs`
    // works without internet.
    Router::new().merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_every_operation_and_its_schemas() {
        let document = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
        let operations: usize = document["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|item| item.as_object().unwrap().len())
            .sum();
        assert_eq!(operations, 31, "every handler is described");
        for schema in [
            "Post",
            "Task",
            "FileMeta",
            "Hit",
            "Problem",
            "TokenPair",
            "UserView",
        ] {
            assert!(
                document["components"]["schemas"].get(schema).is_some(),
                "{schema} is described"
            );
        }
        let search = &document["paths"]["/v1/search"]["get"];
        let names: Vec<&str> = search["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(
            names,
            [
                "q",
                "type",
                "scope",
                "limit",
                "cursor",
                "x-strata-consistency"
            ]
        );
        assert_eq!(search["parameters"][0]["required"], true, "q is required");
        for code in ["400", "401", "422", "429", "503"] {
            assert!(
                search["responses"].get(code).is_some(),
                "search documents {code}"
            );
        }
        let upload = &document["paths"]["/v1/files"]["post"];
        for code in ["401", "413", "415", "422", "503"] {
            assert!(
                upload["responses"].get(code).is_some(),
                "upload documents {code}"
            );
        }
    }

    /// A header the description calls invalid must be refused, and one it allows must
    /// be read: the node's parser and the published pattern agree.
    #[test]
    fn the_consistency_pattern_and_the_parser_agree() {
        use crate::consistency::{ConsistencyToken, MAX_ENTRIES};
        let pattern = regex::Regex::new(CONSISTENCY_PATTERN).unwrap();
        let most: Vec<String> = (0..MAX_ENTRIES).map(|i| format!("s{i}@0/1")).collect();
        let most = most.join(",");
        let too_many = format!("{most},s{MAX_ENTRIES}@0/1,e1");
        let samples = [
            "",
            ",",
            ",,",
            "s0@0/1",
            "s0@0/1,",
            "s0@0/1,,",
            ",s0@0/1",
            "s0@0/1,s1@A/FF,e7",
            "e7",
            "e7,",
            "e",
            "e+1",
            "e01234567890123456789",
            "s0@0/a",
            "s0@+1/1",
            "s0@123456789/1",
            " s0@0/1",
            "s0@0/1 ",
            "S0@0/1",
            "s0",
            "@0/1",
            &most,
            &format!("{most},e2"),
            &too_many,
        ];
        for sample in samples {
            assert_eq!(
                ConsistencyToken::parse(sample).is_ok(),
                pattern.is_match(sample),
                "{sample:?}"
            );
        }
    }
}
