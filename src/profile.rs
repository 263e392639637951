/*! Profiles: the token and defaults a command line takes from configuration files.

Two files are read, both made of `[section]` headers and `key = value` lines:
- imageql's own, `$XDG_CONFIG_HOME/imageql/config.toml` (`~/.config/imageql/config.toml`), a
  small subset of TOML: an optional top-level `default_profile = "NAME"` and sections
  `[profiles.NAME]` with `token`, `api_url` and `output`;
- linode-cli's, found as linode-cli finds it (`$LINODE_CLI_CONFIG`, `~/.linode-cli`, then
  `$XDG_CONFIG_HOME/linode-cli`): `[DEFAULT]` names the `default-user`, and a section per user
  holds its `token` and, optionally, `api_host`, `api_scheme` and `api_version`.

Both may give the defaults linode-cli applies when an instance is made (`region`, `type`,
`image`, `authorized_keys`, `authorized_users`); an INSERT that leaves such a field out takes
the profile's value, as `linode-cli linodes create` does.

`--profile NAME` picks a section of imageql's file, or else a linode-cli user. Without it,
imageql's `default_profile` applies, or else linode-cli's `default-user`. The token is read
into an [`api::Token`](crate::api::Token) and never appears in a message. */

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::mutate::Defaults;

/// What a profile gives; the command line's own options and `LINODE_TOKEN` come first.
#[derive(Default)]
pub struct Profile {
    pub token: Option<String>,
    pub api_url: Option<String>,
    pub output: Option<String>,
    pub defaults: Defaults,
}

/// The defaults linode-cli keeps per user and applies to the instances it makes.
const DEFAULT_KEYS: [&str; 5] = ["region", "type", "image", "authorized_keys", "authorized_users"];

fn defaults_of(get: impl Fn(&str) -> Option<String>) -> Defaults {
    DEFAULT_KEYS.iter().filter_map(|key| Some((key.to_string(), get(key)?))).collect()
}

/// The profile `name`, or the default one if the files name one.
pub fn select(name: Option<&str>) -> Result<Option<Profile>, Error> {
    let ours = imageql_config().map(|path| read(&path).map(|text| (path, parse(&text)))).transpose()?;
    let theirs = linode_cli_config().map(|path| read(&path).map(|text| (path, parse(&text)))).transpose()?;
    let wanted = match name {
        Some(name) => Some(name.to_string()),
        None => ours.as_ref().and_then(|(_, sections)| value(sections, "", "default_profile")),
    };
    if let (Some(wanted), Some((_, sections))) = (&wanted, &ours) {
        let section = format!("profiles.{wanted}");
        if sections.iter().any(|(s, _, _)| *s == section) {
            let get = |key: &str| value(sections, &section, key);
            return Ok(Some(Profile {
                token: get("token"),
                api_url: get("api_url"),
                output: get("output"),
                defaults: defaults_of(get),
            }));
        }
    }
    let user = match (&name, &theirs) {
        (Some(name), _) => Some(name.to_string()),
        (None, Some((_, sections))) => value(sections, "DEFAULT", "default-user"),
        (None, None) => None,
    };
    if let (Some(user), Some((_, sections))) = (&user, &theirs)
        && user != "DEFAULT"
        && sections.iter().any(|(s, _, _)| s == user)
    {
        // configparser lets [DEFAULT] give any key to every section.
        let get = |key: &str| value(sections, user, key).or_else(|| value(sections, "DEFAULT", key));
        let api_url = get("api_host").map(|host| {
            let scheme = get("api_scheme").unwrap_or_else(|| "https".into());
            let version = get("api_version").unwrap_or_else(|| "v4".into());
            format!("{scheme}://{}/{version}", host.trim_end_matches('/'))
        });
        return Ok(Some(Profile { token: get("token"), api_url, output: None, defaults: defaults_of(get) }));
    }
    match wanted.or(user) {
        Some(missing) if name.is_some() || ours.is_some() => {
            let mut known: Vec<String> = Vec::new();
            let mut looked = Vec::new();
            if let Some((path, sections)) = &ours {
                known.extend(sections.iter().filter_map(|(s, _, _)| s.strip_prefix("profiles.").map(str::to_string)));
                looked.push(path.display().to_string());
            }
            if let Some((path, sections)) = &theirs {
                known.extend(sections.iter().map(|(s, _, _)| s.clone()).filter(|s| !s.is_empty() && s != "DEFAULT"));
                looked.push(path.display().to_string());
            }
            known.dedup();
            let looked = if looked.is_empty() { "no configuration file exists".into() } else { looked.join(" and ") };
            let known = if known.is_empty() { "none".into() } else { known.join(", ") };
            Err(Error::Usage(format!(
                "no profile {missing:?} (looked in {looked}; profiles there: {known}); add a [profiles.{missing}] \
                 section to {}",
                imageql_config()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "~/.config/imageql/config.toml".into())
            )))
        }
        _ => Ok(None),
    }
}

