//! What the engine reports while it works: pages of a scan, bytes of an upload, the status of
//! a row it waits for, waits for the API's rate limit, and warnings. The engine only calls a
//! [`Progress`] callback; drawing bars or printing is the front end's business.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A listing started; `scan` tells the events of concurrent scans apart.
    ScanStarted {
        scan: u64,
        path: &'a str,
    },
    /// The first page told how many pages there are.
    ScanPages {
        scan: u64,
        pages: u64,
    },
    PageDone {
        scan: u64,
    },
    /// The scan finished, failed or was dropped.
    ScanEnded {
        scan: u64,
    },
    UploadStarted {
        bytes: u64,
    },
    Uploaded {
        bytes: u64,
    },
    UploadEnded,
    /// `/*+ AWAIT */` polled a row and found it in `status`.
    Waiting {
        id: &'a str,
        status: &'a str,
    },
    WaitEnded,
    /// Requests wait `wait` for the API's rate limit `limit` (`per_minute` requests a minute).
    RateWait {
        limit: &'a str,
        per_minute: u32,
        wait: std::time::Duration,
    },
    Warning(&'a str),
}

/// A callback for [`Event`]s, cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Progress(Arc<dyn Fn(Event<'_>) + Send + Sync>);

impl Progress {
    pub fn new(report: impl Fn(Event<'_>) + Send + Sync + 'static) -> Progress {
        Progress(Arc::new(report))
    }

    /// Reports nothing (library use, tests).
    pub fn silent() -> Progress {
        Progress::new(|_| {})
    }

    pub fn report(&self, event: Event<'_>) {
        (self.0)(event)
    }

    /// A new scan id and a guard that reports its end when dropped.
    pub fn scan(&self, path: &str) -> ScanGuard {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let scan = NEXT.fetch_add(1, Ordering::Relaxed);
        self.report(Event::ScanStarted { scan, path });
        ScanGuard { progress: self.clone(), scan }
    }

    /// Reports `end` when the returned guard is dropped, however the work ends.
    pub fn until_dropped(&self, end: Event<'static>) -> EndGuard {
        EndGuard { progress: self.clone(), end }
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

pub struct ScanGuard {
    progress: Progress,
    pub scan: u64,
}

impl ScanGuard {
    pub fn pages(&self, pages: u64) {
        self.progress.report(Event::ScanPages { scan: self.scan, pages });
    }

    pub fn page_done(&self) {
        self.progress.report(Event::PageDone { scan: self.scan });
    }
}

impl Drop for ScanGuard {
    fn drop(&mut self) {
        self.progress.report(Event::ScanEnded { scan: self.scan });
    }
}

pub struct EndGuard {
    progress: Progress,
    end: Event<'static>,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.progress.report(self.end);
    }
}
