//! The images endpoints: list, get, capture, upload (and the upload URL), update, delete and
//! replicate, with the account limits. Images are per account and change over time, so they
//! have their own handlers rather than the generic read-only ones; the regions they may be
//! uploaded or replicated to are the seed rows of `linode.regions.regions`, the same rows
//! `GET /regions` serves.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use chrono::Duration;
use serde_json::{Map, Value, json};

use super::app::{App, Limits};
use super::store::{
    EventAction, EventEnd, EventEntity, EventStatus, Image, ImageJson, ImageStatus, RegionCopy, RegionStatus,
    State as World, UploadTicket, random_hex,
};
use super::upload;
use super::wire::{ApiError, Caller, EmptyList, ListRequest, Reply, json_object, list_lazily, ok, x_filter};
use crate::provider::{PageSizeRange, Resource, Row};
use crate::validate::check_body;
use crate::xfilter::Filter;

const MIB: u64 = 1 << 20;
/// A disk can be captured only while its used space is below 90% of the image size limit.
const CAPTURE_USE_LIMIT: f64 = 0.9;
const UPLOAD_WINDOW_HOURS: i64 = 24;
/// The API's limits on an upload when the provider files do not give them: 5 GB as sent,
/// 6 GB uncompressed (also the largest image).
const UPLOAD_LIMITS: upload::Limits = upload::Limits { compressed: 5 << 30, uncompressed: 6 << 30 };
/// The region capability that uploads and replicas need.
const OBJECT_STORAGE: &str = "Object Storage";

fn images_resource(app: &App) -> &Resource {
    app.registry.resource("linode", "images", "images").expect("mounted only when images are described").1
}

fn page_sizes(app: &App) -> PageSizeRange {
    app.registry
        .resource("linode", "images", "images")
        .expect("mounted only when images are described")
        .0
        .pagination
        .page_size
}

/// The upload limits the provider file gives for `post_upload_image`.
fn upload_limits(app: &App) -> upload::Limits {
    match images_resource(app).methods.get("post_upload_image").and_then(|m| m.upload.as_ref()) {
        Some(spec) => upload::Limits {
            compressed: spec.max_bytes,
            uncompressed: spec.max_decoded_bytes.unwrap_or(spec.max_bytes),
        },
        None => UPLOAD_LIMITS,
    }
}

/// Checks that `region` exists and can store images, for a request whose `field` named it to
/// have images `done` there ("uploaded", "stored").
fn check_region(app: &App, region: &str, field: &str, done: &str) -> Result<(), ApiError> {
    let regions = app.registry.providers.get("linode").and_then(|p| p.services.get("regions"));
    let rows: &[Row] = regions.map(|s| s.seed.rows("regions")).unwrap_or_default();
    let found = rows.iter().find(|r| r.get("id").and_then(Value::as_str) == Some(region));
    let Some(found) = found else {
        return Err(ApiError::bad_request(format!("Region {region} does not exist"), field));
    };
    let capabilities = found.get("capabilities").and_then(Value::as_array).into_iter().flatten();
    if !capabilities.filter_map(Value::as_str).any(|c| c == OBJECT_STORAGE) {
        return Err(ApiError::bad_request(
            format!("Region {region} has no Object Storage, so images cannot be {done} there"),
            field,
        ));
    }
    Ok(())
}

