//! API errors: JSON `{"error": {"code", "message"}}` with a stable code;
//! caller mistakes are 4xx, our failures 5xx. Never key material.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::jwt::JwtError;
use crate::view::ViewError;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What was wrong, naming the parameter or resource.
    pub message: String,
    /// The request's body was left unread: the connection ends with this
    /// answer, and says so.
    pub closes: bool,
}

impl ApiError {
    /// An error with `status` and `code`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), closes: false }
    }

    /// This error, answered with `Connection: close`.
    pub fn closing(mut self) -> Self {
        self.closes = true;
        self
    }

    /// 400 naming a bad parameter.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 503: no bundle yet.
    pub fn not_ready() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "no valid bundle has been received yet")
    }

    /// The response.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = super::json_response(self.status, &body);
        if self.closes {
            let close = hyper::header::HeaderValue::from_static("close");
            response.headers_mut().insert(hyper::header::CONNECTION, close);
        }
        response
    }
}

impl From<ViewError> for ApiError {
    fn from(error: ViewError) -> Self {
        let (status, code) = match &error {
            ViewError::UnknownKeyring(_) => (StatusCode::NOT_FOUND, "keyring_not_found"),
            ViewError::UnknownVersion { .. } => (StatusCode::NOT_FOUND, "version_not_found"),
            ViewError::Expired { .. } => (StatusCode::NOT_FOUND, "version_expired"),
            ViewError::Unsupported(_) => (StatusCode::BAD_REQUEST, "format_unsupported"),
        };
        Self::new(status, code, error.to_string())
    }
}

impl From<JwtError> for ApiError {
    fn from(error: JwtError) -> Self {
        let status = match &error {
            JwtError::NotSigning(_)
            | JwtError::VerifyOnly
            | JwtError::TooLong { .. }
            | JwtError::NotNumeric(_)
            | JwtError::Lifetime { .. }
            | JwtError::TooLarge => StatusCode::BAD_REQUEST,
            JwtError::BoundPassed(_) => StatusCode::SERVICE_UNAVAILABLE,
            JwtError::NoSigningKey => StatusCode::CONFLICT,
            JwtError::SignFailed => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNAUTHORIZED,
        };
        Self::new(status, error.code(), error.to_string())
    }
}
