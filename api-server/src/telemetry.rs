//! The process-wide Prometheus recorder behind `/metrics`.
//!
//! `metrics` allows one global recorder per process, so it is installed once and shared
//! by every [`Application`](crate::Application) in the process (tests run several).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets from 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The recorder's handle, installing it on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        // Fails only for an empty bucket list, which LATENCY_BUCKETS is not.
        let recorder = match builder.set_buckets_for_metric(
            Matcher::Full("http_request_duration_seconds".to_owned()),
            LATENCY_BUCKETS,
        ) {
            Ok(builder) => builder.build_recorder(),
            Err(_) => PrometheusBuilder::new().build_recorder(),
        };
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "a metrics recorder was already installed; /metrics shows only what it records"
            );
        }
        describe();
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "cache_requests_total",
        "Cache reads by namespace and result (hit, miss, error)."
    );
    describe_counter!(
        "cache_loads_total",
        "Loader executions (database reads on a miss)."
    );
    describe_counter!("cache_invalidations_total", "Invalidations applied.");
    describe_counter!(
        "cache_invalidation_errors_total",
        "Invalidations that failed and are owed."
    );
    describe_counter!(
        "cache_fills_refused_total",
        "Fills refused because a lease was voided or a fence was newer."
    );
    describe_counter!(
        "cache_lease_waits_total",
        "Waits on another reader's lease."
    );
    describe_gauge!(
        "cache_invalidation_backlog",
        "Invalidations owed but not yet applied."
    );
    describe_counter!(
        "http_requests_total",
        "HTTP requests by method, route template and status."
    );
    describe_histogram!(
        "http_request_duration_seconds",
        "HTTP request latency by method and route template."
    );
}

/// Keeps the recorder's memory bounded: histogram samples are only folded into their
/// buckets by upkeep (or a scrape), so without it an unscraped server grows ~2 MiB per
/// 100 000 requests. Runs until the returned task is aborted.
pub fn spawn_upkeep() -> tokio::task::JoinHandle<()> {
    let handle = prometheus();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            handle.run_upkeep();
        }
    })
}