/// `/images`: list (GET) and capture (POST).
pub async fn collection(
    State(app): State<App>,
    method: Method,
    caller: Result<Caller, ApiError>,
    request: ListRequest,
    body: Bytes,
) -> Reply {
    let caller = caller?;
    match method {
        Method::GET => {
            let filter = x_filter(&request.headers, images_resource(&app))?;
            let (query, sizes) = (request.query.as_deref(), page_sizes(&app));
            // A filter is tested on the fields it names, not on whole images.
            let fields = filter.fields();
            let matches = |image: &&Image, test: &Filter| test.matches(&image.fields(&fields));
            app.read(|s| {
                let images = s.visible_images(caller.0);
                list_lazily(images, ImageJson, matches, &filter, query, sizes, "data", EmptyList::Zeros)
            })
        }
        Method::POST => capture(&app, caller.account()?, &json_object(&body)?),
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// `/images/{id}`, `/images/{id}/regions` and `/images/upload`. Ids contain a slash, raw or
/// encoded; `rest` arrives percent-decoded.
pub async fn member(
    State(app): State<App>,
    Path(rest): Path<String>,
    method: Method,
    caller: Result<Caller, ApiError>,
    body: Bytes,
) -> Reply {
    let caller = caller?;
    if rest == "upload" {
        return match method {
            Method::POST => create_upload(&app, caller.account()?, &json_object(&body)?),
            _ => Err(ApiError::method_not_allowed()),
        };
    }
    if let Some(id) = rest.strip_suffix("/regions") {
        return match method {
            Method::POST => replicate(&app, caller.account()?, id, &json_object(&body)?),
            _ => Err(ApiError::method_not_allowed()),
        };
    }
    let id = rest.as_str();
    match method {
        Method::GET => {
            app.read(|s| s.find_image(caller.0, id).map(Image::to_json)).map(ok).ok_or_else(ApiError::not_found)
        }
        Method::PUT => update(&app, caller.account()?, id, &json_object(&body)?),
        Method::DELETE => delete(&app, caller.account()?, id),
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// Checks a body against the method's description, when the provider files describe it.
fn check(app: &App, method: &str, body: &Map<String, Value>) -> Result<(), ApiError> {
    let Some(method) = images_resource(app).methods.get(method) else {
        return Ok(());
    };
    let violations = check_body(method, body);
    if violations.is_empty() { Ok(()) } else { Err(ApiError::violations(violations)) }
}

fn text(body: &Map<String, Value>, key: &str) -> Option<String> {
    body.get(key).and_then(Value::as_str).map(str::to_string)
}

/// Tags as the API returns them: sorted, without duplicates.
pub(super) fn tags(body: &Map<String, Value>) -> Option<Vec<String>> {
    let mut tags: Vec<String> =
        body.get("tags")?.as_array()?.iter().filter_map(|t| t.as_str().map(str::to_string)).collect();
    tags.sort();
    tags.dedup();
    Some(tags)
}

/// Checks that `extra_mb` more storage and `extra_images` more custom images fit the limits.
fn check_limits(
    world: &World,
    account: usize,
    limits: Limits,
    extra_images: usize,
    extra_mb: u64,
) -> Result<(), ApiError> {
    let custom: Vec<&Image> = world.accounts[account].images.iter().filter(|i| i.counts_against_limits()).collect();
    if custom.len() + extra_images > limits.max_images {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("Image limit reached: an account may hold at most {} custom images", limits.max_images),
        ));
    }
    let used: u64 = custom.iter().map(|i| i.total_size()).sum();
    if used + extra_mb > limits.max_total_mb {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "Storage limit reached: custom images may use at most {} MB; {used} MB are in use and {extra_mb} MB more are needed",
                limits.max_total_mb
            ),
        ));
    }
    Ok(())
}

/// A new image of `account` with what the request body gives.
fn new_image(world: &mut World, account: usize, label: String, body: &Map<String, Value>) -> Image {
    let mut image = world.new_image(account, label);
    image.description = Some(text(body, "description").unwrap_or_default());
    image.tags = tags(body).unwrap_or_default();
    if body.get("cloud_init").and_then(Value::as_bool) == Some(true) {
        image.capabilities.push("cloud-init".into());
    }
    image
}

