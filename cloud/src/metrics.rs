//! The operator's view of a running server: `GET /metrics` (Prometheus text
//! format 0.0.4) and `GET /alerts` (JSON), over plain HTTP on their own
//! address (`outpost-cloud serve --metrics-listen`), apart from the device
//! port.
//!
//! | metric | type | what |
//! | --- | --- | --- |
//! | `outpost_cloud_events_total{reason}` | counter | every counter of [`crate::store::COUNTER_REASONS`]: stored batches, heartbeats, each refusal reason |
//! | `outpost_cloud_alerts_total{kind}` | counter | alerts raised ([`crate::defence::AlertKind`]), also of earlier runs |
//! | `outpost_cloud_open_connections` | gauge | device connections open now |
//! | `outpost_cloud_blocked_sources` | gauge | source addresses blocked now |
//!
//! `/alerts` lists the alerts of this process, oldest first (the last
//! 1000; all of them are in the store: `outpost-cloud alerts`).
//!
//! Neither page holds a payload, key, token or personal detail; `/alerts`
//! holds source addresses and device ids. The listener has no
//! authentication and no TLS: bind it to loopback or the management
//! network only (the default is not to serve it at all).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::defence::{AlertKind, Defence};
use crate::limits::{ConnTracker, RefusalCounters};
use crate::store::Store;

/// What the pages are made from.
#[derive(Clone)]
pub(crate) struct MetricsView {
    pub(crate) store: Store,
    pub(crate) refusals: Arc<RefusalCounters>,
    pub(crate) defence: Arc<Defence>,
    pub(crate) tracker: Arc<ConnTracker>,
}

/// Bind `at` and serve until `stop` turns true; the bound address and the
/// serving task.
pub(crate) async fn serve(
    at: SocketAddr,
    view: MetricsView,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(at)
        .await
        .map_err(|e| anyhow::anyhow!("binding the metrics listener {at}: {e}"))?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/alerts", get(alerts))
        .with_state(view);
    let task = tokio::spawn(async move {
        let shutdown = async move {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "metrics listener failed");
        }
    });
    tracing::info!(%addr, "metrics listening (plain HTTP: /metrics, /alerts)");
    Ok((addr, task))
}

async fn metrics(State(v): State<MetricsView>) -> Response {
    let (store, refusals) = (v.store.clone(), Arc::clone(&v.refusals));
    let read = tokio::task::spawn_blocking(move || {
        Ok::<_, anyhow::Error>((refusals.snapshot(&store)?, store.alert_counts()?))
    })
    .await;
    let (counters, mut alert_counts) = match read {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "reading the counters failed");
            return (StatusCode::SERVICE_UNAVAILABLE, "counters unavailable\n").into_response();
        }
        Err(e) => {
            tracing::error!(error = %e, "metrics task failed");
            return (StatusCode::SERVICE_UNAVAILABLE, "counters unavailable\n").into_response();
        }
    };
    // Alerts raised since the last flush are not in the store yet.
    for a in v.defence.pending_alerts() {
        *alert_counts.entry(a.kind).or_default() += 1;
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP outpost_cloud_events_total Stored batches, heartbeats and refusals, by reason."
    );
    let _ = writeln!(out, "# TYPE outpost_cloud_events_total counter");
    for (reason, n) in &counters {
        let _ = writeln!(out, "outpost_cloud_events_total{{reason=\"{reason}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP outpost_cloud_alerts_total Alerts raised for the operator, by kind."
    );
    let _ = writeln!(out, "# TYPE outpost_cloud_alerts_total counter");
    for kind in AlertKind::ALL {
        let n = alert_counts.get(&kind).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "outpost_cloud_alerts_total{{kind=\"{}\"}} {n}",
            kind.as_str()
        );
    }
    let _ = writeln!(
        out,
        "# HELP outpost_cloud_open_connections Device connections open now."
    );
    let _ = writeln!(out, "# TYPE outpost_cloud_open_connections gauge");
    let _ = writeln!(out, "outpost_cloud_open_connections {}", v.tracker.open());
    let _ = writeln!(
        out,
        "# HELP outpost_cloud_blocked_sources Source addresses blocked now."
    );
    let _ = writeln!(out, "# TYPE outpost_cloud_blocked_sources gauge");
    let _ = writeln!(
        out,
        "outpost_cloud_blocked_sources {}",
        v.defence.blocked_sources()
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

async fn alerts(State(v): State<MetricsView>) -> Response {
    axum::Json(v.defence.recent_alerts()).into_response()
}
