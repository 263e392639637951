//! The sandbox's state: accounts with their images, instances and disks; public images; and
//! the clock. Everything that changes over time (captures finishing, replicas moving between
//! states, uploads and recovery images expiring) is derived from stored timestamps by
//! [`State::advance`], so a state read back from disk behaves the same. Statuses, types and
//! filesystems are enums whose serialized names are the API's strings, so saved states and
//! answers read exactly as the API's do. Regions are not state: they are seed rows of the
//! provider files (see `images.rs`). Each account keeps its events (`GET /account/events`),
//! recorded as its images change; an event whose work takes time carries when it ends, so its
//! status is derived from the clock like everything else.

use chrono::{Datelike, Duration, NaiveDateTime, Timelike};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value, json};

pub const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

/// Recovery images expire this many days after the instance was deleted.
pub const RECOVERY_DAYS: i64 = 7;

/// `GET /account/events` shows the events of this many days.
const EVENT_DAYS: i64 = 90;

/// UTC now, to the second (the API's timestamps have no fraction).
pub fn wall_clock() -> NaiveDateTime {
    let now = chrono::Utc::now().naive_utc();
    now.with_nanosecond(0).unwrap_or(now)
}

/// A random, unguessable token of `bytes` bytes, in hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).expect("the operating system provides randomness");
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn format_time(t: NaiveDateTime) -> String {
    ApiTime(t).to_string()
}

/// A time as the API writes it ([`TIME_FORMAT`]), without parsing the format each time: a
/// page of images writes a thousand of them.
pub struct ApiTime(pub NaiveDateTime);

impl std::fmt::Display for ApiTime {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let t = self.0;
        let (date, time) = (t.date(), t.time());
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            date.year(),
            date.month(),
            date.day(),
            time.hour(),
            time.minute(),
            time.second()
        )
    }
}

pub fn parse_time(text: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text, TIME_FORMAT).ok()
}

mod time_format {
    use chrono::NaiveDateTime;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDateTime, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_time(&text).ok_or_else(|| serde::de::Error::custom(format!("bad timestamp {text}")))
    }

    pub mod option {
        use chrono::NaiveDateTime;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(t: &Option<NaiveDateTime>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveDateTime>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|text| {
                    super::super::parse_time(&text)
                        .ok_or_else(|| serde::de::Error::custom(format!("bad timestamp {text}")))
                })
                .transpose()
        }
    }
}

/// An enum whose values serialize as the API's strings, and print as them in messages.
macro_rules! api_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(match self { $($name::$variant => $text),+ })
            }
        }
    };
}

api_enum! {
    ImageStatus { Creating = "creating", PendingUpload = "pending_upload", Available = "available" }
}

api_enum! {
    /// `automatic` images are recovery images of deleted instances.
    ImageType { Manual = "manual", Automatic = "automatic" }
}

api_enum! {
    /// The status of an image's copy in one region.
    RegionStatus {
        Available = "available",
        Creating = "creating",
        Pending = "pending",
        PendingDeletion = "pending deletion",
        PendingReplication = "pending replication",
        Replicating = "replicating",
    }
}

api_enum! {
    Filesystem { Raw = "raw", Swap = "swap", Ext3 = "ext3", Ext4 = "ext4", Initrd = "initrd" }
}

impl Filesystem {
    /// Only ext3 and ext4 disks can be captured into images.
    pub fn can_be_imaged(self) -> bool {
        matches!(self, Filesystem::Ext3 | Filesystem::Ext4)
    }
}

api_enum! {
    /// The actions of `/account/events` that the sandbox records.
    EventAction {
        DiskImagize = "disk_imagize",
        ImageUpload = "image_upload",
        ImageUpdate = "image_update",
        ImageDelete = "image_delete",
        LinodeDelete = "linode_delete",
        LinodeCreate = "linode_create",
        LinodeRebuild = "linode_rebuild",
        LinodeUpdate = "linode_update",
        DiskCreate = "disk_create",
    }
}

api_enum! {
    EventStatus { Started = "started", Finished = "finished", Failed = "failed", Notification = "notification" }
}

/// What an event is about: `{id, label, type, url}` as the API sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventEntity {
    pub id: Value,
    pub label: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
}