/// POST /images: capture a disk. The image is `creating` for a while that grows with its size.
fn capture(app: &App, account: usize, body: &Map<String, Value>) -> Reply {
    check(app, "post_image", body)?;
    let disk_id = body.get("disk_id").and_then(Value::as_u64).unwrap_or_default();
    let (pace, limits) = (app.options.pace, app.options.limits);
    let max_image_mb = upload_limits(app).uncompressed / MIB;
    let image = app.write(|world| {
        let (instance, disk) = world.accounts[account]
            .instances
            .iter()
            .find_map(|i| i.disks.iter().find(|d| d.id == disk_id).map(|d| (i, d)))
            .ok_or_else(|| ApiError::bad_request(format!("Disk {disk_id} does not exist on this account"), "disk_id"))?;
        if !disk.filesystem.can_be_imaged() {
            return Err(ApiError::bad_request(
                format!("Only ext3 and ext4 disks can be imaged; disk {disk_id} has a {} filesystem", disk.filesystem),
                "disk_id",
            ));
        }
        if disk.used as f64 >= max_image_mb as f64 * CAPTURE_USE_LIMIT {
            return Err(ApiError::bad_request(
                format!(
                    "Disk {disk_id} uses {} MB; a disk must use less than 90% of the {max_image_mb} MB image size limit ({} MB) to be imaged",
                    disk.used,
                    (max_image_mb as f64 * CAPTURE_USE_LIMIT) as u64
                ),
                "disk_id",
            ));
        }
        let (size, label, region) = (disk.used, disk.label.clone(), instance.region.clone());
        let entity = EventEntity::linode(instance);
        check_limits(world, account, limits, 1, size)?;
        let label = text(body, "label").unwrap_or(label);
        let mut image = new_image(world, account, label, body);
        image.start_capture(size, region, pace);
        let username = Some(world.accounts[account].username.clone());
        world.record_capture(account, entity, &image, username);
        world.accounts[account].images.push(image.clone());
        Ok(image)
    })?;
    Ok(ok(image.to_json()))
}

/// POST /images/upload: a `pending_upload` image and a URL to PUT the data to within 24 h.
fn create_upload(app: &App, account: usize, body: &Map<String, Value>) -> Reply {
    check(app, "post_upload_image", body)?;
    let region = text(body, "region").unwrap_or_default();
    let label = text(body, "label").unwrap_or_default();
    check_region(app, &region, "region", "uploaded")?;
    let secret = random_hex(24);
    let limits = app.options.limits;
    let image = app.write(|world| {
        check_limits(world, account, limits, 1, 0)?;
        let mut image = new_image(world, account, label, body);
        image.status = ImageStatus::PendingUpload;
        let expires = image.created + Duration::hours(UPLOAD_WINDOW_HOURS);
        image.upload = Some(UploadTicket { secret, region, expires });
        // It finishes when the data arrives, or fails when the URL expires.
        let mut event =
            world.user_event(account, EventAction::ImageUpload, EventStatus::Started, EventEntity::image(&image));
        event.ends = Some(EventEnd { at: expires, status: EventStatus::Failed });
        world.record(account, event);
        world.accounts[account].images.push(image.clone());
        Ok(image)
    })?;
    let ticket = image.upload.as_ref().expect("just created");
    let upload_to =
        format!("{}/sandbox-uploads/{}?Expires={}", app.origin, ticket.secret, ticket.expires.and_utc().timestamp());
    Ok(ok(json!({ "upload_to": upload_to, "image": image.to_json() })))
}

/// PUT to an upload URL: the gzip'd disk image. On success the image is `available`.
pub async fn receive_upload(
    State(app): State<App>,
    Path(secret): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    let find = |world: &World| {
        world.accounts.iter().enumerate().find_map(|(a, account)| {
            account
                .images
                .iter()
                .find(|i| i.upload.as_ref().is_some_and(|u| u.secret == secret))
                .map(|i| (a, i.id.clone()))
        })
    };
    // Expired uploads are gone after `advance`, so an unknown secret may be an expired one.
    let (account, id) = app
        .read(find)
        .ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "This upload URL is not valid or has expired"))?;
    let content_length =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let bytes = upload::receive(body, content_length, upload_limits(&app)).await?;
    let size = bytes.div_ceil(MIB);
    let limits = app.options.limits;
    app.write(|world| {
        let index = world.accounts[account]
            .images
            .iter()
            .position(|i| i.id == id && i.upload.as_ref().is_some_and(|u| u.secret == secret))
            .ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "This upload URL is not valid or has expired"))?;
        check_limits(world, account, limits, 0, size)?;
        let now = world.now();
        let image = &mut world.accounts[account].images[index];
        let ticket = image.upload.take().expect("found by its ticket");
        image.status = ImageStatus::Available;
        image.size = size;
        image.updated = now;
        image.regions = vec![RegionCopy::available(&ticket.region)];
        let url = EventEntity::image(image).url;
        let upload_event = world.accounts[account]
            .events
            .iter_mut()
            .rev()
            .find(|e| e.action == EventAction::ImageUpload && e.entity.url == url);
        if let Some(event) = upload_event {
            event.ends = Some(EventEnd { at: now, status: EventStatus::Finished });
        }
        Ok(())
    })?;
    Ok(ok(json!({})))
}

