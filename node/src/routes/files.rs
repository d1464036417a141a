//! `/v1/files`: uploads (the raw body with `?name=`, or a multipart `file` field) streamed into the object store (hashed and measured on the way,
//! never held whole in memory), metadata on the owner's shard, downloads streamed back
//! with `ETag` and `Content-Length`. Files are private to their owner.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::accounts::store::StoreError;
use crate::auth::extract::Authenticated;
use crate::consistency::ReadConsistency;
use crate::error::Problem;
use crate::error::{ApiError, FieldError};
use crate::items::files::{FileMeta, FileStore, NewFile};
use crate::items::ids::ItemId;
use crate::query::ApiQuery;
use crate::routes::posts::{ListParams, page_params};
use crate::routes::views::Page;
use crate::state::AppState;

/// Longest file name, in characters.
const NAME_MAX_CHARS: usize = 255;

/// Upload parts in flight to the object store at once.
const UPLOAD_CONCURRENCY: usize = 4;

/// The file routes.
pub fn router() -> Router<AppState> {
    Router::new()
        // Uploads stream and stop at `max_upload_bytes` themselves (413), multipart
        // included: the JSON body limit does not apply to them.
        .route(
            "/v1/files",
            get(list).post(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/files/{id}", get(metadata).delete(remove))
        .route("/v1/files/{id}/content", get(download))
}

/// `POST /v1/files` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UploadParams {
    /// The file's name: 1 to 255 characters, no control characters or path separators
    /// (with a multipart body, the `file` part's file name when absent).
    #[param(
        required = true,
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f/\\\\]+$"
    )]
    pub name: Option<String>,
}

fn field_error(field: &str, message: &str) -> ApiError {
    ApiError::Validation(vec![FieldError {
        field: field.into(),
        message: message.into(),
    }])
}

/// A file name is metadata only (bytes are stored under ids), but it comes back in
/// headers and listings: 1..=255 characters, no control characters, no path separators.
fn check_name(name: Option<String>) -> Result<String, ApiError> {
    let name = name.ok_or_else(|| field_error("name", "is required (?name=)"))?;
    let chars = name.chars().count();
    if !(1..=NAME_MAX_CHARS).contains(&chars) {
        return Err(field_error("name", "must be 1 to 255 characters"));
    }
    if name
        .chars()
        .any(|c| c.is_control() || c == '/' || c == '\\')
        || name == "."
        || name == ".."
    {
        return Err(field_error(
            "name",
            "must not contain control characters or path separators",
        ));
    }
    Ok(name)
}

/// The upload's media type: `type/subtype` (parameters allowed), default
/// `application/octet-stream`.
fn check_media_type(value: Option<&str>) -> Result<String, ApiError> {
    let Some(text) = value else {
        return Ok("application/octet-stream".into());
    };
    let essence = text.split(';').next().unwrap_or("").trim();
    let valid = text.len() <= 255
        && essence.split_once('/').is_some_and(|(t, s)| {
            let token = |p: &str| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
            };
            token(t) && token(s)
        });
    if !valid {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type {text:?} is not a media type"
        )));
    }
    Ok(text.to_owned())
}

fn unavailable(e: object_store::Error) -> ApiError {
    tracing::warn!(error = %e, "object store failed");
    ApiError::Unavailable {
        detail: "the file store is unavailable".into(),
        retry_after_secs: 1,
    }
}

