//! Progress of an import on stderr: a bar on a terminal, otherwise a line every
//! [`PROGRESS_LINE_EVERY`] rows; bad rows are printed without breaking the bar.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::ImportReport;

/// Without a terminal, a progress line every this many rows.
pub(crate) const PROGRESS_LINE_EVERY: u64 = 10_000;

/// How progress is shown on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// A bar when stderr is a terminal, otherwise [`Lines`](Self::Lines).
    #[default]
    Auto,
    /// A progress bar.
    Bar,
    /// A plain line every 10 000 rows.
    Lines,
    /// No progress (bad rows are still reported).
    Hidden,
}

/// Shows progress on stderr, and prints bad rows without breaking the bar.
pub(super) enum Reporter {
    Bar(ProgressBar),
    Lines { next: u64 },
    Hidden,
}

impl Reporter {
    pub(super) fn new(progress: Progress, size: u64) -> Self {
        let progress = match progress {
            Progress::Auto if std::io::stderr().is_terminal() => Progress::Bar,
            Progress::Auto => Progress::Lines,
            other => other,
        };
        match progress {
            Progress::Bar => {
                let style = ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} ({eta}) {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr())
                    .with_style(style);
                bar.enable_steady_tick(Duration::from_millis(200));
                Self::Bar(bar)
            }
            Progress::Lines => Self::Lines {
                next: PROGRESS_LINE_EVERY,
            },
            Progress::Auto | Progress::Hidden => Self::Hidden,
        }
    }

    pub(super) fn println(&self, line: &str) {
        match self {
            Self::Bar(bar) => bar.suspend(|| eprintln!("{line}")),
            _ => eprintln!("{line}"),
        }
    }

    /// After each batch: `bytes` of the file read, the counts so far.
    pub(super) fn update(&mut self, bytes: u64, report: &ImportReport) {
        let rows = report.rows();
        match self {
            Self::Bar(bar) => {
                bar.set_position(bytes);
                bar.set_message(format!("{rows} rows: {}", report.summary()));
            }
            Self::Lines { next } => {
                if rows >= *next {
                    eprintln!("import: {rows} rows read; {}", report.summary());
                    *next = (rows / PROGRESS_LINE_EVERY + 1) * PROGRESS_LINE_EVERY;
                }
            }
            Self::Hidden => {}
        }
    }

    pub(super) fn finish(&self) {
        if let Self::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