/// An account set as the command line names it.
pub enum SetSpec<'a> {
    /// `--all-profiles`: every profile of both files.
    All,
    /// `--profile a,b` or a group's name: names, groups of imageql's file and wildcards.
    Names(&'a str),
}

/// Whether `--profile NAME` names an account set: several names, a wildcard, or a group of
/// imageql's file (`[groups.NAME] profiles = ["acme", "cust_*"]`).
pub fn names_a_set(name: &str) -> Result<bool, Error> {
    if name.contains([',', '*', '?']) {
        return Ok(true);
    }
    let ours = imageql_config().map(|path| read(&path).map(|text| parse(&text))).transpose()?;
    Ok(ours.is_some_and(|sections| sections.iter().any(|(s, _, _)| *s == format!("groups.{name}"))))
}

/// The profiles of an account set, each with what it gives, in the order named.
pub fn select_set(spec: SetSpec) -> Result<Vec<(String, Profile)>, Error> {
    let ours = imageql_config().map(|path| read(&path).map(|text| parse(&text))).transpose()?.unwrap_or_default();
    let theirs = linode_cli_config().map(|path| read(&path).map(|text| parse(&text))).transpose()?.unwrap_or_default();
    let mut known: Vec<String> =
        ours.iter().filter_map(|(s, _, _)| s.strip_prefix("profiles.").map(str::to_string)).collect();
    known.extend(theirs.iter().map(|(s, _, _)| s.clone()).filter(|s| !s.is_empty() && s != "DEFAULT"));
    let mut seen = std::collections::HashSet::new();
    known.retain(|name| seen.insert(name.clone()));
    let wanted: Vec<String> = match spec {
        SetSpec::All => known.clone(),
        SetSpec::Names(text) => {
            let mut names = Vec::new();
            for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let group = value(&ours, &format!("groups.{part}"), "profiles");
                let patterns = match &group {
                    Some(list) => list_items(list),
                    None => vec![part.to_string()],
                };
                for pattern in patterns {
                    let matched: Vec<&String> = known.iter().filter(|name| wildcard(&pattern, name)).collect();
                    if matched.is_empty() {
                        return Err(Error::Usage(format!(
                            "no profile matches {pattern:?}{}; profiles: {}",
                            group.as_ref().map(|_| format!(" (in group {part})")).unwrap_or_default(),
                            if known.is_empty() { "none".to_string() } else { known.join(", ") }
                        )));
                    }
                    names.extend(matched.into_iter().cloned());
                }
            }
            names
        }
    };
    let mut seen = std::collections::HashSet::new();
    let mut set = Vec::new();
    for name in wanted.into_iter().filter(|name| seen.insert(name.clone())) {
        let profile = select(Some(&name))?.unwrap_or_default();
        set.push((name, profile));
    }
    if set.is_empty() {
        let why = if known.is_empty() { "no profile is configured" } else { "it names no profile" };
        return Err(Error::Usage(format!("the account set is empty: {why}; profiles: {}", known.join(", "))));
    }
    Ok(set)
}

/// The strings of a TOML list of strings: `["acme", "cust_*"]`.
fn list_items(text: &str) -> Vec<String> {
    let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
    inner.split(',').map(|item| item.trim().trim_matches(['"', '\'']).to_string()).filter(|i| !i.is_empty()).collect()
}

