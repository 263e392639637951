//! The seeded world: public images modelled on a recorded real list, a default account with a
//! varied set of private images and instances, and optional generated images for scale tests.
//! This is the state that changes; read-only resources (regions) are seeded by the provider
//! files' seed data instead.

use chrono::{Duration, NaiveDateTime};
use serde::Deserialize;

use super::store::{
    Account, Disk, Filesystem, Image, ImageStatus, ImageType, Instance, RECOVERY_DAYS, RegionCopy, State, TIME_FORMAT,
    UploadTicket, random_hex,
};

const PUBLIC_IMAGES: &str = include_str!("seed/public_images.json");
const PRIVATE_IMAGES: &str = include_str!("seed/private_images.json");

/// The username shown as `created_by` on the default account's images.
pub const DEFAULT_USERNAME: &str = "sandbox-user";

/// First id for generated images, far from the hand-written ones.
const GENERATED_BASE_ID: u64 = 200_000;

#[derive(Deserialize)]
struct PublicSeed {
    id: String,
    label: String,
    size: u64,
    vendor: String,
    deprecated: bool,
    capabilities: Vec<String>,
    created: String,
    eol: Option<String>,
}

#[derive(Deserialize)]
struct PrivateSeed {
    id: u64,
    label: String,
    description: String,
    created: Option<String>,
    updated: Option<String>,
    /// Instead of `created`: how long before the sandbox first started, for images whose
    /// state depends on the time (recovery images expire, uploads and captures finish).
    created_hours_ago: Option<i64>,
    ready_in_minutes: Option<i64>,
    upload_hours_left: Option<i64>,
    size: u64,
    tags: Vec<String>,
    status: ImageStatus,
    #[serde(rename = "type")]
    kind: ImageType,
    capabilities: Vec<String>,
    regions: Vec<RegionCopy>,
}

fn time(text: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(text, TIME_FORMAT).expect("seed timestamps are well formed")
}

pub struct SeedOptions {
    pub token: String,
    pub extra_accounts: Vec<(String, String)>,
    pub generated_images: u64,
    /// Accounts of an accounts file: each with its own instances and `generated_images`
    /// generated private images of its own.
    pub seeded_accounts: Vec<(String, String)>,
}

/// The world as of `now`, the sandbox's first start.
pub fn initial_state(options: &SeedOptions, now: NaiveDateTime) -> State {
    let public: Vec<PublicSeed> = serde_json::from_str(PUBLIC_IMAGES).expect("embedded seed is valid");
    let public_images = public
        .into_iter()
        .map(|p| Image {
            id: p.id,
            label: p.label,
            description: Some(String::new()),
            created: time(&p.created),
            updated: time(&p.created),
            size: p.size,
            created_by: "linode".into(),
            kind: ImageType::Manual,
            tags: vec![],
            is_public: true,
            is_shared: false,
            deprecated: p.deprecated,
            vendor: Some(p.vendor),
            expiry: None,
            eol: p.eol.as_deref().map(time),
            status: ImageStatus::Available,
            capabilities: p.capabilities,
            regions: vec![],
            ready_at: None,
            capture_region: None,
            upload: None,
        })
        .collect();

    let private: Vec<PrivateSeed> = serde_json::from_str(PRIVATE_IMAGES).expect("embedded seed is valid");
    let mut images: Vec<Image> = private
        .into_iter()
        .map(|p| {
            private_image(p.id, p.label, DEFAULT_USERNAME, |img| {
                let created = match (p.created_hours_ago, &p.created) {
                    (Some(hours), _) => now - Duration::hours(hours),
                    (None, Some(text)) => time(text),
                    (None, None) => now,
                };
                img.description = Some(p.description);
                img.created = created;
                img.updated = p.updated.as_deref().map(time).unwrap_or(created);
                img.size = p.size;
                img.tags = p.tags;
                img.status = p.status;
                img.kind = p.kind;
                if img.kind == ImageType::Automatic {
                    img.expiry = Some(created + Duration::days(RECOVERY_DAYS));
                }
                img.ready_at = p.ready_in_minutes.map(|m| now + Duration::minutes(m));
                img.capture_region = img.ready_at.map(|_| "us-east".to_string());
                img.upload = p.upload_hours_left.map(|hours| UploadTicket {
                    secret: random_hex(24),
                    region: "us-east".into(),
                    expires: now + Duration::hours(hours),
                });
                img.capabilities = p.capabilities;
                img.regions = p.regions;
            })
        })
        .collect();
    let per_account = options.generated_images;
    images.extend((0..per_account).map(|n| generated_image(n, DEFAULT_USERNAME)));

    let mut accounts = vec![Account {
        name: "default".into(),
        token: options.token.clone(),
        username: DEFAULT_USERNAME.into(),
        images,
        instances: instances(0),
        events: vec![],
    }];
    for (name, token) in &options.extra_accounts {
        accounts.push(extra_account(accounts.len(), name, token));
    }
    // Each seeded account's images follow the previous account's, ids and all.
    for (k, (name, token)) in options.seeded_accounts.iter().enumerate() {
        let mut account = extra_account(accounts.len(), name, token);
        let first = (k as u64 + 1) * per_account;
        account.images = (first..first + per_account).map(|n| generated_image(n, name)).collect();
        accounts.push(account);
    }
    let next_image_id = GENERATED_BASE_ID + (options.seeded_accounts.len() as u64 + 1) * per_account + 1;
    State {
        public_images,
        accounts,
        next_image_id,
        clock_offset: 0,
        next_event_id: 1,
        next_linode_id: 0,
        next_disk_id: 0,
        quiet_until: None,
    }
}

