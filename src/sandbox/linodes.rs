//! Instances, their disks, and regions: what captures, uploads and replicas refer to.
//! Deleting an instance leaves a free recovery image of its largest ext disk.

use axum::extract::{Path, State};
use axum::http::Method;
use serde_json::{Map, Value, json};

use super::App;
use super::http::{
    ApiError, Caller, EmptyList, ListRequest, Reply, list, method_not_allowed, numeric_id, ok, x_filter,
};
use super::images::recovery_image;
use crate::xfilter::XFilter;

fn objects(values: impl Iterator<Item = Value>) -> Vec<Map<String, Value>> {
    values
        .filter_map(|v| match v {
            Value::Object(map) => Some(map),
            _ => None,
        })
        .collect()
}

/// The X-Filter of a list, checked against the resource's provider description.
fn filter_for(app: &App, request: &ListRequest, service: &str, resource: &str) -> Result<XFilter, ApiError> {
    match app.registry.resource("linode", service, resource) {
        Some((_, described)) => x_filter(&request.headers, described),
        None => Ok(XFilter::default()),
    }
}

pub async fn list_instances(State(app): State<App>, caller: Result<Caller, ApiError>, request: ListRequest) -> Reply {
    let account = caller?.account()?;
    let filter = filter_for(&app, &request, "linode", "instances")?;
    let rows = app.read(|s| objects(s.accounts[account].instances.iter().map(|i| i.to_json())));
    list(&app, rows, &filter, request.query.as_deref(), EmptyList::FirstPage)
}

/// GET or DELETE one instance.
pub async fn instance(
    State(app): State<App>,
    method: Method,
    caller: Result<Caller, ApiError>,
    id: Path<String>,
) -> Reply {
    let account = caller?.account()?;
    let id = numeric_id(id)?;
    match method {
        Method::GET => app
            .read(|s| s.accounts[account].instances.iter().find(|i| i.id == id).map(|i| i.to_json()))
            .map(ok)
            .ok_or_else(ApiError::not_found),
        Method::DELETE => {
            let pace = app.options.pace;
            app.write(|world| {
                let index = world.accounts[account]
                    .instances
                    .iter()
                    .position(|i| i.id == id)
                    .ok_or_else(ApiError::not_found)?;
                recovery_image(world, account, index, pace);
                world.accounts[account].instances.remove(index);
                Ok(())
            })?;
            Ok(ok(json!({})))
        }
        _ => Err(method_not_allowed()),
    }
}

pub async fn list_disks(
    State(app): State<App>,
    caller: Result<Caller, ApiError>,
    id: Path<String>,
    request: ListRequest,
) -> Reply {
    let account = caller?.account()?;
    let id = numeric_id(id)?;
    let filter = filter_for(&app, &request, "linode", "disks")?;
    let rows = app.read(|s| {
        s.accounts[account].instances.iter().find(|i| i.id == id).map(|i| objects(i.disks.iter().map(|d| d.to_json())))
    });
    list(&app, rows.ok_or_else(ApiError::not_found)?, &filter, request.query.as_deref(), EmptyList::FirstPage)
}

pub async fn disk(
    State(app): State<App>,
    caller: Result<Caller, ApiError>,
    Path((id, disk)): Path<(String, String)>,
) -> Reply {
    let account = caller?.account()?;
    let (Ok(id), Ok(disk)) = (id.parse::<u64>(), disk.parse::<u64>()) else {
        return Err(ApiError::not_found());
    };
    app.read(|s| {
        s.accounts[account]
            .instances
            .iter()
            .find(|i| i.id == id)
            .and_then(|i| i.disks.iter().find(|d| d.id == disk))
            .map(|d| d.to_json())
    })
    .map(ok)
    .ok_or_else(ApiError::not_found)
}

pub async fn list_regions(State(app): State<App>, request: ListRequest) -> Reply {
    let filter = filter_for(&app, &request, "regions", "regions")?;
    let rows = app.read(|s| objects(s.regions.iter().map(|r| r.to_json())));
    list(&app, rows, &filter, request.query.as_deref(), EmptyList::FirstPage)
}

pub async fn region(State(app): State<App>, Path(id): Path<String>) -> Reply {
    app.read(|s| s.region(&id).map(|r| r.to_json())).map(ok).ok_or_else(ApiError::not_found)
}
