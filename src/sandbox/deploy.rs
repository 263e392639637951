//! Deploying images: `POST /linode/instances` (with or without an image), `POST
//! /linode/instances/{id}/rebuild` and `POST /linode/instances/{id}/disks`. Bodies are checked
//! with the provider file's description of the method (the validator imageql uses too), then
//! against the world: the region exists and runs instances, the type exists, the image is
//! available and (a private one) has an available copy in the instance's region, the disk
//! fits, the account's instance limit. The instance then moves provisioning (or rebuilding)
//! → booting → running on the sandbox's clock.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::NaiveDateTime;
use serde_json::{Map, Value, json};

use super::app::App;
use super::images::tags;
use super::store::{
    Disk, Event, EventAction, EventEnd, EventEntity, EventStatus, Filesystem, Image, ImageStatus, Instance, Progress,
    RegionStatus, State as World,
};
use super::wire::{ApiError, Caller, Reply, json_object, numeric_id, ok};
use crate::provider::Row;
use crate::validate::check_body;

/// The swap disk the API adds beside a disk made from an image, in MB.
const SWAP_MB: u64 = 512;

/// Checks a body against the description of `method` of `linode.linode.<resource>`.
fn check(app: &App, resource: &str, method: &str, body: &Map<String, Value>) -> Result<(), ApiError> {
    let Some((_, described)) = app.registry.resource("linode", "linode", resource) else { return Ok(()) };
    let Some(method) = described.methods.get(method) else { return Ok(()) };
    let violations = check_body(method, body);
    if violations.is_empty() { Ok(()) } else { Err(ApiError::violations(violations)) }
}

/// A seed row of `service`'s `resource` by id.
fn seed_row<'a>(app: &'a App, service: &str, resource: &str, id: &str) -> Option<&'a Row> {
    let seed = &app.registry.providers.get("linode")?.services.get(service)?.seed;
    seed.rows(resource).iter().find(|r| r.get("id").and_then(Value::as_str) == Some(id))
}

fn text<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    body.get(key).and_then(Value::as_str)
}

/// The region, which must exist and run instances.
fn region(app: &App, body: &Map<String, Value>) -> Result<String, ApiError> {
    let region = text(body, "region").unwrap_or_default();
    let row = seed_row(app, "regions", "regions", region)
        .ok_or_else(|| ApiError::bad_request(format!("Region {region} does not exist"), "region"))?;
    let capabilities = row.get("capabilities").and_then(Value::as_array).into_iter().flatten();
    if !capabilities.filter_map(Value::as_str).any(|c| c == "Linodes") {
        return Err(ApiError::bad_request(format!("Region {region} does not offer Linodes"), "region"));
    }
    Ok(region.to_string())
}

/// The type's disk, memory and vCPUs.
fn plan(app: &App, body: &Map<String, Value>) -> Result<(String, u64, u64, u64), ApiError> {
    let plan = text(body, "type").unwrap_or_default();
    let row = seed_row(app, "linode", "types", plan)
        .ok_or_else(|| ApiError::bad_request(format!("A Linode type with id {plan} does not exist"), "type"))?;
    let number = |key: &str| row.get(key).and_then(Value::as_u64).unwrap_or_default();
    Ok((plan.to_string(), number("disk"), number("memory"), number("vcpus")))
}

/// The image a body names, which must be available, and in `region` when it is private.
fn image(world: &World, account: usize, id: &str, region: &str) -> Result<Image, ApiError> {
    let image = world
        .find_image(Some(account), id)
        .ok_or_else(|| ApiError::bad_request(format!("Image {id} does not exist"), "image"))?;
    if image.status != ImageStatus::Available {
        return Err(ApiError::bad_request(format!("Image {id} is {}, not available", image.status), "image"));
    }
    let placed =
        image.is_public || image.regions.iter().any(|r| r.region == region && r.status == RegionStatus::Available);
    if !placed {
        return Err(ApiError::bad_request(
            format!("Image {id} is not available in region {region}; replicate it there first"),
            "image",
        ));
    }
    Ok(image.clone())
}

/// The disks the API makes from an image: one filling the type's disk but for a swap disk.
fn disks_from(world: &mut World, image: &Image, room: u64, ready_at: NaiveDateTime) -> Vec<Disk> {
    let now = world.now();
    let main = Disk {
        id: world.new_disk_id(),
        label: format!("{} Disk", image.label),
        filesystem: Filesystem::Ext4,
        size: room.saturating_sub(SWAP_MB).max(image.size),
        used: image.size,
        created: now,
        ready_at: Some(ready_at),
    };
    let swap = Disk {
        id: world.new_disk_id(),
        label: format!("{SWAP_MB} MB Swap Image"),
        filesystem: Filesystem::Swap,
        size: SWAP_MB,
        used: 0,
        created: now,
        ready_at: Some(ready_at),
    };
    vec![main, swap]
}