/// A saved state brought in line with the options: the default account takes `--token`,
/// and `--account` entries it does not have yet are added.
pub fn reconcile(mut state: State, options: &SeedOptions) -> State {
    if let Some(default) = state.accounts.first_mut() {
        default.token = options.token.clone();
    }
    // Accounts new to a saved state get their instances; images are seeded on a first start.
    for (name, token) in options.extra_accounts.iter().chain(&options.seeded_accounts) {
        match state.accounts.iter_mut().find(|a| &a.name == name) {
            Some(account) => account.token = token.clone(),
            None => {
                let account = extra_account(state.accounts.len(), name, token);
                state.accounts.push(account);
            }
        }
    }
    state
}

/// An account added by `--account`: its own instances and disks, no private images.
pub fn extra_account(index: usize, name: &str, token: &str) -> Account {
    Account {
        name: name.into(),
        token: token.into(),
        username: name.into(),
        images: vec![],
        instances: instances(index),
        events: vec![],
    }
}

/// Three instances per account with capturable ext4/ext3 disks, a too-full ext4 disk, a raw
/// disk and swap disks. Ids are spread by account so that no two accounts share one.
fn instances(account: usize) -> Vec<Instance> {
    let base = 100 * account as u64;
    let created = time("2025-03-01T10:00:00");
    let disk = |id: u64, label: &str, filesystem: Filesystem, size: u64, used: u64| Disk {
        id: 67890 + base + id,
        label: label.into(),
        filesystem,
        size,
        used,
        created,
        ready_at: None,
    };
    let instance =
        |id: u64, label: &str, region: &str, plan: &str, image: &str, size: u64, disks: Vec<Disk>| Instance {
            id: 12345 + base + id,
            label: label.into(),
            region: region.into(),
            plan: plan.into(),
            image: Some(image.into()),
            status: "running".into(),
            created,
            tags: vec![],
            disk: size,
            memory: size / 25,
            vcpus: (size / 25600).max(1),
            disks,
            progress: None,
        };
    vec![
        instance(
            0,
            "web-1",
            "us-east",
            "g6-standard-2",
            "linode/debian12",
            81920,
            vec![
                disk(0, "Debian 12 Disk", Filesystem::Ext4, 25088, 2430),
                disk(1, "512 MB Swap Image", Filesystem::Swap, 512, 0),
            ],
        ),
        instance(
            1,
            "db-1",
            "us-ord",
            "g6-standard-4",
            "linode/ubuntu24.04",
            163840,
            vec![
                disk(2, "Ubuntu 24.04 Disk", Filesystem::Ext4, 51200, 5800),
                disk(3, "scratch", Filesystem::Raw, 10240, 10240),
                disk(4, "512 MB Swap Image", Filesystem::Swap, 512, 0),
            ],
        ),
        instance(
            2,
            "build-box",
            "eu-west",
            "g6-nanode-1",
            "linode/alpine3.22",
            25600,
            vec![
                disk(5, "Alpine Disk", Filesystem::Ext3, 8192, 700),
                disk(6, "256 MB Swap Image", Filesystem::Swap, 256, 0),
            ],
        ),
    ]
}

fn private_image(id: u64, label: String, username: &str, customize: impl FnOnce(&mut Image)) -> Image {
    let mut image = Image::private(format!("private/{id}"), label, username, time("2024-01-01T00:00:00"));
    customize(&mut image);
    image
}

/// A deterministic pseudo-random private image: the same `n` always gives the same image.
fn generated_image(n: u64, username: &str) -> Image {
    const TAGS: [&str; 6] = ["prod", "staging", "web", "db", "batch", "golden"];
    const REGIONS: [&str; 5] = ["us-east", "us-iad", "us-ord", "eu-west", "ap-south"];
    // A splitmix64 step: cheap, stable across platforms and releases.
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    let r = z ^ (z >> 31);
    let pick = |shift: u32, modulo: u64| (r >> shift) % modulo;
    private_image(GENERATED_BASE_ID + n + 1, format!("gen-image-{:05}", n + 1), username, |img| {
        img.created = time("2024-01-01T00:00:00") + Duration::minutes((n * 37) as i64);
        img.updated = img.created;
        img.size = 100 + pick(0, 6000);
        let mut tags: Vec<String> =
            (0..pick(13, 3)).map(|k| TAGS[((r >> (17 + 3 * k)) % 6) as usize].to_string()).collect();
        tags.sort();
        tags.dedup();
        img.tags = tags;
        let region_count = 1 + pick(29, 2) as usize;
        img.regions =
            (0..region_count).map(|k| RegionCopy::available(REGIONS[((r >> (33 + 3 * k)) % 5) as usize])).collect();
        img.regions.dedup_by(|a, b| a.region == b.region);
        if pick(45, 10) == 0 {
            img.capabilities = vec!["cloud-init".into()];
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_is_varied_and_deterministic() {
        let options =
            SeedOptions { token: "t".into(), extra_accounts: vec![], generated_images: 50, seeded_accounts: vec![] };
        let now = time("2026-11-22T12:00:00");
        let a = initial_state(&options, now);
        assert_eq!(a.public_images.len(), 40);
        let images = &a.accounts[0].images;
        assert_eq!(images.len(), 14 + 50);
        for status in [ImageStatus::Available, ImageStatus::Creating, ImageStatus::PendingUpload] {
            assert!(images.iter().any(|i| i.status == status), "{status}");
        }
        assert!(images.iter().any(|i| i.kind == ImageType::Automatic && i.expiry.is_some()));
        let b = initial_state(&options, now);
        let view = |s: &State| s.accounts[0].images.iter().map(Image::to_json).collect::<Vec<_>>();
        assert_eq!(view(&a), view(&b));
    }
}
