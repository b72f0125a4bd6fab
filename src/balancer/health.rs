//! The optional active health probe: `GET <path>` on every backend each interval, marking it
//! up on a `2xx` and down otherwise. The passive check lives in the request path (`proxy`).

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::http::uri::{PathAndQuery, Scheme};
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::ProbeConfig;
use super::proxy::Proxy;
use super::route::Backend;

/// Health answers are tiny; reading at most this much lets the probe connection be reused
/// without trusting a backend's body size.
const MAX_PROBE_BODY: usize = 64 * 1024;

/// The probe path as a URI part, or `InvalidInput` for a path that is not one.
pub(super) fn probe_path(probe: &ProbeConfig) -> io::Result<PathAndQuery> {
    if !probe.path.starts_with('/') {
        return Err(invalid_path(probe));
    }
    PathAndQuery::try_from(probe.path.as_str()).map_err(|_| invalid_path(probe))
}

fn invalid_path(probe: &ProbeConfig) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("health probe path {:?} is not an absolute path", probe.path),
    )
}

/// Probes until the balancer stops.
pub(super) async fn probe_loop(
    proxy: Arc<Proxy>,
    probe: ProbeConfig,
    path: PathAndQuery,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(probe.timeout));
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(1)
        .build(connector);
    let mut tick = tokio::time::interval(probe.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let router = proxy.router();
    // A failed probe keeps the backend out until the next round has had its chance.
    let hold = probe.interval + probe.timeout;
    loop {
        let round = async {
            tick.tick().await;
            let probes = router
                .backends()
                .iter()
                .map(|backend| probe_one(&client, backend, &path, &probe));
            futures::future::join_all(probes).await
        };
        let results = tokio::select! {
            results = round => results,
            _ = stopped.changed() => return,
        };
        for (index, answer) in results.into_iter().enumerate() {
            let addr = router.backend(index).addr;
            if answer == Answer::Healthy {
                if router.mark_up(index) {
                    tracing::info!(backend = %addr, "backend up (probe)");
                }
                continue;
            }
            if router.mark_down(index, hold) {
                tracing::warn!(backend = %addr, "backend down (probe): {answer:?}");
            }
            // A backend that answers "unhealthy" (draining, cut off from its cluster) still
            // answers the requests it holds, maybe with data: they stay. One that answers
            // nothing will not answer them either.
            if answer == Answer::Silent {
                router.went_silent(index);
            }
        }
    }
}

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A `2xx`.
    Healthy,
    /// Another status, or a failed connection.
    Unhealthy,
    /// Connected (or connecting) but no answer within the probe's timeout.
    Silent,
}

async fn probe_one(
    client: &Client<HttpConnector, Empty<Bytes>>,
    backend: &Backend,
    path: &PathAndQuery,
    probe: &ProbeConfig,
) -> Answer {
    let mut parts = hyper::http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(backend.authority.clone());
    parts.path_and_query = Some(path.clone());
    let Ok(uri) = Uri::from_parts(parts) else {
        return Answer::Unhealthy;
    };
    let Ok(request) = Request::get(uri).body(Empty::new()) else {
        return Answer::Unhealthy;
    };
    let attempt = async {
        let response = client.request(request).await.ok()?;
        let healthy = response.status().is_success();
        // Reading the (small) body lets the connection go back to the pool.
        let _ = Limited::new(response.into_body(), MAX_PROBE_BODY)
            .collect()
            .await;
        Some(healthy)
    };
    match tokio::time::timeout(probe.timeout, attempt).await {
        Ok(Some(true)) => Answer::Healthy,
        Ok(_) => Answer::Unhealthy,
        Err(_) => Answer::Silent,
    }
}
