//! A reprice job as callers see it, and where it is in its life.

use crate::entity::reprice_job;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Waiting for a worker.
    Queued,
    /// A worker is repricing.
    Running,
    /// Every matching product was repriced.
    Succeeded,
    /// Stopped on an error; batches committed before it stay applied.
    Failed,
}

impl JobStatus {
    /// The status as stored and as clients see it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            _ => Self::Queued,
        }
    }
}

/// A reprice job as clients see it.
#[derive(Debug, Clone, PartialEq)]
pub struct RepriceJob {
    /// Job id (a UUID).
    pub id: String,
    /// Where the job is.
    pub status: JobStatus,
    /// Products of the category looked at so far.
    pub matched: u64,
    /// Products whose price changed so far.
    pub updated: u64,
    /// Why the job failed.
    pub error: Option<String>,
}

impl From<reprice_job::Model> for RepriceJob {
    fn from(m: reprice_job::Model) -> Self {
        Self {
            id: m.id,
            status: JobStatus::parse(&m.status),
            matched: m.matched.unsigned_abs(),
            updated: m.updated.unsigned_abs(),
            error: m.error,
        }
    }
}
