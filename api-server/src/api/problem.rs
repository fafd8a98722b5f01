//! Errors as `application/problem+json` (RFC 9457), mapped in exactly one place.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object};

/// An error, as RFC 9457 describes it.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Problem", example)]
pub struct Problem {
    /// A URI reference naming the kind of problem (`about:blank`: the title says it all).
    #[oai(rename = "type")]
    pub kind: String,
    /// The HTTP status phrase.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong; for bad input it starts with the field's name (`name: …`).
    pub detail: String,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }
}

impl Example for Problem {
    fn example() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "price_cents: must be between 0 and 1000000000000",
        )
    }
}

/// Every error an operation can answer with.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// Bad input: the detail names the field.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// Missing or wrong bearer token.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>),
    /// No product (or job) with this id.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// Another product has this sku.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Problem>),
    /// `If-Match` names another version; nothing was changed.
    #[oai(status = 412, content_type = "application/problem+json")]
    PreconditionFailed(Json<Problem>),
    /// The body is larger than 1 MiB.
    #[oai(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Json<Problem>),
    /// The body is missing or is not `application/json`.
    #[oai(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Json<Problem>),
    /// The server failed; the cause is in its log.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
}

impl ApiError {
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::BadRequest(Json(Problem::new(StatusCode::BAD_REQUEST, detail)))
    }

    pub fn internal() -> Self {
        Self::Internal(Json(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the server log",
        )))
    }
}

impl From<product_service::ValidationError> for ApiError {
    fn from(error: product_service::ValidationError) -> Self {
        Self::bad_request(error.to_string())
    }
}

/// The one mapping from domain errors to HTTP.
impl From<product_service::Error> for ApiError {
    fn from(error: product_service::Error) -> Self {
        use product_service::Error as E;
        let problem = |status| Json(Problem::new(status, error.to_string()));
        match &error {
            E::NotFound { .. } => Self::NotFound(problem(StatusCode::NOT_FOUND)),
            E::DuplicateSku(_) => Self::Conflict(problem(StatusCode::CONFLICT)),
            E::VersionMismatch { .. } => {
                Self::PreconditionFailed(problem(StatusCode::PRECONDITION_FAILED))
            }
            E::Invalid(_) => Self::BadRequest(problem(StatusCode::BAD_REQUEST)),
            E::Database(_) | E::Cache(_) | E::JobLost | E::MissingSessionSettings(_) => {
                tracing::error!(error = %error_chain(&error), "request failed");
                Self::internal()
            }
        }
    }
}

/// A response body that could not be serialized: a bug, not bad input.
impl From<serde_json::Error> for ApiError {
    fn from(error: serde_json::Error) -> Self {
        tracing::error!(%error, "response body cannot be serialized");
        Self::internal()
    }
}

/// Rewrites poem-openapi's parse errors so the detail starts with the field's name.
fn input_error_detail(error: &poem::Error) -> Option<String> {
    use poem_openapi::error::{ParseParamError, ParsePathError, ParseRequestPayloadError};
    if let Some(e) = error.downcast_ref::<ParsePathError>() {
        // Every path parameter of this API is a product id.
        return Some(format!("id: must be a positive integer ({})", e.reason));
    }
    if let Some(e) = error.downcast_ref::<ParseParamError>() {
        return Some(format!("{}: {}", e.name, e.reason));
    }
    let e = error.downcast_ref::<ParseRequestPayloadError>()?;
    Some(payload_detail(&e.reason))
}

/// `failed to parse "X": field `price_cents` verification failed. …` becomes
/// `price_cents: verification failed. …`; errors without a field name the body.
fn payload_detail(reason: &str) -> String {
    let reason = match reason.find(" (occurred while parsing") {
        Some(end) => &reason[..end],
        None => reason,
    };
    let field = |marker: &str| {
        let start = reason.find(marker)? + marker.len();
        let len = reason[start..].find('`')?;
        Some((&reason[start..start + len], &reason[start + len + 1..]))
    };
    if let Some((name, _)) = field("unknown field `") {
        return format!("{name}: unknown field");
    }
    if let Some((name, rest)) = field("field `") {
        return format!("{name}: {}", rest.trim_start());
    }
    format!("body: {reason}")
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Turns any error that escaped an operation (parse errors, auth, unknown routes, body
/// limit) into a problem response. Responses built from [`ApiError`] pass unchanged.
pub async fn problem_response(error: poem::Error) -> Response {
    let status = error.status();
    let is_auth_error = error.is::<poem_openapi::error::AuthorizationError>();
    let message = input_error_detail(&error).unwrap_or_else(|| error.to_string());
    let response = error.into_response();
    if response
        .headers()
        .get(poem::http::header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/problem+json"))
    {
        return response;
    }
    let detail = if is_auth_error {
        "Authorization: a valid bearer token is required".to_owned()
    } else if status == StatusCode::NOT_FOUND {
        "no such resource".to_owned()
    } else if status.is_server_error() {
        tracing::error!(error = %message, "request failed");
        "internal error; see the server log".to_owned()
    } else {
        message
    };
    let mut response = Json(Problem::new(status, detail)).into_response();
    response.set_status(status);
    response.headers_mut().insert(
        poem::http::header::CONTENT_TYPE,
        poem::http::HeaderValue::from_static("application/problem+json"),
    );
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            poem::http::header::WWW_AUTHENTICATE,
            poem::http::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::payload_detail;

    #[test]
    fn payload_errors_name_the_field() {
        assert_eq!(
            payload_detail("failed to parse \"ProductPatch\": unknown field `bogus`."),
            "bogus: unknown field"
        );
        assert_eq!(
            payload_detail(
                "failed to parse \"ProductInput\": field `stock` verification failed. maximum(1000000000, exclusive: false)"
            ),
            "stock: verification failed. maximum(1000000000, exclusive: false)"
        );
        assert_eq!(
            payload_detail("EOF while parsing an object at line 1 column 11"),
            "body: EOF while parsing an object at line 1 column 11"
        );
    }
}
