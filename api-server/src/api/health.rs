//! `/health` and `/metrics`.

use poem_openapi::payload::{Json, PlainText};
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};
use product_service::ProductService;

use super::ApiTags;

/// What the server depends on, and whether each answers.
#[derive(Debug, Object)]
#[oai(rename = "Health", example)]
pub struct Health {
    /// `ok`; `degraded` when the cache is down (reads go to the database);
    /// `unavailable` when the database is down.
    status: String,
    /// `ok` or `unavailable`.
    database: String,
    /// `ok` or `degraded`.
    cache: String,
}

impl Example for Health {
    fn example() -> Self {
        Self {
            status: "ok".to_owned(),
            database: "ok".to_owned(),
            cache: "ok".to_owned(),
        }
    }
}

#[derive(ApiResponse)]
enum HealthResponse {
    /// The database answers (the cache may be degraded).
    #[oai(status = 200)]
    Ok(Json<Health>),
    /// The database does not answer.
    #[oai(status = 503)]
    Unavailable(Json<Health>),
}

#[derive(ApiResponse)]
enum MetricsResponse {
    /// Prometheus text exposition format.
    #[oai(status = 200)]
    Ok(PlainText<String>),
}

pub struct OperationsApi {
    pub service: ProductService,
}

#[OpenApi(tag = "ApiTags::Operations")]
impl OperationsApi {
    /// Health check
    ///
    /// 200 while the database answers, with `cache: degraded` if the cache does not
    /// (reads then go to the database and writes still succeed); 503 when the database
    /// does not answer.
    #[oai(path = "/health", method = "get", operation_id = "health")]
    async fn health(&self) -> HealthResponse {
        let (database, cache) =
            tokio::join!(self.service.ping_database(), self.service.cache().ping());
        let cache = if cache.is_ok() && !self.service.cache().is_degraded() {
            "ok"
        } else {
            "degraded"
        };
        match database {
            Ok(()) => HealthResponse::Ok(Json(Health {
                status: if cache == "ok" { "ok" } else { "degraded" }.to_owned(),
                database: "ok".to_owned(),
                cache: cache.to_owned(),
            })),
            Err(error) => {
                tracing::error!(%error, "health: database does not answer");
                HealthResponse::Unavailable(Json(Health {
                    status: "unavailable".to_owned(),
                    database: "unavailable".to_owned(),
                    cache: cache.to_owned(),
                }))
            }
        }
    }

    /// Metrics
    ///
    /// Prometheus text: `cache_requests_total{namespace,result}`,
    /// `cache_loads_total{namespace}`, `cache_invalidations_total{namespace}`,
    /// `cache_invalidation_backlog`, `http_requests_total{method,path,status}`,
    /// `http_request_duration_seconds{method,path}` and more.
    #[oai(path = "/metrics", method = "get", operation_id = "metrics")]
    async fn metrics(&self) -> MetricsResponse {
        MetricsResponse::Ok(PlainText(crate::telemetry::prometheus().render()))
    }
}