#[utoipa::path(post, path = "/v1/files", tag = "files", security(("bearer" = [])), params(UploadParams), request_body(content = Vec<u8>, description = "The bytes (any media type), or multipart/form-data with a `file` part", content_type = "application/octet-stream"), responses((status = 201, description = "Stored", body = FileMeta), (status = 413, description = "Past the size limit", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid name or media type", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn upload(
    State(state): State<AppState>,
    auth: Authenticated,
    ReadConsistency(caller): ReadConsistency,
    ApiQuery(params): ApiQuery<UploadParams>,
    request: Request,
) -> Result<Response, ApiError> {
    let limit = state.config().files.max_upload_bytes;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if content_type.as_deref().is_some_and(is_multipart) {
        let mut form = Multipart::from_request(request, &state)
            .await
            .map_err(|e| {
                ApiError::BadRequest(format!("malformed multipart body: {}", e.body_text()))
            })?;
        let idle = Duration::from_millis(state.config().files.upload_idle_timeout_ms);
        while let Some(field) = tokio::time::timeout(idle, form.next_field())
            .await
            .map_err(|_| ApiError::BodyStalled(idle.as_millis() as u64))?
            .map_err(|e| ApiError::BadRequest(format!("malformed multipart body: {e}")))?
        {
            if field.name() != Some("file") {
                continue;
            }
            let name = check_name(params.name.or_else(|| field.file_name().map(str::to_owned)))?;
            let media_type = check_media_type(field.content_type())?;
            let upload = Upload {
                name,
                content_type: media_type,
                limit,
            };
            return store_upload(&state, &auth, &caller, upload, field).await;
        }
        return Err(field_error(
            "file",
            "the multipart body has no `file` field",
        ));
    }
    let name = check_name(params.name)?;
    let media_type = check_media_type(content_type.as_deref())?;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge {
            limit: limit as usize,
        });
    }
    let upload = Upload {
        name,
        content_type: media_type,
        limit,
    };
    store_upload(
        &state,
        &auth,
        &caller,
        upload,
        request.into_body().into_data_stream(),
    )
    .await
}

/// Files up to this size whose type is text are searchable by their content.
pub const SEARCHABLE_TEXT_MAX_BYTES: u64 = 64 * 1024;

/// The text of a small upload, when its media type says it is text and its bytes are
/// UTF-8 without NULs (anything else is searchable by name only).
fn searchable_text(media_type: &str, bytes: Vec<u8>) -> Option<String> {
    let essence = media_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let textual = essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/json"
                | "application/xml"
                | "application/yaml"
                | "application/x-yaml"
                | "application/toml"
                | "application/javascript"
        );
    if !textual {
        return None;
    }
    String::from_utf8(bytes)
        .ok()
        .filter(|text| !text.contains('\0') && !text.trim().is_empty())
}

/// What an upload will be recorded as.
struct Upload {
    name: String,
    content_type: String,
    limit: u64,
}

fn is_multipart(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("multipart/form-data"))
}

/// Streams the bytes into the object store (hashing and counting them, aborting past the
/// limit), then records the metadata; the bytes are removed if that fails.
async fn store_upload<E: std::fmt::Display>(
    state: &AppState,
    auth: &Authenticated,
    caller: &crate::consistency::ConsistencyToken,
    upload: Upload,
    stream: impl futures::Stream<Item = Result<axum::body::Bytes, E>>,
) -> Result<Response, ApiError> {
    let id = ItemId::generate(&auth.user);
    let key = ObjectPath::from(format!("files/{}/{id}", auth.user));
    let store = state.objects();
    let writer = WriteMultipart::new(store.put_multipart(&key).await.map_err(unavailable)?);
    let mut pending = PendingObject {
        store: Arc::clone(store),
        key: key.clone(),
        writer: Some(writer),
        kept: false,
    };
    let idle = Duration::from_millis(state.config().files.upload_idle_timeout_ms);
    let (mut hasher, mut size) = (Sha256::new(), 0u64);
    // The first bytes, kept while the file is small enough to be searched by content.
    let mut head: Option<Vec<u8>> = Some(Vec::new());
    let mut stream = std::pin::pin!(stream);
    loop {
        let next = tokio::time::timeout(idle, stream.next())
            .await
            .map_err(|_| ApiError::BodyStalled(idle.as_millis() as u64))?;
        let Some(chunk) = next else { break };
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("the upload was interrupted: {e}")))?;
        size += chunk.len() as u64;
        if size > upload.limit {
            return Err(ApiError::PayloadTooLarge {
                limit: upload.limit as usize,
            });
        }
        hasher.update(&chunk);
        head = head
            .filter(|_| size <= SEARCHABLE_TEXT_MAX_BYTES)
            .map(|mut kept| {
                kept.extend_from_slice(&chunk);
                kept
            });
        let writer = pending.writer();
        writer
            .wait_for_capacity(UPLOAD_CONCURRENCY)
            .await
            .map_err(unavailable)?;
        writer.put(chunk);
    }
    pending.finish().await.map_err(unavailable)?;
    let text = head.and_then(|bytes| searchable_text(&upload.content_type, bytes));
    let file = NewFile {
        id,
        name: upload.name,
        text,
        content_type: upload.content_type,
        size: size as i64,
        sha256: hex::encode(hasher.finalize()),
        object_key: key.to_string(),
    };
    match FileStore::new(state.topology())
        .create(&auth.user, file)
        .await
    {
        Ok(committed) => {
            pending.keep();
            metrics::counter!("strata_file_upload_bytes_total").increment(size);
            let response = (StatusCode::CREATED, Json(committed.value)).into_response();
            Ok(state.stamp(response, caller, &committed.token))
        }
        Err(e) => {
            // The metadata did not land, and `pending` removes the bytes as it goes;
            // unless the commit's fate is unknown: then the bytes stay, in case it did.
            if matches!(e, StoreError::CommitUncertain(_)) {
                pending.keep();
            } else {
                pending.discard().await;
            }
            Err(e.into())
        }
    }
}

