//! The owner's side of a background task of the component (the relay, the auditor): a
//! stop signal, a watch of the task's progress, and the task to join.

use std::future::Future;

use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug)]
pub(super) struct Background<P> {
    stop: watch::Sender<bool>,
    progress: watch::Receiver<P>,
    task: JoinHandle<()>,
}

impl<P: Send + Sync + 'static> Background<P> {
    /// Spawns the future `run` makes of the stop signal's receiving end and the sending
    /// end of the progress, which starts at `start`. The task sees the signal change
    /// (or close, when this handle is dropped) and stops.
    pub(super) fn spawn<F>(
        start: P,
        run: impl FnOnce(watch::Receiver<bool>, watch::Sender<P>) -> F,
    ) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        let (report, progress) = watch::channel(start);
        let task = tokio::spawn(run(stopped, report));
        Self {
            stop,
            progress,
            task,
        }
    }

    /// The progress the task reports.
    pub(super) fn progress(&self) -> &watch::Receiver<P> {
        &self.progress
    }

    /// Signals the task to stop and waits until it has; a task that panicked is logged
    /// as `what` having failed. Returns the progress, as the task left it.
    pub(super) async fn stop(self, what: &str) -> watch::Receiver<P> {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "{what} task failed");
        }
        self.progress
    }
}
