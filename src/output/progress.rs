//! The engine's progress on standard error: pages of long scans (shown once a scan has run
//! for a moment), bytes of an upload, the status of a row AWAIT waits for, waits for the
//! API's rate limit, and warnings. Bars are drawn only on a terminal (indicatif draws nothing
//! otherwise); waits and warnings always, as a line.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::api::{Event, Progress};

/// How long a scan runs before its progress shows.
const DELAY: Duration = Duration::from_millis(800);

/// One set of bars, so that concurrent scans (a join) do not draw over each other.
static BARS: LazyLock<MultiProgress> = LazyLock::new(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));

#[derive(Default)]
struct Bars {
    scans: HashMap<u64, ProgressBar>,
    upload: Option<ProgressBar>,
    wait: Option<ProgressBar>,
}

/// A [`Progress`] that draws on standard error.
pub fn terminal() -> Progress {
    let bars: Arc<Mutex<Bars>> = Arc::default();
    Progress::new(move |event| {
        let mut bars = bars.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::ScanStarted { scan, path } => {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg}: page {pos}/{len} {elapsed}")
                        .expect("a valid template"),
                );
                bar.set_message(path.to_string());
                let shown = bar.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(DELAY).await;
                    if !shown.is_finished() {
                        let shown = BARS.add(shown);
                        shown.enable_steady_tick(Duration::from_millis(120));
                    }
                });
                bars.scans.insert(scan, bar);
            }
            Event::ScanPages { scan, pages } => bars.scans.get(&scan).iter().for_each(|b| b.set_length(pages)),
            Event::PageDone { scan } => bars.scans.get(&scan).iter().for_each(|b| b.inc(1)),
            Event::ScanEnded { scan } => {
                if let Some(bar) = bars.scans.remove(&scan) {
                    bar.finish_and_clear();
                    BARS.remove(&bar);
                }
            }
            Event::UploadStarted { bytes } => {
                let bar = ProgressBar::new(bytes);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} uploading [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .expect("a valid template")
                    .progress_chars("=> "),
                );
                bars.upload = Some(bar);
            }
            Event::Uploaded { bytes } => bars.upload.iter().for_each(|b| b.inc(bytes)),
            Event::UploadEnded => bars.upload.take().iter().for_each(ProgressBar::finish_and_clear),
            Event::Waiting { id, status } => {
                let bar = bars.wait.get_or_insert_with(ProgressBar::new_spinner);
                bar.set_message(format!("waiting for {id}: {status}"));
                bar.tick();
            }
            Event::WaitEnded => bars.wait.take().iter().for_each(ProgressBar::finish_and_clear),
            Event::RateWait { limit, per_minute, wait } => line(&format!(
                "imageql: waiting {:.0} s for the API's rate limit ({limit}: {per_minute} requests a minute)",
                wait.as_secs_f64().ceil()
            )),
            Event::Warning(text) => line(&format!("imageql: warning: {text}")),
        }
    })
}

/// A line on standard error: above the bars on a terminal (println draws nothing elsewhere).
fn line(text: &str) {
    if BARS.is_hidden() {
        eprintln!("{text}");
    } else {
        let _ = BARS.println(text);
    }
}
