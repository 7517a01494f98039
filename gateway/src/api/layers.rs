//! Cross-cutting HTTP behaviour: request ids, tracing spans, per-route request counts, the
//! body-size limit, and JSON answers for unknown routes and methods.

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{Method, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use super::error::ApiError;

/// Wraps a finished router. Outermost first: the request id is set before the span opens, so
/// the span (and every log line in it) carries it, and it is copied onto the response.
pub fn apply(router: Router, max_body_bytes: usize) -> Router {
    let trace = TraceLayer::new_for_http()
        .make_span_with(|req: &Request<Body>| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
        })
        // 5xx includes the expected 503s of readiness probes while the model loads: a warning,
        // not an error page for whoever watches the logs.
        .on_failure(DefaultOnFailure::new().level(tracing::Level::WARN));
    router
        .layer(middleware::from_fn(count_requests))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(trace)
                .layer(PropagateRequestIdLayer::x_request_id()),
        )
}

/// Counts requests by route template (not raw path, which would let clients mint unbounded
/// label values) and status. Runs after routing, so the matched route is known.
async fn count_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(crate::metrics::HTTP_REQUESTS, "route" => route, "status" => status)
        .increment(1);
    response
}

pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::route_not_found(method.as_str(), uri.path())
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(method.as_str(), uri.path())
}