/// An event of work that ends at `ends`.
fn event_until(world: &World, account: usize, action: EventAction, entity: EventEntity, ends: NaiveDateTime) -> Event {
    let mut event = world.user_event(account, action, EventStatus::Started, entity);
    event.ends = Some(EventEnd { at: ends, status: EventStatus::Finished });
    event
}

/// `POST /linode/instances`.
pub async fn create_instance(State(app): State<App>, caller: Result<Caller, ApiError>, body: Bytes) -> Reply {
    let account = caller?.account()?;
    let body = json_object(&body)?;
    check(&app, "instances", "post_instance", &body)?;
    let region = region(&app, &body)?;
    let (plan, disk, memory, vcpus) = plan(&app, &body)?;
    if !plan_available(&app, &region, &plan) {
        return Err(ApiError::bad_request(format!("Plan {plan} is not available in region {region} now"), "type"));
    }
    let (pace, max_instances) = (app.options.pace, app.options.max_instances);
    let booted = body.get("booted").and_then(Value::as_bool).unwrap_or(true);
    let instance = app.write(|world| {
        if world.accounts[account].instances.len() >= max_instances {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("Account limit reached: an account may have at most {max_instances} Linodes"),
            ));
        }
        let image = match text(&body, "image") {
            Some(id) => Some(image(world, account, id, &region)?),
            None => None,
        };
        let now = world.now();
        let id = world.new_linode_id();
        let label = text(&body, "label").map(str::to_string).unwrap_or_else(|| format!("linode{id}"));
        if world.accounts[account].instances.iter().any(|i| i.label == label) {
            return Err(ApiError::bad_request("Label must be unique among your Linodes", "label"));
        }
        let booting_at = now + pace.provision();
        let up_at = booting_at + pace.boot();
        let disks = image.as_ref().map(|image| disks_from(world, image, disk, booting_at)).unwrap_or_default();
        let tags = tags(&body).unwrap_or_default();
        let instance = Instance {
            id,
            label,
            region,
            plan,
            image: image.map(|i| i.id),
            status: if booted { "running" } else { "offline" }.into(),
            created: now,
            tags,
            disk,
            memory,
            vcpus,
            disks,
            progress: Some(Progress { doing: "provisioning".into(), booting_at, up_at }),
        };
        let event = event_until(world, account, EventAction::LinodeCreate, EventEntity::linode(&instance), up_at);
        world.record(account, event);
        world.accounts[account].instances.push(instance.clone());
        world.quiet_until = None;
        Ok(instance.to_json(now))
    })?;
    Ok(ok(instance))
}

/// `POST /linode/instances/{id}/rebuild`: every disk is deleted and made again from the image.
pub async fn rebuild(State(app): State<App>, caller: Result<Caller, ApiError>, id: Path<String>, body: Bytes) -> Reply {
    let account = caller?.account()?;
    let id = numeric_id(id)?;
    let body = json_object(&body)?;
    check(&app, "instances", "rebuild", &body)?;
    let pace = app.options.pace;
    let rebuilt = app.write(|world| {
        let index =
            world.accounts[account].instances.iter().position(|i| i.id == id).ok_or_else(ApiError::not_found)?;
        let (region, room) = {
            let instance = &world.accounts[account].instances[index];
            (instance.region.clone(), instance.disk)
        };
        let image = image(world, account, text(&body, "image").unwrap_or_default(), &region)?;
        let now = world.now();
        let booting_at = now + pace.provision();
        let up_at = booting_at + pace.boot();
        let disks = disks_from(world, &image, room, booting_at);
        let instance = &mut world.accounts[account].instances[index];
        instance.disks = disks;
        instance.image = Some(image.id.clone());
        instance.status = "running".into();
        instance.progress = Some(Progress { doing: "rebuilding".into(), booting_at, up_at });
        let instance = instance.clone();
        let event = event_until(world, account, EventAction::LinodeRebuild, EventEntity::linode(&instance), up_at);
        world.record(account, event);
        world.quiet_until = None;
        Ok(instance.to_json(now))
    })?;
    Ok(ok(rebuilt))
}

