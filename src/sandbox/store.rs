//! The sandbox's state: accounts, their private images, and the public images everyone sees.

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

pub fn format_time(t: NaiveDateTime) -> String {
    t.format(TIME_FORMAT).to_string()
}

mod time_format {
    use chrono::NaiveDateTime;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDateTime, D::Error> {
        let text = String::deserialize(d)?;
        NaiveDateTime::parse_from_str(&text, super::TIME_FORMAT).map_err(serde::de::Error::custom)
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
                .map(|text| NaiveDateTime::parse_from_str(&text, super::super::TIME_FORMAT))
                .transpose()
                .map_err(serde::de::Error::custom)
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegionStatus {
    pub region: String,
    pub status: String,
}

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
    pub kind: String,
    pub tags: Vec<String>,
    pub is_public: bool,
    pub is_shared: bool,
    pub deprecated: bool,
    pub vendor: Option<String>,
    #[serde(with = "time_format::option", default)]
    pub expiry: Option<NaiveDateTime>,
    #[serde(with = "time_format::option", default)]
    pub eol: Option<NaiveDateTime>,
    pub status: String,
    pub capabilities: Vec<String>,
    pub regions: Vec<RegionStatus>,
}

impl Image {
    /// The API's representation. Public and private images differ in field order and in
    /// which fields they carry, as the recorded responses do.
    pub fn to_json(&self) -> Value {
        let time = |t: &Option<NaiveDateTime>| t.map(format_time);
        let description = self.description.clone();
        if self.is_public {
            return json!({
                "id": self.id, "label": self.label, "deprecated": self.deprecated, "size": self.size,
                "created": format_time(self.created), "updated": format_time(self.updated),
                "description": description, "created_by": self.created_by, "type": self.kind,
                "tags": self.tags, "is_public": true, "is_shared": self.is_shared, "vendor": self.vendor,
                "expiry": time(&self.expiry), "eol": time(&self.eol), "regions": null,
                "status": self.status, "capabilities": self.capabilities, "image_sharing": null,
            });
        }
        let number = self.id.strip_prefix("private/").unwrap_or(&self.id);
        json!({
            "id": self.id, "label": self.label, "description": description,
            "created": format_time(self.created), "updated": format_time(self.updated),
            "size": self.size, "created_by": self.created_by, "type": self.kind, "tags": self.tags,
            "is_public": false, "is_shared": self.is_shared, "deprecated": self.deprecated,
            "vendor": self.vendor, "expiry": time(&self.expiry), "eol": time(&self.eol),
            "status": self.status, "capabilities": self.capabilities, "regions": self.regions,
            "total_size": self.total_size(),
            "image_sharing": {
                "shared_with": {"sharegroup_count": 0, "sharegroup_list_url": format!("/images/private/{number}/sharegroups")},
                "shared_by": null,
            },
        })
    }

    /// MB across every region that holds a copy (the size alone until the first region exists).
    pub fn total_size(&self) -> u64 {
        self.size * (self.regions.len().max(1) as u64)
    }

    pub fn to_object(&self) -> Map<String, Value> {
        match self.to_json() {
            Value::Object(map) => map,
            _ => unreachable!("an image is an object"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    pub name: String,
    pub token: String,
    pub username: String,
    /// Private images in ascending id order, the API's default listing order.
    pub images: Vec<Image>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub public_images: Vec<Image>,
    pub accounts: Vec<Account>,
    pub next_image_id: u64,
}

impl State {
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
}
