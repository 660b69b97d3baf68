//! The only module that knows HTTP and JSON. Each resource module builds its own routes;
//! handlers turn requests into validated domain values, call the [`Service`], and turn
//! the result (or the error, through [`ApiError`]) into a response.

#[cfg(test)]
mod body_shapes;
mod channels;
mod error;
mod extract;
mod feeds;
mod messages;
mod ops;
mod reads;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn_with_state, map_response};
use axum::Router;

use crate::config::Secret;
use crate::metrics::Metrics;
use crate::postgres::Db;
use crate::redis::Redis;
use crate::service::Service;

pub use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    pub db: Db,
    pub redis: Redis,
    pub metrics: Arc<Metrics>,
    pub token: Option<Secret>,
    /// Largest message content in bytes.
    pub max_content_bytes: usize,
}

/// The whole HTTP surface.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let v1 = Router::new()
        .merge(channels::routes())
        .merge(messages::routes())
        .merge(reads::routes())
        .merge(feeds::routes())
        .merge(ops::admin_routes())
        .route_layer(from_fn_with_state(state.clone(), extract::require_token));
    Router::new()
        .merge(v1)
        .merge(ops::open_routes())
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(map_response(error::json_error_bodies))
        .layer(from_fn_with_state(state.clone(), extract::record_metrics))
        .with_state(state)
}
