//! When a failed request is sent again, and what its error advises: the policy, apart from
//! the client that sends. Reads (idempotent) are retried on network failures, bodies cut
//! short and 408/429/5xx, with exponential backoff and jitter, honouring `Retry-After`;
//! changes are sent once.

use std::time::Duration;

use super::ApiError;

/// Attempts for an idempotent read before its error is reported: at a 30 % failure rate,
/// one read in a thousand still fails.
pub const READ_ATTEMPTS: u32 = 6;
/// The first wait before a read is sent again; it doubles with each attempt, up to the cap.
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// The longest wait a `Retry-After` may ask for.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// A failed attempt: its error, whether sending it again may succeed, and when the API
/// said to.
pub struct Failure {
    pub retryable: bool,
    pub retry_after: Option<Duration>,
    pub error: ApiError,
}

/// Whether an HTTP status may go away when the same request is sent again.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// The wait before attempt `attempt + 1` of a read that failed with `failure`, or `None`
/// when its error is final. A 429 waits in the rate budget instead when there is one
/// (`budgeted`), which holds every request of the token back for its Retry-After.
pub fn next_wait(failure: &Failure, attempt: u32, budgeted: bool) -> Option<Duration> {
    if !failure.retryable || attempt >= READ_ATTEMPTS {
        return None;
    }
    if failure.error.status() == Some(429) && budgeted {
        return Some(Duration::ZERO);
    }
    Some(failure.retry_after.unwrap_or_else(|| backoff(attempt, crate::random::unit())).min(MAX_RETRY_WAIT))
}

/// The wait before attempt `attempt + 1`: exponential, with "equal jitter" (half fixed, half
/// random by `unit` in [0, 1)), so that clients failed by one outage do not come back in step.
fn backoff(attempt: u32, unit: f64) -> Duration {
    let ceiling = FIRST_RETRY_WAIT.saturating_mul(1 << (attempt - 1).min(16)).min(MAX_BACKOFF);
    ceiling / 2 + ceiling.mul_f64(unit / 2.0)
}

/// What an error of `status` advises, after `attempts` attempts in all (1: a change, never
/// retried); `source` says where the token came from.
pub fn advice(status: u16, attempts: u32, has_token: bool, source: &str) -> Option<String> {
    let again = match attempts {
        1 => "changes are never retried: check whether it happened before sending it again",
        _ => "try again later",
    };
    Some(match status {
        401 if has_token => format!("The token ({source}) was rejected; check that it is valid"),
        401 => format!("This needs a token: give one in {source}"),
        403 => format!("The token ({source}) lacks the permission (OAuth scope) this needs"),
        429 if attempts > 1 => format!("The API's rate limit still applied after {attempts} attempts; {again}"),
        429 => format!("The API's rate limit was hit; {again}"),
        500..=599 => format!("The API failed; {again}"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::HttpVerb;

    fn failed(status: u16, retry_after: Option<u64>) -> Failure {
        Failure {
            retryable: retryable_status(status),
            retry_after: retry_after.map(Duration::from_secs),
            error: ApiError::Status { method: HttpVerb::Get, url: "u".into(), status, errors: vec![], hint: None },
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_half_of_it_random() {
        for attempt in 1..=10 {
            let ceiling = (FIRST_RETRY_WAIT * 2u32.pow(attempt - 1)).min(MAX_BACKOFF);
            assert_eq!(backoff(attempt, 0.0), ceiling / 2);
            assert!(backoff(attempt, 0.999) < ceiling && backoff(attempt, 0.999) > ceiling / 2);
        }
        assert_eq!(backoff(40, 1.0), MAX_BACKOFF, "no overflow on a long run of failures");
    }

    #[test]
    fn only_transient_statuses_are_retried_and_not_past_the_last_attempt() {
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(next_wait(&failed(status, None), 1, false).is_some(), "{status}");
        }
        for status in [400, 401, 403, 404, 409, 422] {
            assert!(next_wait(&failed(status, None), 1, false).is_none(), "{status}");
        }
        assert!(next_wait(&failed(503, None), READ_ATTEMPTS - 1, false).is_some());
        assert!(next_wait(&failed(503, None), READ_ATTEMPTS, false).is_none());
    }

    #[test]
    fn retry_after_is_honoured_within_a_cap_and_a_budget_takes_over_429s() {
        assert_eq!(next_wait(&failed(503, Some(3)), 1, false), Some(Duration::from_secs(3)));
        assert_eq!(next_wait(&failed(503, Some(3600)), 1, false), Some(MAX_RETRY_WAIT));
        assert_eq!(next_wait(&failed(429, Some(5)), 1, true), Some(Duration::ZERO));
        assert_eq!(next_wait(&failed(429, Some(5)), 1, false), Some(Duration::from_secs(5)));
    }

    #[test]
    fn advice_tells_a_change_it_was_not_retried_and_never_shows_the_token() {
        let change = advice(503, 1, true, "LINODE_TOKEN").unwrap();
        assert!(change.contains("changes are never retried"), "{change}");
        assert!(advice(429, 6, true, "LINODE_TOKEN").unwrap().contains("after 6 attempts"));
        assert_eq!(advice(401, 6, false, "LINODE_TOKEN").unwrap(), "This needs a token: give one in LINODE_TOKEN");
        assert!(
            advice(401, 6, true, "the token of profile acme")
                .unwrap()
                .contains("(the token of profile acme) was rejected")
        );
        assert_eq!(advice(404, 6, true, "LINODE_TOKEN"), None);
    }
}
