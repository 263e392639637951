//! What stops a running statement: its client's cancel request, `statement_timeout`, or the
//! client hanging up.

use std::future::Future;
use std::time::Duration;

use tokio::time::{Instant, sleep, sleep_until};

use crate::engine::CancelToken;
use crate::error::Error;
use crate::serve::reply::Failure;
use crate::serve::wire::Probe;

/// How often a running statement looks for a client that went away.
const HANGUP_CHECK: Duration = Duration::from_millis(200);

/// Why a statement stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    Cancelled,
    TimedOut,
    HungUp,
}

/// Watches a running statement: its deadline, the client's cancel request (through its
/// token) and the client hanging up all cancel the token.
pub(super) struct Watch {
    pub(super) token: CancelToken,
    pub(super) deadline: Option<Instant>,
    pub(super) probe: Probe,
    pub(super) why: std::sync::Mutex<Option<Stop>>,
}

impl Watch {
    pub(super) fn stop(&self, why: Stop) {
        self.why.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(why);
        self.token.cancel();
    }

    pub(super) fn reason(&self) -> Stop {
        self.why.lock().unwrap_or_else(|e| e.into_inner()).unwrap_or(Stop::Cancelled)
    }

    /// Cancels the token when the deadline passes or the client hangs up; never returns.
    pub(super) async fn guard(&self) {
        loop {
            tokio::select! {
                _ = sleep_until(self.deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400))), if self.deadline.is_some() => {
                    self.stop(Stop::TimedOut);
                    std::future::pending::<()>().await;
                }
                _ = sleep(HANGUP_CHECK) => {
                    if self.probe.hung_up() {
                        self.stop(Stop::HungUp);
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }

    /// `work` to its end (a change reports what it did when its token is cancelled).
    pub(super) async fn finishing<T>(&self, work: impl Future<Output = T>) -> T {
        tokio::select! {
            biased;
            out = work => out,
            _ = self.guard() => unreachable!("the guard never returns"),
        }
    }

    /// `work`, dropped if the statement is stopped first.
    pub(super) async fn unless_stopped<T>(&self, work: impl Future<Output = T>) -> Result<T, Failure> {
        tokio::select! {
            biased;
            _ = self.token.cancelled() => Err(self.failure(Error::Cancelled)),
            out = work => Ok(out),
            _ = self.guard() => unreachable!("the guard never returns"),
        }
    }

    /// An error as the client is told of it: a stopped statement says why.
    pub(super) fn failure(&self, error: Error) -> Failure {
        let cancelled = matches!(&error, Error::Cancelled)
            || matches!(&error, Error::Partial(p) if matches!(p.cause, Error::Cancelled));
        if !cancelled {
            return error.into();
        }
        let why = match self.reason() {
            Stop::TimedOut => "canceling statement due to statement timeout",
            Stop::Cancelled | Stop::HungUp => "canceling statement due to user request",
        };
        match error {
            Error::Partial(_) => Failure::new("57014", format!("{why}: {error}")),
            _ => Failure::new("57014", why),
        }
    }
}
