//! Admin endpoints under `/sandbox/`: read and reset what the sandbox received.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::AppState;
use super::record::{ReceivedRequest, Stats};

/// `GET /sandbox/requests`: the most recent requests, up to 100 000, oldest first.
pub(super) async fn requests(State(state): State<Arc<AppState>>) -> Json<Vec<ReceivedRequest>> {
    Json(state.log.received())
}

/// `GET /sandbox/stats`: counts per provider and reply status.
pub(super) async fn stats(State(state): State<Arc<AppState>>) -> Json<Stats> {
    Json(state.log.stats())
}

/// `POST /sandbox/reset`: forgets received requests and counts. Issued access tokens stay
/// valid, so a running Herald keeps working across a reset.
pub(super) async fn reset(State(state): State<Arc<AppState>>) -> StatusCode {
    state.log.clear();
    tracing::info!("sandbox log reset");
    StatusCode::NO_CONTENT
}
