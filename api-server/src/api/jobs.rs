//! `/api/jobs`: background reprice jobs.

use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};
use product_service::{Category, ProductService, RepriceJob, RepricePercent};

use super::ApiTags;
use super::auth::WriteAuth;
use super::fields::Field;
use super::problem::{ApiError, Problem};

/// What to reprice.
#[derive(Debug, Object)]
#[oai(rename = "RepriceRequest", deny_unknown_fields, example)]
pub struct RepriceRequest {
    /// Only products of this category; `null` or absent: every product.
    #[oai(nullable)]
    category: Option<Field<Category>>,
    /// Change in percent, −90 to 1000; new prices are rounded to the nearest cent.
    percent: Field<RepricePercent>,
}

/// A reprice job.
#[derive(Debug, Object)]
#[oai(rename = "RepriceJob", example)]
pub struct RepriceJobBody {
    /// Job id.
    id: String,
    /// `queued`, `running`, `succeeded` or `failed`.
    status: String,
    /// Matching products looked at so far.
    matched: u64,
    /// Products whose price changed so far.
    updated: u64,
    /// Why the job failed; `null` otherwise.
    #[oai(nullable)]
    error: Option<String>,
}

const EXAMPLE_JOB_ID: &str = "0b6f8d8e-2f0a-4c55-9d8e-6a1f3c2b7e41";

impl Example for RepriceRequest {
    fn example() -> Self {
        Self {
            category: Category::parse("keyboards".to_owned()).ok().map(Field),
            percent: Field(RepricePercent::parse(10.0).expect("10 is within bounds")),
        }
    }
}

impl Example for RepriceJobBody {
    fn example() -> Self {
        Self {
            id: EXAMPLE_JOB_ID.to_owned(),
            status: "succeeded".to_owned(),
            matched: 12,
            updated: 12,
            error: None,
        }
    }
}

impl Example for QueuedBody {
    fn example() -> Self {
        Self {
            id: EXAMPLE_JOB_ID.to_owned(),
            status: "queued".to_owned(),
        }
    }
}

impl From<RepriceJob> for RepriceJobBody {
    fn from(job: RepriceJob) -> Self {
        Self {
            id: job.id,
            status: job.status.as_str().to_owned(),
            matched: job.matched,
            updated: job.updated,
            error: job.error,
        }
    }
}

/// The answer to a new job: where it is.
#[derive(Debug, Object)]
#[oai(rename = "RepriceJobQueued", example)]
pub struct QueuedBody {
    /// Job id; poll `GET /api/jobs/{id}`.
    id: String,
    /// Always `queued`.
    status: String,
}

#[derive(ApiResponse)]
enum EnqueueResponse {
    /// Queued; `Location` is the job's URL.
    #[oai(status = 202)]
    Accepted(Json<QueuedBody>, #[oai(header = "Location")] String),
}

#[derive(ApiResponse)]
enum GetJobResponse {
    /// The job.
    #[oai(status = 200)]
    Ok(Json<RepriceJobBody>),
}

/// The jobs resource.
pub struct JobsApi {
    pub service: ProductService,
}

#[OpenApi(tag = "ApiTags::Jobs")]
impl JobsApi {
    /// Start a reprice job
    ///
    /// Queues a background job that changes `price_cents` of every product of
    /// `category` (every product if `null`) by `percent`, rounded to the nearest cent,
    /// through the same write path as any other change: each product's version is bumped
    /// and its cache entry invalidated. Jobs survive server restarts.
    #[oai(
        path = "/api/jobs/reprice",
        method = "post",
        operation_id = "startRepriceJob"
    )]
    async fn enqueue(
        &self,
        _auth: WriteAuth,
        body: Json<RepriceRequest>,
    ) -> Result<EnqueueResponse, ApiError> {
        let job = self
            .service
            .enqueue_reprice(body.0.category.map(|c| c.0), body.0.percent.0)
            .await?;
        let location = format!("/api/jobs/{}", job.id);
        Ok(EnqueueResponse::Accepted(
            Json(QueuedBody {
                id: job.id,
                status: job.status.as_str().to_owned(),
            }),
            location,
        ))
    }

    /// Get a job
    ///
    /// The job's status and progress: `matched` and `updated` grow while it runs.
    #[oai(path = "/api/jobs/:id", method = "get", operation_id = "getJob")]
    async fn get(
        &self,
        /// Job id.
        id: Path<String>,
    ) -> Result<GetJobResponse, ApiError> {
        match self.service.find_job(&id.0).await? {
            Some(job) => Ok(GetJobResponse::Ok(Json(job.into()))),
            None => Err(ApiError::NotFound(Json(Problem::new(
                poem::http::StatusCode::NOT_FOUND,
                format!("job {} not found", id.0),
            )))),
        }
    }
}
