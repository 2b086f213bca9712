//! The plugin manifest: what a plugin asks for, written by its author in
//! `plugin.toml` next to the crate's Cargo.toml and embedded by
//! `kata plugin build` in the component as the custom section `kata:manifest`.
//!
//! The manifest only *asks*; the workspace policy (kata.toml) decides.
//! `kata plugin add` shows the request next to what the policy grants today
//! and prints the lines that would grant the rest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The custom section holding the manifest (TOML text).
pub const SECTION: &str = "kata:manifest";

/// The file authors write next to Cargo.toml.
pub const FILE: &str = "plugin.toml";

/// The manifest network entry that asks for no particular host: the plugin
/// gets exactly the `network` entries kata.toml grants it (and, as always,
/// nothing when it grants none).
pub const ANY_NETWORK: &str = "*";

/// What a plugin is and asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Suggested plugin name (the `[plugins.NAME]` key): lowercase, digits, `-`, `_`.
    pub name: String,
    /// The plugin's own version.
    #[serde(default)]
    pub version: String,
    /// One line on what it does.
    #[serde(default)]
    pub description: String,
    /// Network access it needs: `scheme://host[:port][/path-prefix]` entries,
    /// or `"*"` ([`ANY_NETWORK`]) for a plugin that reaches whatever the
    /// workspace grants it (a web fetcher: it asks for no host of its own).
    #[serde(default)]
    pub network: Vec<String>,
    /// Secrets it uses as `{{secret:NAME}}`, by name, with what each is.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Configuration keys it reads, by name, with what each means.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Directories it wants mounted.
    #[serde(default)]
    pub files: Vec<FileRequest>,
    /// What its tools promise (tools plugins only).
    #[serde(default, skip_serializing_if = "ToolsManifest::is_empty")]
    pub tools: ToolsManifest,
}

/// `[tools]` in a manifest: what the plugin's tools promise about themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsManifest {
    /// Tools that only read: they may run in the `safe` permission mode,
    /// where kata enforces the promise by running them with every write
    /// grant stripped (directories read-only, network GET and HEAD only).
    #[serde(default)]
    pub read_only: Vec<String>,
}

impl ToolsManifest {
    fn is_empty(&self) -> bool {
        self.read_only.is_empty()
    }
}

/// A directory a plugin asks to have mounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRequest {
    /// Where the plugin expects it, e.g. `/notes`.
    pub guest: String,
    /// `ro` or `rw`.
    #[serde(default = "ro")]
    pub mode: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
}

fn ro() -> String {
    "ro".to_string()
}

impl Manifest {
    /// Parse and check a manifest. `origin` names the file or component in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, String> {
        let m: Manifest = toml::from_str(text).map_err(|e| {
            let msg = e.to_string().replace('\n', " ");
            format!("{origin}: invalid plugin manifest: {}", msg.split_whitespace().collect::<Vec<_>>().join(" "))
        })?;
        if m.name.is_empty()
            || m.name.len() > 64
            || !m.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(format!("{origin}: manifest name {:?} must be 1-64 lowercase letters, digits, '-' or '_'", m.name));
        }
        for f in &m.files {
            if f.mode != "ro" && f.mode != "rw" {
                return Err(format!("{origin}: files entry {}: mode must be \"ro\" or \"rw\"", f.guest));
            }
        }
        Ok(m)
    }

    /// Whether its network is "whatever the workspace grants" (`"*"`).
    pub fn asks_any_network(&self) -> bool {
        self.network.iter().any(|e| e == ANY_NETWORK)
    }

    /// The manifest as TOML, for embedding.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// Expand `${KEY}` references in a manifest network entry from the plugin's
/// configuration, so a manifest can ask for "whatever URL the user configures"
/// (e.g. `"${api_base}/bot"` for a self-hosted or emulated API). None when a
/// referenced key is not set: the entry then asks for nothing.
pub fn expand_entry(entry: &str, config: &BTreeMap<String, String>) -> Option<String> {
    let mut out = String::with_capacity(entry.len());
    let mut rest = entry;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}')? + i;
        let value = config.get(&rest[i + 2..end])?;
        out.push_str(value.trim_end_matches('/'));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// Append a custom section to a component (or module). Custom sections may
