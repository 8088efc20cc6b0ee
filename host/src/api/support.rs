//! `/api/v1/support/...`: remote-support requests and the person's
//! approvals (#16). The password appears only in the answer to the request
//! that made it.

use super::{Caller, Shared, refuse};
use crate::support::{Permission, SupportError};
use axum::Json;
use axum::Router;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::sync::Arc;

/// Most sessions one list returns.
const MAX_LIST: u32 = 100;

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/support/sessions", get(list).post(request))
        .route("/api/v1/support/sessions/{id}", get(show))
        .route("/api/v1/support/sessions/{id}/approvals", post(approve))
        .route("/api/v1/support/sessions/{id}/end", post(end))
}

fn answer(e: SupportError) -> Response {
    let status = match &e {
        SupportError::UnknownSession(_) => StatusCode::NOT_FOUND,
        SupportError::WrongState { .. } | SupportError::NotPermitted { .. } => StatusCode::CONFLICT,
        SupportError::Db(_) => return super::routes::server_error(e),
        _ => StatusCode::FORBIDDEN,
    };
    refuse(status, e.code(), e.to_string())
}

macro_rules! broker {
    ($s:expr) => {
        match &$s.ctx.support {
            Some(b) => b,
            None => {
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "support-unavailable",
                    "remote support is not available in this host",
                );
            }
        }
    };
}

async fn list(State(s): State<Arc<Shared>>) -> Response {
    match broker!(s).list(MAX_LIST) {
        Ok(l) => Json(l).into_response(),
        Err(e) => answer(e),
    }
}

async fn request(State(s): State<Arc<Shared>>, Extension(caller): Extension<Caller>) -> Response {
    match broker!(s).request(&caller.client) {
        Ok(n) => (StatusCode::CREATED, Json(n)).into_response(),
        Err(e) => answer(e),
    }
}

async fn show(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match broker!(s).get(&id) {
        Ok(v) => Json(v).into_response(),
        Err(e) => answer(e),
    }
}

/// The person's answer: `accept` lists the permissions granted; every
/// other offered permission is refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Approval {
    accept: Vec<Permission>,
}

async fn approve(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(a): Json<Approval>,
) -> Response {
    match broker!(s).decide(&id, &a.accept, &caller.client) {
        Ok(v) => Json(v).into_response(),
        Err(e) => answer(e),
    }
}

async fn end(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    match broker!(s).end(&id, &caller.client) {
        Ok(v) => Json(v).into_response(),
        Err(e) => answer(e),
    }
}