/// Whether `name` matches `pattern`, where `*` is any run of characters and `?` any one.
fn wildcard(pattern: &str, name: &str) -> bool {
    fn matches(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => matches(&p[1..], n) || (!n.is_empty() && matches(p, &n[1..])),
            (Some('?'), Some(_)) => matches(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => matches(&p[1..], &n[1..]),
            _ => false,
        }
    }
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    matches(&p, &n)
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::File { path: path.display().to_string(), source })
}

fn config_home() -> Option<PathBuf> {
    match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir)),
        None => std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")),
    }
}

/// imageql's configuration file, if it exists.
fn imageql_config() -> Option<PathBuf> {
    config_home().map(|dir| dir.join("imageql/config.toml")).filter(|p| p.is_file())
}

/// linode-cli's configuration file, where linode-cli looks for it, if it exists.
fn linode_cli_config() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("LINODE_CLI_CONFIG").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let legacy = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".linode-cli"));
    legacy.filter(|p| p.is_file()).or_else(|| config_home().map(|dir| dir.join("linode-cli")).filter(|p| p.is_file()))
}

/// `(section, key, value)` for each `key = value` line; keys before any header have the
/// section `""`. Quoted values (TOML strings) are unquoted; `#` and `;` start comments.
fn parse(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut entries = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = section_name(name);
            continue;
        }
        let Some((key, value)) = line.split_once('=').or_else(|| line.split_once(':')) else { continue };
        let value = value.trim();
        let quoted = ['"', '\''].into_iter().find_map(|q| value.strip_prefix(q).and_then(|v| v.split_once(q)));
        let value = match quoted {
            Some((inside, _)) => inside.to_string(),
            None => value.split(" #").next().unwrap_or_default().trim().to_string(),
        };
        entries.push((section.clone(), key.trim().to_string(), value));
    }
    entries
}

/// A section header's name with TOML's quoted keys unquoted: `profiles."cust.one"` is
/// `profiles.cust.one`, whose profile is `cust.one`; an INI header is taken as it is.
fn section_name(header: &str) -> String {
    let mut parts = Vec::new();
    let mut part = String::new();
    let mut quote = None;
    for c in header.trim().chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '.') => parts.push(std::mem::take(&mut part).trim().to_string()),
            (_, c) => part.push(c),
        }
    }
    parts.push(part.trim().to_string());
    parts.join(".")
}

fn value(sections: &[(String, String, String)], section: &str, key: &str) -> Option<String> {
    sections
        .iter()
        .rev()
        .find(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.clone())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::{list_items, parse, section_name, wildcard};

    #[test]
    fn quoted_toml_keys_name_profiles_with_dots() {
        assert_eq!(section_name(r#"profiles."cust.one""#), "profiles.cust.one");
        assert_eq!(section_name("profiles . 'acme'"), "profiles.acme");
        assert_eq!(section_name("acme"), "acme");
        assert_eq!(section_name(" groups.customers "), "groups.customers");
    }

    #[test]
    fn groups_list_profiles_with_wildcards() {
        assert_eq!(list_items(r#"["acme", 'cust_*']"#), ["acme", "cust_*"]);
        assert!(wildcard("cust_*", "cust_globex") && wildcard("cust_*", "cust_") && !wildcard("cust_*", "acme"));
        assert!(wildcard("a?me", "acme") && !wildcard("a?me", "ame") && wildcard("*", "anything"));
    }

    #[test]
    fn reads_toml_and_ini_sections_alike() {
        let toml = "default_profile = \"work\"\n# a comment\n[profiles.work]\ntoken = \"abc\" # mine\noutput = 'x'\n";
        let entries = parse(toml);
        assert_eq!(entries[0], ("".into(), "default_profile".into(), "work".into()));
        assert_eq!(entries[1], ("profiles.work".into(), "token".into(), "abc".into()));
        let ini = "[DEFAULT]\ndefault-user = alice\n\n[alice]\ntoken = 0123\napi_host: localhost:8765\n";
        let entries = parse(ini);
        assert_eq!(entries[0], ("DEFAULT".into(), "default-user".into(), "alice".into()));
        assert_eq!(entries[2], ("alice".into(), "api_host".into(), "localhost:8765".into()));
    }
}
