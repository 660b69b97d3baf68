//! The only module that knows HTTP and JSON. Each resource module builds its own routes;
//! handlers turn requests into validated domain values, call the [`Service`], and turn
//! the result (or the error, through [`ApiError`]) into a response.

mod admin;
mod admission;
#[cfg(test)]
mod body_shapes;
mod channels;
mod error;
mod extract;
mod feeds;
mod messages;
mod openapi;
mod ops;
mod reads;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
pub use axum::Router;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Secret;
use crate::metrics::{Metrics, RouteTable};
use crate::postgres::Db;
use crate::redis::Redis;
use crate::service::Service;

pub use admission::{AdmissionSettings, AdmissionState};
pub use error::ApiError;
pub use extract::encode_json;

/// What every handler can reach, shared: a request clones one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

struct Shared {
    parts: Parts,
    /// The OpenAPI document, encoded once (`GET /openapi.json`).
    document: openapi::Document,
    /// Each route's request metrics, resolved once.
    requests: RouteTable,
    /// Admission control of `/v1` requests (in [`extract::finish`], before the token
    /// check: a refused request costs none).
    admission: admission::Admission,
}

impl std::ops::Deref for AppState {
    type Target = Parts;
    fn deref(&self) -> &Parts {
        &self.0.parts
    }
}

/// The parts of the service the handlers use.
pub struct Parts {
    pub service: Arc<Service>,
    pub db: Db,
    pub redis: Redis,
    pub metrics: Arc<Metrics>,
    pub token: Option<Secret>,
    /// Largest message content in bytes.
    pub max_content_bytes: usize,
    pub admission: AdmissionSettings,
}

/// The routes under `/v1` (behind the token, when one is set).
fn v1_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(channels::routes())
        .merge(messages::routes())
        .merge(reads::routes())
        .merge(feeds::routes())
        .merge(ops::admin_routes())
}

/// The OpenAPI document of a server with these settings (also served at
/// `GET /openapi.json`).
pub fn openapi_document(max_content_bytes: usize, token: bool) -> utoipa::openapi::OpenApi {
    let routes = v1_routes().merge(ops::open_routes()).into_openapi();
    let settings = openapi::Settings {
        max_content_bytes,
        token,
    };
    openapi::complete(routes, &settings)
}

/// The whole HTTP surface.
pub fn router(parts: Parts, max_body_bytes: usize) -> Router {
    let document = openapi_document(parts.max_content_bytes, parts.token.is_some());
    let routes = document.paths.paths.iter().flat_map(|(path, item)| {
        let methods = [
            ("GET", item.get.is_some()),
            ("POST", item.post.is_some()),
            ("PUT", item.put.is_some()),
            ("PATCH", item.patch.is_some()),
            ("DELETE", item.delete.is_some()),
        ];
        methods
            .into_iter()
            .filter(|(_, served)| *served)
            .map(move |(method, _)| (path.as_str(), method))
    });
    let requests = RouteTable::new(parts.metrics.clone(), routes);
    let state = AppState(Arc::new(Shared {
        document: openapi::Document::new(&document),
        requests,
        admission: admission::Admission::new(parts.admission),
        parts,
    }));
    let (v1, _) = v1_routes().split_for_parts();
    // Without a token nothing is checked, and the layer would cost every request.
    let v1 = match state.token {
        Some(_) => v1.route_layer(from_fn_with_state(state.clone(), extract::require_token)),
        None => v1,
    };
    let (open, _) = ops::open_routes().split_for_parts();
    Router::new()
        .merge(v1)
        .merge(open)
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(from_fn_with_state(state.clone(), extract::finish))
        .with_state(state)
}

/// Serves `router` on a bound listener until `stop` resolves, then lets requests in
/// flight finish (graceful shutdown).
pub async fn serve<L>(
    listener: L,
    router: Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await
}
