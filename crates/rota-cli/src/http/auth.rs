//! The bearer token of mutating calls.
//!
//! No token configured: every mutating call is refused with 403 (the API is
//! read-only, never open). A missing or wrong token: 401. Tokens are compared
//! in constant time (only the length of the configured token can leak).

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

/// Lets a request through only with `Authorization: Bearer <the token>`.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    match check(state.token.as_deref(), req.headers().get(header::AUTHORIZATION)) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn check(configured: Option<&str>, given: Option<&header::HeaderValue>) -> Result<(), ApiError> {
    let Some(expected) = configured.filter(|t| !t.is_empty()) else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "mutating calls are disabled: no API token is configured \
             (set `token` in the [http] section of the config, or ROTA_TOKEN)",
        ));
    };
    let Some(given) = given else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token: send `Authorization: Bearer <token>`",
        ));
    };
    let given = given.as_bytes();
    let token = match given.split_first_chunk::<7>() {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest.trim_ascii(),
        _ => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "the Authorization header must be `Bearer <token>`",
            ))
        }
    };
    if constant_time_eq(token, expected.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid bearer token"))
    }
}

/// Compares in time that depends only on the length of `expected`.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, &e) in expected.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(!e);
        diff |= std::hint::black_box(g ^ e);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret1", b"secret"));
        assert!(!constant_time_eq(b"secre", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
    }

    #[test]
    fn checks() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(check(None, Some(&h("Bearer x"))).unwrap_err().status, StatusCode::FORBIDDEN);
        assert_eq!(check(Some(""), Some(&h("Bearer "))).unwrap_err().status, StatusCode::FORBIDDEN);
        assert_eq!(check(Some("t"), None).unwrap_err().status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            check(Some("t"), Some(&h("Basic dA=="))).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            check(Some("t"), Some(&h("Bearer u"))).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert!(check(Some("t"), Some(&h("Bearer t"))).is_ok());
        assert!(check(Some("t"), Some(&h("bearer  t"))).is_ok());
    }
}