impl EventEntity {
    /// An image as an event's entity: the API's entity ids are integers, so `private/42` is 42.
    pub fn image(image: &Image) -> EventEntity {
        let number = image.id.strip_prefix("private/").and_then(|n| n.parse::<u64>().ok());
        EventEntity {
            id: number.map(Value::from).unwrap_or_else(|| Value::from(image.id.clone())),
            label: image.label.clone(),
            kind: "image".into(),
            url: format!("/v4/images/{}", image.id),
        }
    }

    /// An image as an event's secondary entity, whose ids are strings: the image's own id.
    pub fn secondary_image(image: &Image) -> EventEntity {
        EventEntity { id: Value::from(image.id.clone()), ..EventEntity::image(image) }
    }

    pub fn linode(instance: &Instance) -> EventEntity {
        EventEntity {
            id: Value::from(instance.id),
            label: instance.label.clone(),
            kind: "linode".into(),
            url: format!("/v4/linode/instances/{}", instance.id),
        }
    }
}

/// One event of an account. The API keeps one event per action and moves its status from
/// `started` to `finished` (or `failed`); `ends` holds when that happens and the status then.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub id: u64,
    pub action: EventAction,
    #[serde(with = "time_format")]
    pub created: NaiveDateTime,
    pub username: Option<String>,
    pub entity: EventEntity,
    #[serde(default)]
    pub secondary_entity: Option<EventEntity>,
    pub status: EventStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends: Option<EventEnd>,
    #[serde(default)]
    pub message: Option<String>,
    /// Marked by `POST /account/events/{id}/seen` (this event and every older one).
    #[serde(default)]
    pub seen: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct EventEnd {
    #[serde(with = "time_format")]
    pub at: NaiveDateTime,
    pub status: EventStatus,
}

impl Event {
    /// An event of `action` on `entity`, created now by `username` (None for the system).
    pub fn new(action: EventAction, status: EventStatus, entity: EventEntity, created: NaiveDateTime) -> Event {
        Event {
            id: 0,
            action,
            created,
            username: None,
            entity,
            secondary_entity: None,
            status,
            ends: None,
            message: None,
            seen: false,
        }
    }

    /// The API's representation as of `now`.
    pub fn to_json(&self, now: NaiveDateTime) -> Value {
        let ended = self.ends.filter(|end| end.at <= now);
        let status = ended.map_or(self.status, |end| end.status);
        let percent_complete = match (status, self.ends) {
            (EventStatus::Notification, _) => Value::Null,
            (EventStatus::Started, Some(end)) if end.status == EventStatus::Finished => {
                let total = (end.at - self.created).num_seconds().max(1);
                Value::from(((now - self.created).num_seconds() * 100 / total).clamp(0, 99))
            }
            (EventStatus::Started, _) => Value::from(0),
            _ => Value::from(100),
        };
        let duration = ended.map(|end| (end.at - self.created).num_seconds() as f64);
        json!({
            "id": self.id, "action": self.action, "created": format_time(self.created), "duration": duration,
            "entity": self.entity, "message": self.message, "percent_complete": percent_complete,
            "rate": null, "read": false, "secondary_entity": self.secondary_entity, "seen": self.seen,
            "status": status, "time_remaining": null, "username": self.username,
        })
    }
}

/// One copy of an image in a region. `changed` is set while the copy is being added or
/// removed: its status is then derived from how long ago that started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegionCopy {
    pub region: String,
    pub status: RegionStatus,
    #[serde(with = "time_format::option", default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<NaiveDateTime>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removing: bool,
}

impl RegionCopy {
    pub fn available(region: &str) -> RegionCopy {
        RegionCopy { region: region.into(), status: RegionStatus::Available, changed: None, removing: false }
    }
}

/// An upload that has been asked for but whose data has not arrived.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadTicket {
    pub secret: String,
    pub region: String,
    #[serde(with = "time_format")]
    pub expires: NaiveDateTime,
}