/// The account's own image `id`; public images are refused, others do not exist.
fn own_image(world: &World, account: usize, id: &str) -> Result<usize, ApiError> {
    if let Some(index) = world.accounts[account].images.iter().position(|i| i.id == id) {
        return Ok(index);
    }
    match world.public_images.iter().any(|i| i.id == id) {
        true => Err(ApiError::forbidden()),
        false => Err(ApiError::not_found()),
    }
}

/// PUT /images/{id}: label, description and tags; other fields are ignored.
fn update(app: &App, account: usize, id: &str, body: &Map<String, Value>) -> Reply {
    app.read(|world| own_image(world, account, id))?;
    check(app, "put_image", body)?;
    let image = app.write(|world| {
        let index = own_image(world, account, id)?;
        let now = world.now();
        let image = &mut world.accounts[account].images[index];
        if let Some(label) = text(body, "label") {
            image.label = label;
        }
        if let Some(description) = body.get("description") {
            image.description = Some(description.as_str().unwrap_or_default().to_string());
        }
        if let Some(tags) = tags(body) {
            image.tags = tags;
        }
        image.updated = now;
        let json = image.to_json();
        let entity = EventEntity::image(image);
        let event = world.user_event(account, EventAction::ImageUpdate, EventStatus::Notification, entity);
        world.record(account, event);
        Ok(json)
    })?;
    Ok(ok(image))
}

/// DELETE /images/{id}: the image and all its copies.
fn delete(app: &App, account: usize, id: &str) -> Reply {
    app.write(|world| {
        let index = own_image(world, account, id)?;
        let image = world.accounts[account].images.remove(index);
        let mut event =
            world.user_event(account, EventAction::ImageDelete, EventStatus::Notification, EventEntity::image(&image));
        event.message = Some(image.deletion_message());
        world.record(account, event);
        Ok(())
    })?;
    Ok(ok(json!({})))
}

/// POST /images/{id}/regions: `regions` is the complete desired set.
fn replicate(app: &App, account: usize, id: &str, body: &Map<String, Value>) -> Reply {
    app.read(|world| own_image(world, account, id))?;
    check(app, "post_replicate_image", body)?;
    let mut wanted: Vec<String> = Vec::new();
    for region in body["regions"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        if !wanted.iter().any(|w| w == region) {
            wanted.push(region.to_string());
        }
    }
    for region in &wanted {
        check_region(app, region, "regions", "stored")?;
    }
    let limits = app.options.limits;
    let image = app.write(|world| {
        let index = own_image(world, account, id)?;
        let image = &world.accounts[account].images[index];
        if image.status != ImageStatus::Available {
            return Err(ApiError::bad_request(
                format!("Image {id} is {}; only available images can be replicated", image.status),
                "regions",
            ));
        }
        let added = wanted.iter().filter(|w| !image.regions.iter().any(|c| &c.region == *w)).count() as u64;
        check_limits(world, account, limits, 0, added * image.size)?;
        let now = world.now();
        let image = &mut world.accounts[account].images[index];
        for copy in &mut image.regions {
            let keep = wanted.contains(&copy.region);
            if keep && copy.removing {
                *copy = RegionCopy {
                    region: copy.region.clone(),
                    status: RegionStatus::PendingReplication,
                    changed: Some(now),
                    removing: false,
                };
            } else if !keep && !copy.removing {
                copy.status = RegionStatus::PendingDeletion;
                copy.changed = Some(now);
                copy.removing = true;
            }
        }
        for region in &wanted {
            if !image.regions.iter().any(|c| &c.region == region) {
                image.regions.push(RegionCopy {
                    region: region.clone(),
                    status: RegionStatus::PendingReplication,
                    changed: Some(now),
                    removing: false,
                });
            }
        }
        image.updated = now;
        let json = image.to_json();
        // The API's event actions name no replication: the change of regions is an update.
        let entity = EventEntity::image(image);
        let mut event = world.user_event(account, EventAction::ImageUpdate, EventStatus::Notification, entity);
        event.message = Some(format!("Regions set to {}", wanted.join(", ")));
        world.record(account, event);
        Ok(json)
    })?;
    Ok(ok(image))
}
