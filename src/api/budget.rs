/*! The rate-limit budget: how many requests each limit class of the API still allows a token
this minute, so that imageql waits for its budget instead of being answered 429.

Each class (the provider file's `rateLimits`: image listing, paginated collections, and the
general limit every request counts against) is a bucket of `perMinute` tokens, where a token
spent comes back one minute later: no minute, wherever it starts, sees more requests than the
limit, which satisfies fixed windows and token buckets on the server alike. The API's
`X-RateLimit-*` headers correct it: its limit for the class, requests left when someone else
spends the same token, and when its window resets (what was spent comes back then, not a
minute after it was sent); a 429 pauses the class for its `Retry-After`. Budgets are
kept per API base and token (by hash), shared by every session of a process. */

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::progress::{Event, Progress};

const MINUTE: Duration = Duration::from_secs(60);
/// Added to the API's window ends: its clock and ours may differ by this much.
const CLOCK_MARGIN: Duration = Duration::from_secs(1);
/// Waits shorter than this are not worth reporting.
const REPORTED_WAIT: Duration = Duration::from_millis(500);

/// A limit a request counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Class {
    pub name: String,
    pub per_minute: u32,
}

/// What the API's `X-RateLimit-*` headers said about a class.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reported {
    pub limit: Option<u32>,
    pub remaining: Option<u32>,
    /// Epoch seconds when the API's window resets.
    pub reset: Option<u64>,
}

struct Window {
    limit: u32,
    /// When each request of the last minute was sent, oldest first.
    sent: VecDeque<Instant>,
    paused_until: Option<Instant>,
    /// The end of the wait last reported, so that one wait is reported once.
    reported_until: Option<Instant>,
}

impl Window {
    fn new(limit: u32) -> Window {
        Window { limit, sent: VecDeque::new(), paused_until: None, reported_until: None }
    }

    /// When the next request may go.
    fn ready_at(&mut self, now: Instant) -> Instant {
        while self.sent.front().is_some_and(|&t| t + MINUTE <= now) {
            self.sent.pop_front();
        }
        let paused = self.paused_until.filter(|&t| t > now).unwrap_or(now);
        let limit = self.limit.max(1) as usize;
        match self.sent.len().checked_sub(limit) {
            Some(oldest) => (self.sent[oldest] + MINUTE).max(paused),
            None => paused,
        }
    }
}

#[derive(Default)]
pub struct RateBudget {
    windows: Mutex<HashMap<(u64, String), Window>>,
}

impl std::fmt::Debug for RateBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RateBudget")
    }
}

impl RateBudget {
    fn with_window<T>(&self, client: u64, class: &Class, use_it: impl FnOnce(&mut Window) -> T) -> T {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let window = windows.entry((client, class.name.clone())).or_insert_with(|| Window::new(class.per_minute));
        use_it(window)
    }

    /// Requests `class` allows `client` now, within the last minute's.
    pub fn left(&self, client: u64, class: &Class) -> u32 {
        self.with_window(client, class, |window| {
            window.ready_at(Instant::now());
            window.limit.saturating_sub(window.sent.len() as u32)
        })
    }

    /// Waits until every class of a request allows one more, then counts it against each.
    /// A wait is reported to `progress` when it begins, with how long it will be.
    pub async fn acquire(&self, client: u64, classes: &[Class], progress: &Progress) {
        loop {
            let now = Instant::now();
            let (ready, strictest) = {
                let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
                let mut ready = now;
                let mut strictest = None;
                for class in classes {
                    let window =
                        windows.entry((client, class.name.clone())).or_insert_with(|| Window::new(class.per_minute));
                    let at = window.ready_at(now);
                    if at > ready {
                        ready = at;
                        strictest = Some(class);
                    }
                }
                if ready <= now {
                    for class in classes {
                        windows.get_mut(&(client, class.name.clone())).expect("added above").sent.push_back(now);
                    }
                    return;
                }
                let class = strictest.expect("a class made it wait");
                let window = windows.get_mut(&(client, class.name.clone())).expect("added above");
                let report = ready - now >= REPORTED_WAIT && window.reported_until.is_none_or(|t| t <= now);
                if report {
                    window.reported_until = Some(ready);
                }
                (ready, report.then(|| (class.name.clone(), window.limit)))
            };
            if let Some((name, per_minute)) = strictest {
                progress.report(Event::RateWait { limit: &name, per_minute, wait: ready - now });
            }
            tokio::time::sleep_until(ready.into()).await;
        }
    }

    /// Takes in what the API's headers said about `class`.
    pub fn observe(&self, client: u64, class: &Class, reported: Reported) {
        let now = Instant::now();
        self.with_window(client, class, |window| {
            if let Some(limit) = reported.limit.filter(|&l| l > 0) {
                window.limit = limit;
            }
            let Some(remaining) = reported.remaining else { return };
            window.ready_at(now);
            let left = (window.limit as usize).saturating_sub(window.sent.len());
            // Someone else spends this token too: count their requests as if sent now.
            for _ in remaining as usize..left {
                window.sent.push_back(now);
            }
            let Some(reset) = reported.reset else { return };
            // The API counts in windows that end at `reset`: what was sent in this one is
            // spent until then only, not for a whole minute from its sending.
            let epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            let left = Duration::from_secs(reset).saturating_sub(epoch) + CLOCK_MARGIN;
            let until = now + left.clamp(Duration::from_secs(1), MINUTE);
            if let Some(start) = until.checked_sub(MINUTE) {
                window.sent.iter_mut().for_each(|sent| *sent = (*sent).min(start));
            }
            if remaining == 0 {
                window.paused_until = window.paused_until.max(Some(until));
            }
        });
    }

    /// A 429: nothing more of `class` until `retry_after` has passed.
    pub fn pause(&self, client: u64, class: &Class, retry_after: Duration) {
        let until = Instant::now() + retry_after.min(MINUTE);
        self.with_window(client, class, |window| window.paused_until = window.paused_until.max(Some(until)));
    }
}