async fn owned(
    state: &AppState,
    auth: &Authenticated,
    id: &str,
    caller: &crate::consistency::ConsistencyToken,
) -> Result<FileMeta, ApiError> {
    let not_found = || ApiError::NotFound("file".into());
    let id = ItemId::owned_by(id, &auth.user).ok_or_else(not_found)?;
    FileStore::new(state.topology())
        .get(&auth.user, &id, caller)
        .await?
        .ok_or_else(not_found)
}

#[utoipa::path(get, path = "/v1/files/{id}", tag = "files", security(("bearer" = [])), params(("id" = String, Path, description = "The item id")), responses((status = 200, description = "The caller's file", body = FileMeta), (status = 404, description = "No such file of the caller", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn metadata(
    State(state): State<AppState>,
    auth: Authenticated,
    ReadConsistency(caller): ReadConsistency,
    Path(id): Path<String>,
) -> Result<Json<FileMeta>, ApiError> {
    Ok(Json(owned(&state, &auth, &id, &caller).await?))
}

#[utoipa::path(get, path = "/v1/files/{id}/content", tag = "files", security(("bearer" = [])), params(("id" = String, Path, description = "The item id")), responses((status = 200, description = "The bytes, with the Content-Type they were uploaded with, ETag and Content-Length", body = Vec<u8>, content_type = "*/*"), (status = 304, description = "Not modified (If-None-Match)"), (status = 404, description = "No such file of the caller", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn download(
    State(state): State<AppState>,
    auth: Authenticated,
    ReadConsistency(caller): ReadConsistency,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let meta = owned(&state, &auth, &id, &caller).await?;
    let etag = format!("\"{}\"", meta.sha256);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response.headers_mut().insert(
            header::ETAG,
            HeaderValue::from_str(&etag).expect("hex etag"),
        );
        return Ok(response);
    }
    let object = state
        .objects()
        .get(&ObjectPath::from(meta.object_key.as_str()))
        .await
        .map_err(|e| match e {
            // The metadata came from a replica that has not yet replayed a delete whose
            // bytes are already gone: the file is deleted, not the store down.
            object_store::Error::NotFound { .. } => ApiError::NotFound("file".into()),
            other => unavailable(other),
        })?;
    let body = Body::from_stream(object.into_stream());
    let mut response = body.into_response();
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&meta.content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size as u64));
    out.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("hex etag"),
    );
    out.insert(header::CONTENT_DISPOSITION, attachment(&meta.name));
    out.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    Ok(response)
}

/// `attachment; filename="<ascii fallback>"; filename*=UTF-8''<percent-encoded>` (RFC 6266).
fn attachment(name: &str) -> HeaderValue {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or(HeaderValue::from_static("attachment"))
}

#[utoipa::path(delete, path = "/v1/files/{id}", tag = "files", security(("bearer" = [])), params(("id" = String, Path, description = "The item id")), responses((status = 204, description = "Deleted"), (status = 404, description = "No such file of the caller", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    auth: Authenticated,
    ReadConsistency(caller): ReadConsistency,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound("file".into());
    let id = ItemId::owned_by(&id, &auth.user).ok_or_else(not_found)?;
    let committed = FileStore::new(state.topology())
        .delete(&auth.user, &id)
        .await?
        .ok_or_else(not_found)?;
    if let Err(e) = state
        .objects()
        .delete(&ObjectPath::from(committed.value.object_key.as_str()))
        .await
    {
        tracing::warn!(file_id = %id, error = %e, "metadata deleted but the bytes were not");
    }
    Ok(state.stamp(
        StatusCode::NO_CONTENT.into_response(),
        &caller,
        &committed.token,
    ))
}

