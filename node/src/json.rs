//! JSON request bodies with errors a client can act on: 415 for a wrong content type,
//! 413 past the body limit, 400 for text that is not JSON (invalid UTF-8 included), and
//! 422 naming the field for JSON of the wrong shape (unknown fields, wrong types,
//! missing fields).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, FieldError};

/// A JSON body parsed into `T`.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = request.headers().clone();
        let bytes = read_body(request, state).await?;
        parse_json(&headers, &bytes).map(ApiJson)
    }
}

/// Reads a whole body, answering 413 past the configured limit.
pub async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge {
                    limit: crate::routes::BODY_LIMIT_BYTES,
                }
            } else {
                ApiError::BadRequest(format!("could not read the body: {rejection}"))
            }
        })
}

/// Parses a JSON body after checking its content type.
pub fn parse_json<T: DeserializeOwned>(headers: &HeaderMap, bytes: &[u8]) -> Result<T, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
    if !is_json {
        return Err(ApiError::UnsupportedMediaType(
            "expected Content-Type: application/json".into(),
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() {
            let field = if path == "." { "body".to_owned() } else { path };
            ApiError::Validation(vec![FieldError {
                field,
                message: data_error_message(&inner),
            }])
        } else {
            ApiError::BadRequest(format!("malformed JSON: {inner}"))
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// serde's message without the "at line L column C" suffix, which names no field.
fn data_error_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Login {
        login: String,
        password: String,
    }

    fn json_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        headers
    }

    fn problem(bytes: &[u8]) -> ApiError {
        parse_json::<Login>(&json_headers(), bytes).unwrap_err()
    }

    #[test]
    fn good_json_parses() {
        assert!(parse_json::<Login>(&json_headers(), br#"{"login":"a","password":"b"}"#).is_ok());
    }

    #[test]
    fn malformed_json_and_invalid_utf8_are_bad_requests() {
        assert!(matches!(problem(b"{\"login\":"), ApiError::BadRequest(_)));
        assert!(matches!(
            problem(b"{\"login\":\"\xff\xfe\",\"password\":\"x\"}"),
            ApiError::BadRequest(_)
        ));
        assert!(matches!(
            problem(br#"{"login":"a","password":"b"} trailing"#),
            ApiError::BadRequest(_)
        ));
    }

    #[test]
    fn wrong_shapes_name_the_field() {
        let ApiError::Validation(errors) = problem(br#"{"login":42,"password":"b"}"#) else {
            panic!()
        };
        assert_eq!(errors[0].field, "login");
        let ApiError::Validation(errors) = problem(br#"{"login":"a","password":"b","admin":true}"#)
        else {
            panic!()
        };
        assert!(errors[0].message.contains("admin"), "{errors:?}");
        let ApiError::Validation(errors) = problem(br#"{"login":"a"}"#) else {
            panic!()
        };
        assert!(errors[0].message.contains("password"), "{errors:?}");
    }

    #[test]
    fn other_content_types_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let err = parse_json::<Login>(&headers, br#"{"login":"a","password":"b"}"#).unwrap_err();
        assert!(matches!(err, ApiError::UnsupportedMediaType(_)));
    }
}
