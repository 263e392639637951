//! Instances and their disks: what captures refer to. They belong to an account and deleting
//! an instance leaves a free recovery image of its largest ext disk, so they have their own
//! handlers rather than the generic read-only ones.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::Method;
use serde_json::{Value, json};

use super::app::App;
use super::store::{EventAction, EventEntity, EventStatus, Instance};
use super::wire::{ApiError, Caller, EmptyList, ListRequest, Reply, json_object, list, numeric_id, ok, x_filter};
use crate::provider::Row;

fn objects(values: impl Iterator<Item = Value>) -> Vec<Row> {
    values
        .filter_map(|v| match v {
            Value::Object(map) => Some(map),
            _ => None,
        })
        .collect()
}

/// Pages and filters the rows of `linode.linode.<resource>` as its provider description says;
/// the filter is checked before `rows` are read.
fn list_of(
    app: &App,
    resource: &str,
    request: &ListRequest,
    rows: impl FnOnce() -> Result<Vec<Row>, ApiError>,
) -> Reply {
    let (provider, described) =
        app.registry.resource("linode", "linode", resource).expect("mounted only when the resource is described");
    let filter = x_filter(&request.headers, described)?;
    list(rows()?, &filter, request.query.as_deref(), provider.pagination.page_size, "data", EmptyList::FirstPage)
}

pub async fn list_instances(State(app): State<App>, caller: Result<Caller, ApiError>, request: ListRequest) -> Reply {
    let account = caller?.account()?;
    list_of(&app, "instances", &request, || {
        Ok(app.read(|s| objects(s.accounts[account].instances.iter().map(|i| i.to_json(s.now())))))
    })
}

/// GET, PUT (label, tags) or DELETE one instance.
pub async fn instance(
    State(app): State<App>,
    method: Method,
    caller: Result<Caller, ApiError>,
    id: Path<String>,
    body: Bytes,
) -> Reply {
    let account = caller?.account()?;
    let id = numeric_id(id)?;
    match method {
        Method::GET => app
            .read(|s| s.accounts[account].instances.iter().find(|i| i.id == id).map(|i| i.to_json(s.now())))
            .map(ok)
            .ok_or_else(ApiError::not_found),
        Method::PUT => super::deploy::update_instance(&app, account, id, &json_object(&body)?),
        Method::DELETE => {
            let pace = app.options.pace;
            app.write(|world| {
                let index = world.accounts[account]
                    .instances
                    .iter()
                    .position(|i| i.id == id)
                    .ok_or_else(ApiError::not_found)?;
                let entity = EventEntity::linode(&world.accounts[account].instances[index]);
                let event = world.user_event(account, EventAction::LinodeDelete, EventStatus::Notification, entity);
                world.record(account, event);
                world.add_recovery_image(account, index, pace);
                world.accounts[account].instances.remove(index);
                Ok(())
            })?;
            Ok(ok(json!({})))
        }
        _ => Err(ApiError::method_not_allowed()),
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
    list_of(&app, "disks", &request, || {
        let disks = |i: &Instance, now| objects(i.disks.iter().map(|d| d.to_json(now)));
        app.read(|s| s.accounts[account].instances.iter().find(|i| i.id == id).map(|i| disks(i, s.now())))
            .ok_or_else(ApiError::not_found)
    })
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
            .map(|d| d.to_json(s.now()))
    })
    .map(ok)
    .ok_or_else(ApiError::not_found)
}