#[utoipa::path(get, path = "/v1/files", tag = "files", security(("bearer" = [])), params(ListParams), responses((status = 200, description = "The caller's files, newest first", body = Page<FileMeta>), (status = 422, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    auth: Authenticated,
    ReadConsistency(caller): ReadConsistency,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<Page<FileMeta>>, ApiError> {
    let (limit, cursor) = page_params(&params, state.cursors())?;
    let (items, next) = FileStore::new(state.topology())
        .list(&auth.user, cursor.as_ref(), limit, &caller)
        .await?;
    Ok(Json(Page {
        items,
        next_cursor: next.map(|c| state.cursors().encode(&c)),
    }))
}

/// An upload's bytes until its metadata has committed. Dropped without [`keep`] (an
/// error, a stalled client, a client gone, the node stopping), it removes them: a
/// multipart upload in progress is aborted, a finished object deleted. The removal is
/// spawned, since a drop cannot wait.
///
/// [`keep`]: PendingObject::keep
struct PendingObject {
    store: Arc<dyn ObjectStore>,
    key: ObjectPath,
    writer: Option<WriteMultipart>,
    kept: bool,
}

impl PendingObject {
    fn writer(&mut self) -> &mut WriteMultipart {
        self.writer
            .as_mut()
            .expect("the writer is there until the upload finishes")
    }

    /// Completes the object; from now on a drop deletes it.
    async fn finish(&mut self) -> Result<(), object_store::Error> {
        let writer = self.writer.take().expect("an upload finishes once");
        writer.finish().await.map(|_| ())
    }

    /// The metadata committed: the bytes stay.
    fn keep(&mut self) {
        self.kept = true;
    }

    /// Removes the bytes now, before the answer goes out (a drop can only spawn the
    /// removal, which a client could outrun).
    async fn discard(mut self) {
        self.kept = true;
        let removed = match self.writer.take() {
            Some(writer) => writer.abort().await,
            None => self.store.delete(&self.key).await,
        };
        match removed {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                tracing::error!(key = %self.key, error = %e, "could not remove the bytes of a failed upload");
            }
        }
    }
}

impl Drop for PendingObject {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let (store, key, writer) = (
            Arc::clone(&self.store),
            self.key.clone(),
            self.writer.take(),
        );
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let removed = match writer {
                Some(writer) => writer.abort().await,
                None => store.delete(&key).await,
            };
            match removed {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    tracing::error!(key = %key, error = %e, "could not remove the bytes of an unfinished upload");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_utf8_text_is_searchable_by_content() {
        let text = |t: &str, b: &[u8]| searchable_text(t, b.to_vec());
        assert_eq!(
            text("text/plain; charset=utf-8", b"meeting notes"),
            Some("meeting notes".into())
        );
        assert_eq!(
            text("application/json", b"{\"a\": 1}"),
            Some("{\"a\": 1}".into())
        );
        assert_eq!(text("application/vnd.api+json", b"[]"), Some("[]".into()));
        assert_eq!(text("application/octet-stream", b"meeting notes"), None);
        assert_eq!(text("image/png", b"meeting notes"), None);
        assert_eq!(text("text/plain", b"\xff\xfe not utf-8"), None);
        assert_eq!(text("text/plain", b"nul\0inside"), None);
        assert_eq!(text("text/plain", b"   "), None);
    }

    #[test]
    fn hostile_names_are_refused() {
        for bad in [
            "",
            "../../etc/passwd",
            "a/b",
            "a\\b",
            "nul\u{0}byte",
            "..",
            "line\nbreak",
        ] {
            assert!(check_name(Some(bad.into())).is_err(), "{bad:?}");
        }
        assert!(check_name(Some("x".repeat(10_000))).is_err());
        assert_eq!(
            check_name(Some("report (final) é.pdf".into())).unwrap(),
            "report (final) é.pdf"
        );
    }

    #[test]
    fn download_names_are_quoted_safely() {
        let value = attachment("naïve \"quote\".txt");
        let text = value.to_str().unwrap();
        assert!(
            text.starts_with("attachment; filename=\"na_ve _quote_.txt\""),
            "{text}"
        );
        assert!(
            text.contains("filename*=UTF-8''na%C3%AFve%20%22quote%22.txt"),
            "{text}"
        );
    }
}