/// `POST /linode/instances/{id}/disks`: a disk in the instance's free space, empty or from an
/// image (at least the image's size).
pub async fn create_disk(
    State(app): State<App>,
    caller: Result<Caller, ApiError>,
    id: Path<String>,
    body: Bytes,
) -> Reply {
    let account = caller?.account()?;
    let id = numeric_id(id)?;
    let body = json_object(&body)?;
    check(&app, "disks", "post_disk", &body)?;
    let pace = app.options.pace;
    let size = body.get("size").and_then(Value::as_u64).unwrap_or_default();
    let disk = app.write(|world| {
        let index =
            world.accounts[account].instances.iter().position(|i| i.id == id).ok_or_else(ApiError::not_found)?;
        let (region, free, entity) = {
            let instance = &world.accounts[account].instances[index];
            let used: u64 = instance.disks.iter().map(|d| d.size).sum();
            (instance.region.clone(), instance.disk.saturating_sub(used), EventEntity::linode(instance))
        };
        if size == 0 || size > free {
            return Err(ApiError::bad_request(
                format!("A disk of {size} MB does not fit: the Linode has {free} MB free"),
                "size",
            ));
        }
        let image = match text(&body, "image") {
            Some(id) => Some(image(world, account, id, &region)?),
            None => None,
        };
        if let Some(image) = &image
            && size < image.size
        {
            return Err(ApiError::bad_request(
                format!("Disk size must be at least the image's size, {} MB", image.size),
                "size",
            ));
        }
        let now = world.now();
        let ready_at = now + pace.disk();
        let filesystem = match (text(&body, "filesystem"), &image) {
            (Some(given), _) => serde_json::from_value(json!(given)).unwrap_or(Filesystem::Ext4),
            (None, Some(_)) => Filesystem::Ext4,
            (None, None) => Filesystem::Ext4,
        };
        let disk = Disk {
            id: world.new_disk_id(),
            label: text(&body, "label").map(str::to_string).unwrap_or_else(|| format!("disk{id}")),
            filesystem,
            size,
            used: image.as_ref().map_or(0, |i| i.size),
            created: now,
            ready_at: Some(ready_at),
        };
        let event = event_until(world, account, EventAction::DiskCreate, entity, ready_at);
        world.record(account, event);
        world.accounts[account].instances[index].disks.push(disk.clone());
        world.quiet_until = None;
        Ok(disk.to_json(now))
    })?;
    Ok(ok(disk))
}

/// `PUT /linode/instances/{id}`: its label and tags.
pub fn update_instance(app: &App, account: usize, id: u64, body: &Map<String, Value>) -> Reply {
    check(app, "instances", "put_instance", body)?;
    let updated = app.write(|world| {
        let now = world.now();
        let taken = |label: &str| world.accounts[account].instances.iter().any(|i| i.id != id && i.label == label);
        if let Some(label) = text(body, "label")
            && taken(label)
        {
            return Err(ApiError::bad_request("Label must be unique among your Linodes", "label"));
        }
        let instance =
            world.accounts[account].instances.iter_mut().find(|i| i.id == id).ok_or_else(ApiError::not_found)?;
        if let Some(label) = text(body, "label") {
            instance.label = label.to_string();
        }
        if let Some(tags) = tags(body) {
            instance.tags = tags;
        }
        let instance = instance.clone();
        let event = world.user_event(
            account,
            EventAction::LinodeUpdate,
            EventStatus::Notification,
            EventEntity::linode(&instance),
        );
        world.record(account, event);
        Ok(instance.to_json(now))
    })?;
    Ok(ok(updated))
}

/// `GET /regions/{id}/availability`: the region's rows of the availability seed, as the API's
/// bare list.
pub async fn region_availability(State(app): State<App>, id: Path<String>) -> Reply {
    let Path(region) = id;
    seed_row(&app, "regions", "regions", &region).ok_or_else(ApiError::not_found)?;
    let seed = app.registry.providers.get("linode").and_then(|p| p.services.get("regions")).map(|s| &s.seed);
    let rows = seed.map(|s| s.rows("availability")).unwrap_or_default();
    let here: Vec<&Row> = rows.iter().filter(|r| r.get("region").and_then(Value::as_str) == Some(&region)).collect();
    Ok(ok(json!(here)))
}

/// Whether `plan` can be deployed in `region` now (so when the seed says nothing).
fn plan_available(app: &App, region: &str, plan: &str) -> bool {
    let seed = app.registry.providers.get("linode").and_then(|p| p.services.get("regions")).map(|s| &s.seed);
    let rows = seed.map(|s| s.rows("availability")).unwrap_or_default();
    let found = rows.iter().find(|r| {
        r.get("region").and_then(Value::as_str) == Some(region) && r.get("plan").and_then(Value::as_str) == Some(plan)
    });
    found.is_none_or(|r| r.get("available").and_then(Value::as_bool) != Some(false))
}

/// `POST /account/events/{id}/seen`: the event and every older one are seen.
pub async fn mark_seen(State(app): State<App>, caller: Result<Caller, ApiError>, id: Path<String>) -> Reply {
    let account = caller?.account()?;
    let id = numeric_id(id)?;
    app.write(|world| {
        let events = &mut world.accounts[account].events;
        if !events.iter().any(|e| e.id == id) {
            return Err(ApiError::not_found());
        }
        events.iter_mut().filter(|e| e.id <= id).for_each(|e| e.seen = true);
        Ok(())
    })?;
    Ok(ok(json!({})))
}
