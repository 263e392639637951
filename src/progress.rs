//! Progress of long scans on standard error: pages fetched out of the total, shown once a
//! scan has run for a moment, and only on a terminal (indicatif draws nothing otherwise).

use std::sync::LazyLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long a scan runs before its progress shows.
const DELAY: Duration = Duration::from_millis(800);

/// One set of bars, so that concurrent scans (a join) do not draw over each other.
static BARS: LazyLock<MultiProgress> = LazyLock::new(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));

/// A scan's bar; cleared when dropped, whether the scan finished or was cancelled.
pub struct ScanProgress {
    bar: ProgressBar,
}

impl ScanProgress {
    pub fn start(what: &str) -> ScanProgress {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}: page {pos}/{len} {elapsed}").expect("a valid template"),
        );
        bar.set_message(what.to_string());
        let shown = bar.clone();
        tokio::spawn(async move {
            tokio::time::sleep(DELAY).await;
            if !shown.is_finished() {
                let shown = BARS.add(shown);
                shown.enable_steady_tick(Duration::from_millis(120));
            }
        });
        ScanProgress { bar }
    }

    pub fn set_pages(&self, pages: u64) {
        self.bar.set_length(pages);
    }

    pub fn page_done(&self) {
        self.bar.inc(1);
    }
}

impl Drop for ScanProgress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
        BARS.remove(&self.bar);
    }
}