/// appear anywhere at the top level, so appending keeps the binary valid.
pub fn append_custom_section(wasm: &mut Vec<u8>, name: &str, data: &[u8]) {
    use wasm_encoder::Encode;
    let mut payload = Vec::with_capacity(name.len() + data.len() + 5);
    name.encode(&mut payload);
    payload.extend_from_slice(data);
    wasm.push(0); // custom section id
    (payload.len() as u32).encode(wasm);
    wasm.extend_from_slice(&payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_round_trips() {
        let text = r#"
name = "telegram"
version = "0.1.0"
description = "Telegram Bot API"
network = ["https://api.telegram.org/bot"]
secrets = { bot_token = "from @BotFather" }
config = { poll_timeout_s = "long-poll timeout" }
"#;
        let m = Manifest::parse(text, "plugin.toml").expect("valid");
        assert_eq!(m.secrets["bot_token"], "from @BotFather");
        assert_eq!(Manifest::parse(&m.to_toml(), "x").expect("round trip"), m);
    }

    #[test]
    fn bad_manifests_are_explained() {
        let e = Manifest::parse("name = \"Tele Gram\"", "p.toml").expect_err("bad name");
        assert!(e.contains("p.toml") && e.contains("lowercase"), "{e}");
        let e = Manifest::parse("name = \"x\"\nnetwrk = []", "p.toml").expect_err("typo");
        assert!(e.contains("netwrk"), "{e}");
        let e = Manifest::parse("name = \"x\"\nfiles = [{ guest = \"/a\", mode = \"rwx\" }]", "p").expect_err("mode");
        assert!(e.contains("mode"), "{e}");
    }

    #[test]
    fn a_star_network_leaves_the_network_to_the_policy() {
        let text = "[plugins.w]\nnetwork = [\"https://docs.rs/\", \"http://127.0.0.1:8080/\"]\n";
        let policy = crate::policy::Policy::parse(text, std::path::Path::new("kata.toml"), std::path::Path::new("/ws")).expect("policy");
        let m = Manifest::parse("name = \"w\"\nnetwork = [\"*\"]", "p").expect("manifest");
        assert!(m.asks_any_network());
        let mut g = policy.plugins["w"].clone();
        assert!(g.restrict_to(&m).expect("narrowed").is_empty());
        assert!(g.declared("https", "docs.rs", 443, "/crate") && g.declared("http", "127.0.0.1", 8080, "/"));
        assert!(g.network_grant("http", "127.0.0.1", 8080, "/a").is_some());
        // Without "*", a grant the manifest does not ask for is dropped.
        let mut g = policy.plugins["w"].clone();
        let m = Manifest::parse("name = \"w\"\nnetwork = [\"https://docs.rs/\"]", "p").expect("manifest");
        assert_eq!(g.restrict_to(&m).expect("narrowed"), ["network http://127.0.0.1:8080/"]);
    }

    #[test]
    fn entries_expand_from_config() {
        let config = BTreeMap::from([("api_base".to_string(), "http://127.0.0.1:9000/".to_string())]);
        assert_eq!(expand_entry("${api_base}/bot", &config).as_deref(), Some("http://127.0.0.1:9000/bot"));
        assert_eq!(expand_entry("https://x.org", &config).as_deref(), Some("https://x.org"));
        assert_eq!(expand_entry("${other}/bot", &config), None);
        assert_eq!(expand_entry("${unterminated", &config), None);
    }

    #[test]
    fn appended_section_is_valid_and_readable() {
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        append_custom_section(&mut module, SECTION, b"name = \"x\"");
        let mut found = None;
        for p in wasmparser::Parser::new(0).parse_all(&module) {
            if let wasmparser::Payload::CustomSection(c) = p.expect("valid") {
                found = Some((c.name().to_string(), c.data().to_vec()));
            }
        }
        assert_eq!(found, Some((SECTION.to_string(), b"name = \"x\"".to_vec())));
    }
}
