//! What every request handler shares: the state behind one lock (read and changed as of now,
//! saved before a change is acknowledged), the provider registry, the options the sandbox was
//! started with, and who the caller is.

use std::fs::File;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::persist::DataDir;
use super::store::{Pace, State};
use super::wire::{ApiError, Caller, RateLimiter, bearer};
use crate::provider::Registry;

/// The account limits in force.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_images: usize,
    pub max_total_mb: u64,
}

#[derive(Debug)]
pub struct Options {
    pub latency: Duration,
    pub pace: Pace,
    pub limits: Limits,
    pub max_instances: usize,
    /// Requests per minute and token (the provider's documented limit).
    pub rate_limit: u32,
    /// Image list requests per minute and token; `None` is unlimited.
    pub rate_limit_list: Option<u32>,
    pub faults: super::fault::Faults,
}

#[derive(Clone)]
pub struct App {
    /// Reads share it, so that pages are served in parallel.
    pub state: Arc<RwLock<State>>,
    pub registry: Arc<Registry>,
    pub options: Arc<Options>,
    pub data_dir: Option<Arc<DataDir>>,
    pub access_log: Option<Arc<Mutex<File>>>,
    pub limiter: Arc<Mutex<RateLimiter>>,
    /// `http://host:port`, for the upload URLs handed out.
    pub origin: Arc<String>,
}

impl App {
    /// The account a token belongs to; tokens do not change over time, so nothing advances.
    pub fn account_for(&self, token: &str) -> Option<usize> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).account_by_token(token)
    }

    /// Runs `read` on the state as of now.
    pub fn read<T>(&self, read: impl FnOnce(&State) -> T) -> T {
        {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            if state.is_quiet() {
                return read(&state);
            }
        }
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.advance(self.options.pace);
        read(&state)
    }

    /// Runs `change` on the state as of now and, with `--data-dir`, saves the result before
    /// returning; a change that cannot be saved is undone and reported as a 500.
    pub fn write<T>(&self, change: impl FnOnce(&mut State) -> Result<T, ApiError>) -> Result<T, ApiError> {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.advance(self.options.pace);
        let before = self.data_dir.as_ref().map(|_| state.clone());
        let result = change(&mut state);
        state.quiet_until = None;
        if let (Some(dir), Some(before)) = (&self.data_dir, before) {
            let saved = match &result {
                Ok(_) => dir.save(&state),
                Err(_) => Ok(()),
            };
            if result.is_err() || saved.is_err() {
                *state = before;
            }
            if let Err(e) = saved {
                return Err(ApiError::internal(format!("the sandbox could not save its state: {e}")));
            }
        }
        result
    }
}

impl FromRequestParts<App> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        match bearer(&parts.headers)? {
            // linode-cli sends "Bearer " when its token is empty; that is anonymous.
            None => Ok(Caller(None)),
            Some(token) if token.is_empty() => Ok(Caller(None)),
            Some(token) => app.account_for(&token).map(|a| Caller(Some(a))).ok_or_else(ApiError::unauthorized),
        }
    }
}
