//! The API's OpenAPI 3.1 description, generated from the handlers' own annotations, at
//! `GET /openapi.json`, with interactive docs (Scalar) at `/docs`.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_scalar::{Scalar, Servable};

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
    modifiers(&BearerToken),
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

/// `GET /openapi.json` and `GET /docs`.
pub fn router() -> Router<AppState> {
    let document = ApiDoc::openapi();
    Router::new()
        .route(
            "/openapi.json",
            get({
                let document = document.clone();
                move || async move { Json(document) }
            }),
        )
        .merge(Scalar::with_url("/docs", document))
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
        assert_eq!(names, ["q", "type", "scope", "limit", "cursor"]);
    }
}