/// The fields of a public image, in the order the API sends them.
const PUBLIC_FIELDS: [&str; 19] = [
    "id",
    "label",
    "deprecated",
    "size",
    "created",
    "updated",
    "description",
    "created_by",
    "type",
    "tags",
    "is_public",
    "is_shared",
    "vendor",
    "expiry",
    "eol",
    "regions",
    "status",
    "capabilities",
    "image_sharing",
];

/// The fields of a private image, in the order the API sends them.
const PRIVATE_FIELDS: [&str; 20] = [
    "id",
    "label",
    "description",
    "created",
    "updated",
    "size",
    "created_by",
    "type",
    "tags",
    "is_public",
    "is_shared",
    "deprecated",
    "vendor",
    "expiry",
    "eol",
    "status",
    "capabilities",
    "regions",
    "total_size",
    "image_sharing",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Image {
    pub id: String,
    pub label: String,
    pub description: Option<String>,
    #[serde(with = "time_format")]
    pub created: NaiveDateTime,
    #[serde(with = "time_format")]
    pub updated: NaiveDateTime,
    pub size: u64,
    pub created_by: String,
    #[serde(rename = "type")]
    pub kind: ImageType,
    pub tags: Vec<String>,
    pub is_public: bool,
    pub is_shared: bool,
    pub deprecated: bool,
    pub vendor: Option<String>,
    #[serde(with = "time_format::option", default)]
    pub expiry: Option<NaiveDateTime>,
    #[serde(with = "time_format::option", default)]
    pub eol: Option<NaiveDateTime>,
    pub status: ImageStatus,
    pub capabilities: Vec<String>,
    pub regions: Vec<RegionCopy>,
    /// A capture in progress: when it becomes available, and in which region.
    #[serde(with = "time_format::option", default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<NaiveDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadTicket>,
}

impl Image {
    /// A new private image of `username`: manual, untagged, in no region yet.
    pub fn private(id: String, label: String, username: &str, now: NaiveDateTime) -> Image {
        Image {
            id,
            label,
            description: Some(String::new()),
            created: now,
            updated: now,
            size: 0,
            created_by: username.into(),
            kind: ImageType::Manual,
            tags: vec![],
            is_public: false,
            is_shared: false,
            deprecated: false,
            vendor: None,
            expiry: None,
            eol: None,
            status: ImageStatus::Available,
            capabilities: vec![],
            regions: vec![],
            ready_at: None,
            capture_region: None,
            upload: None,
        }
    }

    /// The API's representation. Public and private images differ in field order and in
    /// which fields they carry, as the recorded responses do.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(ImageJson(self)).unwrap_or_default()
    }

    fn field_names(&self) -> &'static [&'static str] {
        if self.is_public { &PUBLIC_FIELDS } else { &PRIVATE_FIELDS }
    }

    /// Only the named fields of [`Image::to_json`] (null where an image has no such field):
    /// enough to test a filter without building the whole object.
    pub fn fields(&self, names: &[&str]) -> Map<String, Value> {
        let field = |name: &str| self.write_field(name, serde_json::value::Serializer).unwrap_or_default();
        names.iter().map(|name| (name.to_string(), field(name))).collect()
    }

    /// One field of the API's representation, written to any serializer: a page is written
    /// straight to bytes ([`ImageJson`]), a filter tests values.
    fn write_field<S: Serializer>(&self, name: &str, s: S) -> Result<S::Ok, S::Error> {
        let time = |t: &Option<NaiveDateTime>| t.map(format_time);
        match name {
            "id" => s.serialize_str(&self.id),
            "label" => s.serialize_str(&self.label),
            "description" => self.description.serialize(s),
            "created" => s.collect_str(&ApiTime(self.created)),
            "updated" => s.collect_str(&ApiTime(self.updated)),
            "size" => s.serialize_u64(self.size),
            "created_by" => self.created_by.serialize(s),
            "type" => self.kind.serialize(s),
            "tags" => self.tags.serialize(s),
            "is_public" => s.serialize_bool(self.is_public),
            "is_shared" => s.serialize_bool(self.is_shared),
            "deprecated" => s.serialize_bool(self.deprecated),
            "vendor" => self.vendor.serialize(s),
            "expiry" => time(&self.expiry).serialize(s),
            "eol" => time(&self.eol).serialize(s),
            "status" => self.status.serialize(s),
            "capabilities" => self.capabilities.serialize(s),
            "regions" if !self.is_public => {
                #[derive(Serialize)]
                struct Copy<'a> {
                    region: &'a str,
                    status: RegionStatus,
                }
                s.collect_seq(self.regions.iter().map(|r| Copy { region: &r.region, status: r.status }))
            }
            "total_size" if !self.is_public => s.serialize_u64(self.total_size()),
            "image_sharing" if !self.is_public => {
                let number = self.id.strip_prefix("private/").unwrap_or(&self.id);
                json!({
                    "shared_with": {"sharegroup_count": 0, "sharegroup_list_url": format!("/images/private/{number}/sharegroups")},
                    "shared_by": null,
                })
                .serialize(s)
            }
            _ => s.serialize_unit(),
        }
    }

    /// MB across every region that holds a copy (the size alone until the first copy exists).
    pub fn total_size(&self) -> u64 {
        self.size * (self.regions.len().max(1) as u64)
    }

    /// The `message` of the image's `image_delete` event: what the API's events leave out and a
    /// usage report needs, the size, billed copies (those available) and type the image had
    /// when it went.
    pub fn deletion_message(&self) -> String {
        let copies = self.regions.iter().filter(|r| !r.removing && r.status == RegionStatus::Available).count();
        format!("{} MB in {copies} regions, type {}", self.size, self.kind)
    }

    /// Recovery images are free and do not count against the account's limits.
    pub fn counts_against_limits(&self) -> bool {
        self.kind != ImageType::Automatic
    }

    /// Makes the image a capture of `size` MB that becomes available in `region` when the
    /// capture is done.
    pub fn start_capture(&mut self, size: u64, region: String, pace: Pace) {
        self.status = ImageStatus::Creating;
        self.size = size;
        self.ready_at = Some(self.created + pace.capture(size));
        self.capture_region = Some(region);
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Disk {
    pub id: u64,
    pub label: String,
    pub filesystem: Filesystem,
    /// MB.
    pub size: u64,
    /// MB in use; the real API does not show it, captures take it as the image size.
    pub used: u64,
    #[serde(with = "time_format")]
    pub created: NaiveDateTime,
    /// While the disk is being made: when it is ready.
    #[serde(with = "time_format::option", default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<NaiveDateTime>,
}

impl Disk {
    pub fn to_json(&self, now: NaiveDateTime) -> Value {
        let status = if self.ready_at.is_some_and(|at| now < at) { "not ready" } else { "ready" };
        json!({
            "id": self.id, "status": status, "label": self.label,
            "created": format_time(self.created), "updated": format_time(self.created),
            "filesystem": self.filesystem, "size": self.size, "disk_encryption": "disabled",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Instance {
    pub id: u64,
    pub label: String,
    pub region: String,
    #[serde(rename = "type")]
    pub plan: String,
    pub image: Option<String>,
    pub status: String,
    #[serde(with = "time_format")]
    pub created: NaiveDateTime,
    pub tags: Vec<String>,
    /// MB of disk space, memory, and vCPUs.
    pub disk: u64,
    pub memory: u64,
    pub vcpus: u64,
    pub disks: Vec<Disk>,
    /// While it is being made or rebuilt: how its status moves on the sandbox's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

/// An instance being made (`provisioning`) or rebuilt (`rebuilding`), then `booting` until it
/// is up, then `status` (running, or offline when it was not to boot).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Progress {
    pub doing: String,
    #[serde(with = "time_format")]
    pub booting_at: NaiveDateTime,
    #[serde(with = "time_format")]
    pub up_at: NaiveDateTime,
}

impl Instance {
    /// The status as of `now`.
    pub fn status_at(&self, now: NaiveDateTime) -> &str {
        match &self.progress {
            Some(p) if now < p.booting_at => &p.doing,
            Some(p) if now < p.up_at && self.status == "running" => "booting",
            _ => &self.status,
        }
    }

    pub fn to_json(&self, now: NaiveDateTime) -> Value {
        let n = self.id % 250;
        json!({
            "id": self.id, "label": self.label, "group": "", "status": self.status_at(now),
            "created": format_time(self.created), "updated": format_time(self.created),
            "type": self.plan, "ipv4": [format!("192.0.2.{n}")], "ipv6": format!("2001:db8::{n:x}/128"),
            "image": self.image, "region": self.region, "site_type": "core",
            "specs": {"disk": self.disk, "memory": self.memory, "vcpus": self.vcpus, "gpus": 0, "transfer": 1000},
            "hypervisor": "kvm", "watchdog_enabled": true, "tags": self.tags,
            "disk_encryption": "disabled", "lke_cluster_id": null, "placement_group": null,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    pub name: String,
    pub token: String,
    pub username: String,
    /// Private images in ascending id order, the API's default listing order.
    pub images: Vec<Image>,
    pub instances: Vec<Instance>,
    /// In the order they happened.
    #[serde(default)]
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub public_images: Vec<Image>,
    pub accounts: Vec<Account>,
    pub next_image_id: u64,
    /// Seconds added to the wall clock (the sandbox's clock can be moved forward).
    #[serde(default)]
    pub clock_offset: i64,
    #[serde(default = "first_event_id")]
    pub next_event_id: u64,
    /// The next instance and disk ids; 0 until the first is made (then from the largest seeded).
    #[serde(default)]
    pub next_linode_id: u64,
    #[serde(default)]
    pub next_disk_id: u64,
    /// Until when no transition is due, as the last [`State::advance`] found; `None` after
    /// any change, which may have started one.
    #[serde(skip)]
    pub quiet_until: Option<NaiveDateTime>,
}

fn first_event_id() -> u64 {
    1
}

/// How long simulated work takes, already multiplied by `--time-scale`.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub scale: f64,
}

impl Pace {
    fn scaled(&self, seconds: f64) -> Duration {
        Duration::milliseconds((seconds * self.scale * 1000.0).round() as i64)
    }

    /// A capture stays `creating` for 2 s plus 1 s per 700 MB, at most 10 s.
    pub fn capture(&self, size_mb: u64) -> Duration {
        self.scaled((2.0 + size_mb as f64 / 700.0).min(10.0))
    }

    /// Each replication step (pending → replicating → available; pending deletion → gone)
    /// lasts 1 s plus 1 s per 1500 MB, at most 5 s.
    pub fn replication_step(&self, size_mb: u64) -> Duration {
        self.scaled((1.0 + size_mb as f64 / 1500.0).min(5.0))
    }

    /// An instance is made (or rebuilt) in 3 s, then boots in 2 s; a disk is made in 2 s.
    pub fn provision(&self) -> Duration {
        self.scaled(3.0)
    }

    pub fn boot(&self) -> Duration {
        self.scaled(2.0)
    }

    pub fn disk(&self) -> Duration {
        self.scaled(2.0)
    }
}

impl State {
    pub fn now(&self) -> NaiveDateTime {
        wall_clock() + Duration::seconds(self.clock_offset)
    }

    pub fn account_by_token(&self, token: &str) -> Option<usize> {
        self.accounts.iter().position(|a| a.token == token)
    }

    /// Every image `account` can see, in the API's default order: its private images by
    /// ascending id, then the public ones.
    pub fn visible_images(&self, account: Option<usize>) -> impl Iterator<Item = &Image> {
        let private = account.map(|a| self.accounts[a].images.as_slice()).unwrap_or_default();
        private.iter().chain(self.public_images.iter())
    }

    pub fn find_image(&self, account: Option<usize>, id: &str) -> Option<&Image> {
        self.visible_images(account).find(|i| i.id == id)
    }

    /// The next instance id: after every one made so far, of every account.
    pub fn new_linode_id(&mut self) -> u64 {
        if self.next_linode_id == 0 {
            let ids = self.accounts.iter().flat_map(|a| a.instances.iter().map(|i| i.id));
            self.next_linode_id = ids.max().unwrap_or(0).max(100_000) + 1;
        }
        self.next_linode_id += 1;
        self.next_linode_id - 1
    }

    /// The next disk id, as [`State::new_linode_id`].
    pub fn new_disk_id(&mut self) -> u64 {
        if self.next_disk_id == 0 {
            let ids = self.accounts.iter().flat_map(|a| a.instances.iter().flat_map(|i| i.disks.iter().map(|d| d.id)));
            self.next_disk_id = ids.max().unwrap_or(0).max(200_000) + 1;
        }
        self.next_disk_id += 1;
        self.next_disk_id - 1
    }

    fn new_image_id(&mut self) -> String {
        let id = self.next_image_id;
        self.next_image_id += 1;
        format!("private/{id}")
    }

    /// A new private image of `account` with the next id, not yet added to the account.
    pub fn new_image(&mut self, account: usize, label: String) -> Image {
        let (id, now) = (self.new_image_id(), self.now());
        Image::private(id, label, &self.accounts[account].username, now)
    }

    /// Adds `event` to `account`'s events with the next id.
    pub fn record(&mut self, account: usize, mut event: Event) {
        event.id = self.next_event_id;
        self.next_event_id += 1;
        self.accounts[account].events.push(event);
    }

    /// An event that `account`'s user causes now.
    pub fn user_event(&self, account: usize, action: EventAction, status: EventStatus, entity: EventEntity) -> Event {
        let mut event = Event::new(action, status, entity, self.now());
        event.username = Some(self.accounts[account].username.clone());
        event
    }

    /// Records the `disk_imagize` event of a capture that has just started: its entity is the
    /// instance, its secondary entity the image, and it finishes when the image is ready.
    pub fn record_capture(&mut self, account: usize, instance: EventEntity, image: &Image, username: Option<String>) {
        let mut event = Event::new(EventAction::DiskImagize, EventStatus::Started, instance, image.created);
        event.username = username;
        event.secondary_entity = Some(EventEntity::secondary_image(image));
        event.ends = image.ready_at.map(|at| EventEnd { at, status: EventStatus::Finished });
        self.record(account, event);
    }

    /// Deleting an instance leaves a free recovery image of its largest ext3/ext4 disk, which
    /// expires after [`RECOVERY_DAYS`]; this adds it (when there is such a disk). The system
    /// makes it, so its `disk_imagize` event has no username.
    pub fn add_recovery_image(&mut self, account: usize, instance_index: usize, pace: Pace) {
        let instance = &self.accounts[account].instances[instance_index];
        let Some(disk) = instance.disks.iter().filter(|d| d.filesystem.can_be_imaged()).max_by_key(|d| d.size) else {
            return;
        };
        let (size, region, entity) = (disk.used, instance.region.clone(), EventEntity::linode(instance));
        let mut label = format!("{}-recovery", instance.label);
        label.truncate(50);
        let mut image = self.new_image(account, label);
        image.kind = ImageType::Automatic;
        image.expiry = Some(image.created + Duration::days(RECOVERY_DAYS));
        image.start_capture(size, region, pace);
        self.record_capture(account, entity, &image, None);
        self.accounts[account].images.push(image);
    }

    /// The events `account` can list: those of the last 90 days, newest first, as the API
    /// answers them now.
    pub fn visible_events(&self, account: usize) -> Vec<Map<String, Value>> {
        let now = self.now();
        let oldest = now - Duration::days(EVENT_DAYS);
        let events = self.accounts[account].events.iter().rev().filter(|e| e.created >= oldest);
        events
            .map(|e| match e.to_json(now) {
                Value::Object(map) => map,
                _ => unreachable!("an event is an object"),
            })
            .collect()
    }

    /// Whether no transition is due now.
    pub fn is_quiet(&self) -> bool {
        self.quiet_until.is_some_and(|quiet| self.now() < quiet)
    }

    /// Applies every transition due by now. Reads call it on every request: it looks at the
    /// images only when something was due or has changed since.
    pub fn advance(&mut self, pace: Pace) {
        if self.is_quiet() {
            return;
        }
        let now = self.now();
        let mut next = NaiveDateTime::MAX;
        let mut due = |at: NaiveDateTime| next = next.min(at);
        let mut expired = Vec::new();
        for (index, account) in self.accounts.iter_mut().enumerate() {
            account.images.retain(|image| {
                // An expired upload's `image_upload` event fails by itself (see `Event::ends`).
                let upload_expired = image.upload.as_ref().is_some_and(|u| u.expires <= now);
                let recovery_expiry = image.expiry.filter(|e| image.kind == ImageType::Automatic && *e <= now);
                if let Some(at) = recovery_expiry {
                    let mut event =
                        Event::new(EventAction::ImageDelete, EventStatus::Notification, EventEntity::image(image), at);
                    event.message = Some(image.deletion_message());
                    expired.push((index, event));
                }
                let gone = upload_expired || recovery_expiry.is_some();
                if !gone {
                    image.upload.iter().for_each(|u| due(u.expires));
                    image.expiry.filter(|_| image.kind == ImageType::Automatic).into_iter().for_each(&mut due);
                }
                !gone
            });
            for image in &mut account.images {
                if image.status == ImageStatus::Creating
                    && let Some(ready) = image.ready_at
                    && ready <= now
                {
                    image.status = ImageStatus::Available;
                    image.ready_at = None;
                    let region = image.capture_region.take().unwrap_or_else(|| "us-east".into());
                    image.regions = vec![RegionCopy::available(&region)];
                }
                if image.status == ImageStatus::Creating {
                    image.ready_at.into_iter().for_each(&mut due);
                }
                let step = pace.replication_step(image.size);
                image.regions.retain_mut(|copy| {
                    let Some(changed) = copy.changed else {
                        return true;
                    };
                    let elapsed = now - changed;
                    if copy.removing {
                        due(changed + step);
                        return elapsed < step;
                    }
                    copy.status = if elapsed >= step * 2 {
                        copy.changed = None;
                        RegionStatus::Available
                    } else if elapsed >= step {
                        due(changed + step * 2);
                        RegionStatus::Replicating
                    } else {
                        due(changed + step);
                        RegionStatus::PendingReplication
                    };
                    true
                });
            }
        }
        // Ids follow time, whichever account an expiry belongs to.
        expired.sort_by_key(|(_, event)| event.created);
        for (account, event) in expired {
            self.record(account, event);
        }
        self.quiet_until = Some(next);
    }
}

/// An image as the API represents it, serialised field by field without building values.
pub struct ImageJson<'a>(pub &'a Image);

impl Serialize for ImageJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Field<'a>(&'a Image, &'a str);
        impl Serialize for Field<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.write_field(self.1, s)
            }
        }
        let names = self.0.field_names();
        let mut map = s.serialize_map(Some(names.len()))?;
        for name in names {
            map.serialize_entry(name, &Field(self.0, name))?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_the_format_says() {
        for text in ["2025-03-01T10:00:00", "1999-12-31T23:59:59", "2026-01-05T04:03:02"] {
            let time = parse_time(text).unwrap();
            assert_eq!(format_time(time), time.format(TIME_FORMAT).to_string());
            assert_eq!(format_time(time), text);
        }
    }

    /// States saved before these fields were enums must read back, and write the same strings.
    #[test]
    fn enums_keep_the_api_strings() {
        let saved = json!({
            "id": 12, "label": "d", "filesystem": "ext4", "size": 1, "used": 1, "created": "2025-03-01T10:00:00"
        });
        let disk: Disk = serde_json::from_value(saved.clone()).unwrap();
        assert_eq!(disk.filesystem, Filesystem::Ext4);
        assert_eq!(serde_json::to_value(&disk).unwrap(), saved);
        let copy: RegionCopy =
            serde_json::from_value(json!({"region": "us-east", "status": "pending replication"})).unwrap();
        assert_eq!(
            (copy.status, copy.status.to_string()),
            (RegionStatus::PendingReplication, "pending replication".into())
        );
        let mut image = Image::private("private/1".into(), "x".into(), "u", parse_time("2025-03-01T10:00:00").unwrap());
        image.status = ImageStatus::PendingUpload;
        image.kind = ImageType::Automatic;
        let json = image.to_json();
        assert_eq!((json["status"].as_str(), json["type"].as_str()), (Some("pending_upload"), Some("automatic")));
        assert_eq!(
            serde_json::from_value::<Image>(serde_json::to_value(&image).unwrap()).unwrap().status,
            image.status
        );
    }
}
