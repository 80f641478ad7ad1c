//! Who may do what on the dashboard's port: every route but the static page, its assets and
//! `/api/health` needs the viewer token (`dashboard.viewer_token`) when one is set, and anything
//! that changes state (every request but GET, HEAD and the read-only `POST /api/sql`) needs the
//! operator token (`dashboard.operator_token`), which also grants viewing. A token is presented
//! as `Authorization: Bearer TOKEN`, or as `?token=TOKEN` where a header cannot be set (the
//! browser's WebSocket, a link to a PNG). Tokens are compared in constant time; each refusal is
//! counted and answered 401 (no or a wrong token) or 403 (a viewer token where an operator token
//! is needed).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::DashboardConfig;

/// The tokens of the dashboard and how many requests they refused.
#[derive(Debug)]
pub(crate) struct Access {
    viewer: Option<String>,
    operator: Option<String>,
    refused: AtomicU64,
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Nothing,
    View,
    Operate,
}

impl Access {
    pub(crate) fn new(config: &DashboardConfig) -> Access {
        Access {
            viewer: config.viewer_token.clone(),
            operator: config.operator_token.clone(),
            refused: AtomicU64::new(0),
        }
    }

    /// Requests refused for a missing or insufficient token since start.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn is_operator(&self, presented: Option<&str>) -> bool {
        matches(self.operator.as_deref(), presented)
    }

    fn allows(&self, need: Need, presented: Option<&str>) -> bool {
        let may_view = self.viewer.is_none()
            || matches(self.viewer.as_deref(), presented)
            || self.is_operator(presented);
        match need {
            Need::Nothing => true,
            Need::View => may_view,
            Need::Operate if self.operator.is_some() => self.is_operator(presented),
            Need::Operate => may_view,
        }
    }

    /// The refusal of a request that needs `need` and presented `presented`.
    fn refusal(&self, need: Need, presented: Option<&str>) -> Response {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let may_view = self.allows(Need::View, presented);
        if need == Need::Operate && may_view && presented.is_some() {
            return (
                StatusCode::FORBIDDEN,
                "acknowledging and clearing alarms (any request that changes state) needs the \
                 operator token (dashboard.operator_token), not the viewer token",
            )
                .into_response();
        }
        let (key, what) = match need {
            Need::Operate if may_view => ("dashboard.operator_token", "changing state"),
            _ => ("dashboard.viewer_token", "viewing this dashboard"),
        };
        let problem = if presented.is_some() {
            "the token given is not valid"
        } else {
            "no token was given"
        };
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"polis\"")],
            format!(
                "{what} needs a token ({key}) and {problem}: send `Authorization: Bearer TOKEN` \
                 or add `?token=TOKEN` to the URL"
            ),
        )
            .into_response()
    }
}

/// The middleware: passes a request on when its token allows it, else refuses it.
pub(crate) async fn check(
    State(access): State<Arc<Access>>,
    request: Request,
    next: Next,
) -> Response {
    let need = need_of(request.method(), request.uri().path());
    let presented = presented_token(&request);
    if access.allows(need, presented.as_deref()) {
        next.run(request).await
    } else {
        access.refusal(need, presented.as_deref())
    }
}

fn need_of(method: &Method, path: &str) -> Need {
    if path == "/" || path.starts_with("/assets/") || path == "/api/health" {
        Need::Nothing
    } else if method == Method::GET || method == Method::HEAD || path == "/api/sql" {
        Need::View
    } else {
        Need::Operate
    }
}

/// The token of a request: its bearer credentials, else its `token` query parameter.
fn presented_token(request: &Request) -> Option<String> {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| token.trim().to_string());
    bearer.or_else(|| {
        request
            .uri()
            .query()?
            .split('&')
            .find_map(|pair| pair.strip_prefix("token=").map(|token| token.to_string()))
    })
}

/// Whether `presented` is the token `expected`, compared in time independent of where they
/// differ; an unset token matches nothing.
fn matches(expected: Option<&str>, presented: Option<&str>) -> bool {
    let (Some(expected), Some(presented)) = (expected, presented) else {
        return false;
    };
    let (expected, presented) = (expected.as_bytes(), presented.as_bytes());
    if expected.len() != presented.len() {
        return false;
    }
    let difference = expected
        .iter()
        .zip(presented)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIEWER: &str = "viewer-0123456789abcdef";
    const OPERATOR: &str = "operator-0123456789abcdef";

    fn access(viewer: Option<&str>, operator: Option<&str>) -> Access {
        Access::new(&DashboardConfig {
            viewer_token: viewer.map(str::to_string),
            operator_token: operator.map(str::to_string),
            ..DashboardConfig::default()
        })
    }

    #[test]
    fn requests_need_what_they_can_do() {
        assert_eq!(need_of(&Method::GET, "/"), Need::Nothing);
        assert_eq!(need_of(&Method::GET, "/assets/app.js"), Need::Nothing);
        assert_eq!(need_of(&Method::GET, "/api/health"), Need::Nothing);
        assert_eq!(need_of(&Method::GET, "/ws"), Need::View);
        assert_eq!(need_of(&Method::GET, "/metrics"), Need::View);
        assert_eq!(need_of(&Method::POST, "/api/sql"), Need::View);
        assert_eq!(need_of(&Method::POST, "/api/alerts/ack"), Need::Operate);
        assert_eq!(need_of(&Method::DELETE, "/api/alerts"), Need::Operate);
    }

    #[test]
    fn each_token_grants_its_level() {
        let both = access(Some(VIEWER), Some(OPERATOR));
        for (need, token, allowed) in [
            (Need::View, None, false),
            (Need::View, Some("wrong-0123456789abcdef"), false),
            (Need::View, Some(VIEWER), true),
            (Need::View, Some(OPERATOR), true),
            (Need::Operate, Some(VIEWER), false),
            (Need::Operate, Some(OPERATOR), true),
            (Need::Nothing, None, true),
        ] {
            assert_eq!(both.allows(need, token), allowed, "{need:?} with {token:?}");
        }
    }

    #[test]
    fn an_unset_token_leaves_its_level_open() {
        let open = access(None, None);
        assert!(open.allows(Need::Operate, None));
        let viewer_only = access(Some(VIEWER), None);
        assert!(!viewer_only.allows(Need::Operate, None));
        assert!(viewer_only.allows(Need::Operate, Some(VIEWER)));
        let operator_only = access(None, Some(OPERATOR));
        assert!(operator_only.allows(Need::View, None));
        assert!(!operator_only.allows(Need::Operate, None));
    }

    #[test]
    fn refusals_are_counted_and_say_which_token_is_needed() {
        let both = access(Some(VIEWER), Some(OPERATOR));
        assert_eq!(
            both.refusal(Need::View, None).status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            both.refusal(Need::Operate, Some(VIEWER)).status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(both.refused(), 2);
    }
}
