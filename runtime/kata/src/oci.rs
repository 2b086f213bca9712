//! Plugins in OCI registries: `kata plugin publish FILE oci://…` and
//! `kata plugin add oci://REGISTRY/NAME:TAG` (or `@sha256:…`).
//!
//! The layout is the CNCF TAG Runtime "WebAssembly OCI artifact" one that
//! `wkg`, Spin's component tooling and `oci-wasm` use: an OCI image manifest
//! (`application/vnd.oci.image.manifest.v1+json`) whose config has media type
//! `application/vnd.wasm.config.v0+json` — `{created, architecture: "wasm",
//! os: "wasip2", layerDigests, component: {exports, imports}}` — and exactly
//! one layer of media type `application/wasm`: the component. Its signature
//! travels inside the layer (see [`crate::signing`]), so any registry that
//! stores OCI artifacts carries it, and nothing else has to be fetched.
//!
//! Talking to a registry is the OCI distribution API over HTTPS (plain HTTP
//! for loopback registries, and for hosts listed in `KATA_OCI_INSECURE`),
//! with credentials from the Docker config (`$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json`: `auths` entries, `credHelpers` and `credsStore`)
//! answering either challenge a registry makes: `Basic`, or `Bearer` with a
//! token fetched from the realm it names. What is pulled is checked: the
//! manifest against a `@sha256:` digest, the layer's size against the
//! manifest and `--max-size` before it is downloaded, and its bytes against
//! the manifest's size and digest after.

use std::io::Read;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use reqwest::Method;
use reqwest::blocking::Response;
use sha2::{Digest, Sha256};

/// The manifest media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The config media type of a WebAssembly artifact.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The layer media type of a WebAssembly component.
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";
/// Largest manifest or tag list read.
const MAX_JSON: u64 = 4 << 20;
/// Annotation carrying the publisher key a pushed component is signed by
/// (informational: kata trusts only the signature inside the layer).
pub const PUBLISHER_ANNOTATION: &str = "dev.kata.publisher";

/// `oci://REGISTRY/REPOSITORY[:TAG][@sha256:HEX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`.
    pub registry: String,
    /// The repository path, e.g. `acme/telegram`.
    pub repository: String,
    /// The tag, if any.
    pub tag: Option<String>,
    /// `sha256:<hex>`, if pinned by digest.
    pub digest: Option<String>,
}

impl Reference {
    /// Is `s` an OCI reference (`oci://…`)?
    pub fn is_oci(s: &str) -> bool {
        s.starts_with("oci://")
    }

    /// Parse `oci://REGISTRY/REPOSITORY[:TAG][@sha256:HEX]`; without a tag
    /// or digest the tag is `latest`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad =
            |why: &str| anyhow!("{s:?} is not an OCI reference: {why}; write oci://REGISTRY/NAME:TAG or oci://REGISTRY/NAME@sha256:DIGEST");
        let rest = s.strip_prefix("oci://").ok_or_else(|| bad("it does not start with oci://"))?;
        let (registry, path) = rest.split_once('/').ok_or_else(|| bad("it names no repository after the registry"))?;
        if registry.is_empty() || !registry.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)) {
            return Err(bad("the registry must be a host name or address, with an optional :port"));
        }
        let (path, digest) = match path.split_once('@') {
            Some((p, d)) => {
                let hex = d.strip_prefix("sha256:").ok_or_else(|| bad("a digest must be sha256:<64 hex digits>"))?;
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                    return Err(bad("a digest must be sha256:<64 lowercase hex digits>"));
                }
                (p, Some(d.to_string()))
            }
            None => (path, None),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t.to_string())),
            _ => (path, None),
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
        };
        if !repository.split('/').all(component_ok) {
            return Err(bad("the repository must be lowercase letters, digits, '.', '_', '-' separated by '/'"));
        }
        if let Some(t) = &tag
            && (t.is_empty()
                || t.len() > 128
                || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                || t.starts_with(['.', '-']))
        {
            return Err(bad("a tag is 1-128 letters, digits, '_', '.', '-', not starting with '.' or '-'"));
        }
        let tag = if tag.is_none() && digest.is_none() { Some("latest".to_string()) } else { tag };
        Ok(Self { registry: registry.to_string(), repository: repository.to_string(), tag, digest })
    }

    /// What the manifest is fetched by: the digest when pinned, else the tag.
    fn manifest_ref(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }

    /// The same repository at another tag.
    pub fn with_tag(&self, tag: &str) -> Self {
        Self { tag: Some(tag.to_string()), digest: None, ..self.clone() }
    }

    /// The same repository pinned to a manifest digest (keeping the tag, for people).
    pub fn with_digest(&self, digest: &str) -> Self {
        Self { digest: Some(digest.to_string()), ..self.clone() }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "oci://{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// One descriptor of a manifest.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}

/// An OCI image manifest, as far as kata reads it.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The manifest's own media type (optional in OCI, required by the wasm layout).
    #[serde(default)]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

impl Manifest {
    /// The one `application/wasm` layer of a WebAssembly component artifact.
    pub fn wasm_layer(&self, r: &Reference) -> Result<&Descriptor> {
        if self.config.media_type != CONFIG_MEDIA_TYPE {
            bail!(
                "{r} is not a WebAssembly component artifact: its config has media type {:?}, not {CONFIG_MEDIA_TYPE:?} \
                 (publish plugins with `kata plugin publish` or `wkg oci push`)",
                self.config.media_type
            );
        }
        match self.layers.as_slice() {
            [l] if l.media_type == LAYER_MEDIA_TYPE => Ok(l),
            layers => bail!(
                "{r} is not a WebAssembly component artifact: it must have exactly one layer of media type {LAYER_MEDIA_TYPE:?}, \
                 it has {}",
                if layers.is_empty() {
                    "none".to_string()
                } else {
                    layers.iter().map(|l| l.media_type.as_str()).collect::<Vec<_>>().join(", ")
                }
            ),
        }
    }
}

/// A component pulled from a registry.
pub struct Pulled {
    /// The component's bytes (checked against the layer's size and digest).
    pub bytes: Vec<u8>,
    /// The manifest's digest, `sha256:…`.
    pub manifest_digest: String,
}

/// Credentials for one registry.
#[derive(Clone)]
struct Credentials {
    user: String,
    secret: String,
    /// Where they came from, for messages.
    from: String,
}

/// The challenge in a 401's `WWW-Authenticate`.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

fn parse_challenge(h: &str) -> Option<Challenge> {
    let (scheme, params) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    // key="value" pairs; values may contain commas (scope="repository:a:pull,push").
    let mut map = std::collections::HashMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        map.insert(key, value.to_string());
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer { realm: map.remove("realm")?, service: map.remove("service"), scope: map.remove("scope") })
}

/// Is `host` (with an optional port) a loopback address?
fn is_loopback(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The Docker config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
fn docker_config_path() -> Option<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(std::path::Path::new(&dir).join("config.json"));
    }
    directories::BaseDirs::new().map(|d| d.home_dir().join(".docker/config.json"))
}

/// The host a Docker config key names (`https://index.docker.io/v1/` → `index.docker.io`).
fn config_key_host(key: &str) -> &str {
    let k = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// The names a registry may be filed under in a Docker config.
fn config_names(registry: &str) -> Vec<&str> {
    if matches!(registry, "docker.io" | "index.docker.io" | "registry-1.docker.io") {
        vec!["index.docker.io", "docker.io", "registry-1.docker.io"]
    } else {
        vec![registry]
    }
}

/// Ask a Docker credential helper (`docker-credential-NAME get`).
fn from_helper(helper: &str, registry: &str) -> Result<Option<Credentials>> {
    use std::io::Write;
    let program = format!("docker-credential-{helper}");
    let mut child = std::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("the Docker config names credential helper {program}, which cannot be run"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(registry.as_bytes());
    }
    let out = child.wait_with_output().with_context(|| format!("{program} failed"))?;
    if !out.status.success() {
        // "credentials not found" is how a helper says it has none.
        return Ok(None);
    }
    #[derive(serde::Deserialize)]
    struct HelperAnswer {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let a: HelperAnswer =
        serde_json::from_slice(&out.stdout).with_context(|| format!("{program} answered something that is not its JSON"))?;
    Ok(Some(Credentials { user: a.username, secret: a.secret, from: program }))
}

/// Credentials for `registry` from the Docker config, if it has any.
fn credentials(registry: &str) -> Result<Option<Credentials>> {
    let Some(path) = docker_config_path() else { return Ok(None) };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let config: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON; fix it or move it away", path.display()))?;
    let names = config_names(registry);
    if let Some(helpers) = config["credHelpers"].as_object()
        && let Some(helper) = helpers.iter().find(|(k, _)| names.contains(&config_key_host(k))).and_then(|(_, v)| v.as_str())
    {
        return from_helper(helper, registry);
    }
    if let Some(auths) = config["auths"].as_object() {
        for (key, entry) in auths {
            if !names.contains(&config_key_host(key)) {
                continue;
            }
            let from = format!("{} (auths.{key:?})", path.display());
            if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .with_context(|| format!("the `auth` of {from} is not base64 of USER:PASSWORD"))?;
                let (user, secret) =
                    decoded.split_once(':').with_context(|| format!("the `auth` of {from} is not base64 of USER:PASSWORD"))?;
                return Ok(Some(Credentials { user: user.into(), secret: secret.into(), from }));
            }
            if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
                return Ok(Some(Credentials { user: u.into(), secret: p.into(), from }));
            }
        }
    }
    if let Some(store) = config["credsStore"].as_str() {
        return from_helper(store, registry);
    }
    Ok(None)
}

/// A registry's error body: `{"errors":[{"code","message"}]}`.
fn error_text(resp: Response) -> String {
    let status = resp.status();
    let mut body = String::new();
    let _ = resp.take(8 << 10).read_to_string(&mut body);
    let detail = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let errs = v["errors"]
                .as_array()?
                .iter()
                .filter_map(|e| Some(format!("{}: {}", e["code"].as_str()?, e["message"].as_str()?)))
                .collect::<Vec<_>>();
            (!errs.is_empty()).then(|| errs.join("; "))
        })
        .unwrap_or_else(|| body.trim().chars().take(200).collect());
    let hint = if status.is_server_error() { " — a problem on the registry's side; try again later" } else { "" };
    if detail.is_empty() { format!("HTTP {status}{hint}") } else { format!("HTTP {status} ({detail}){hint}") }
}

/// A client for one registry: base URL, credentials, and the bearer token
/// once one was issued.
pub struct Registry {
    http: reqwest::blocking::Client,
    registry: String,
    base: String,
    creds: Option<Credentials>,
    token: Option<String>,
    /// The scope the token was issued for.
    token_scope: String,
    basic: bool,
}

impl Registry {
    /// A client for `registry` (`host[:port]`), with its Docker credentials.
    pub fn new(registry: &str) -> Result<Self> {
        let insecure = std::env::var("KATA_OCI_INSECURE").unwrap_or_default();
        let plain = is_loopback(registry) || insecure.split(',').any(|h| h.trim() == registry);
        let api_host = if matches!(registry, "docker.io" | "index.docker.io") { "registry-1.docker.io" } else { registry };
        let base = format!("{}://{api_host}", if plain { "http" } else { "https" });
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(300))
            .connect_timeout(Duration::from_secs(20))
            .user_agent(concat!("kata/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot start the HTTP client")?;
        Ok(Self {
            http,
            registry: registry.to_string(),
            base,
            creds: credentials(registry)?,
            token: None,
            token_scope: String::new(),
            basic: false,
        })
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") { path.to_string() } else { format!("{}{path}", self.base) }
    }

    fn attempt(&self, method: &Method, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Result<Response> {
        let mut rb = self.http.request(method.clone(), url);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.body(b.to_vec());
        }
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        } else if let (true, Some(c)) = (self.basic, &self.creds) {
            rb = rb.basic_auth(&c.user, Some(&c.secret));
        }
        rb.send().with_context(|| format!("cannot reach registry {} ({url})", self.registry))
    }

    /// Send a request, answering an authentication challenge: `Basic` with
    /// the Docker credentials, `Bearer` with a token from the challenge's
    /// realm (fetched again when a later request needs a wider scope, e.g.
    /// push after pull).
    fn send(&mut self, method: Method, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>, scope: &str) -> Result<Response> {
        let url = self.url(path);
        let login = format!(
            "log in with `docker login {}` (kata reads ~/.docker/config.json: `auths`, `credHelpers`, `credsStore`)",
            self.registry
        );
        let mut answered = false;
        loop {
            let resp = self.attempt(&method, &url, headers, body)?;
            if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            let header = resp.headers().get(reqwest::header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let challenge = parse_challenge(&header);
            let wider = matches!(&challenge, Some(Challenge::Bearer { scope: s, .. })
                if self.token.is_some() && s.as_deref().unwrap_or(scope) != self.token_scope);
            if answered || ((self.token.is_some() || self.basic) && !wider) {
                return Err(match &self.creds {
                    Some(c) => self.refused(c),
                    None => anyhow!("registry {} refused access (HTTP 401); {login}", self.registry),
                });
            }
            answered = true;
            match challenge {
                Some(Challenge::Basic) => {
                    if self.creds.is_none() {
                        bail!(
                            "registry {} asks for a user name and password (HTTP 401), and the Docker config has none for it; {login}",
                            self.registry
                        );
                    }
                    self.basic = true;
                }
                Some(Challenge::Bearer { realm, service, scope: challenged }) => {
                    let scope = challenged.unwrap_or_else(|| scope.to_string());
                    let mut rb = self.http.get(&realm).query(&[("scope", scope.as_str())]);
                    if let Some(s) = &service {
                        rb = rb.query(&[("service", s.as_str())]);
                    }
                    if let Some(c) = &self.creds {
                        rb = rb.basic_auth(&c.user, Some(&c.secret));
                    }
                    let t = rb.send().with_context(|| format!("cannot reach the token service {realm} of registry {}", self.registry))?;
                    if !t.status().is_success() {
                        let why = error_text(t);
                        return Err(match &self.creds {
                            Some(c) => self.refused(c).context(format!("the token service {realm} answered {why}")),
                            None => anyhow!("registry {} wants a token its service {realm} refused ({why}); {login}", self.registry),
                        });
                    }
                    let v: serde_json::Value =
                        t.json().with_context(|| format!("the token service {realm} answered something that is not JSON"))?;
                    let token = v["token"]
                        .as_str()
                        .or(v["access_token"].as_str())
                        .with_context(|| format!("the token service {realm} issued no token"))?;
                    self.token = Some(token.to_string());
                    self.token_scope = scope;
                }
                None => bail!("registry {} answered HTTP 401 without a challenge kata understands ({header:?}); {login}", self.registry),
            }
        }
    }

    fn refused(&self, c: &Credentials) -> anyhow::Error {
        anyhow!(
            "registry {} refused the credentials of user {:?} from {} (HTTP 401); check them, e.g. with `docker login {}`",
            self.registry,
            c.user,
            c.from,
            self.registry
        )
    }

    /// Fetch a manifest: its parsed form, its digest and its bytes.
    pub fn manifest(&mut self, r: &Reference) -> Result<(Manifest, String, Vec<u8>)> {
        let path = format!("/v2/{}/manifests/{}", r.repository, r.manifest_ref());
        let accept = format!("{MANIFEST_MEDIA_TYPE}, application/vnd.oci.image.index.v1+json");
        let resp = self.send(Method::GET, &path, &[("Accept", &accept)], None, &format!("repository:{}:pull", r.repository))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            let what = match (&r.digest, &r.tag) {
                (Some(d), _) => format!("no manifest {d}"),
                (None, Some(t)) => format!("no tag {t:?}"),
                _ => "no such manifest".into(),
            };
            let known = self.tags(r).ok().map(|mut t| {
                sort_versions(&mut t);
                let shown: Vec<String> = t.iter().rev().take(10).cloned().collect();
                if shown.is_empty() { "it has no tags".to_string() } else { format!("its tags include {}", shown.join(", ")) }
            });
            bail!(
                "{r}: the registry has {what} in {}/{}{}; nothing was installed",
                r.registry,
                r.repository,
                known.map_or(String::new(), |k| format!(" ({k})"))
            );
        }
        if !resp.status().is_success() {
            bail!("cannot fetch the manifest of {r}: the registry answered {}", error_text(resp));
        }
        let mut raw = Vec::new();
        resp.take(MAX_JSON + 1).read_to_end(&mut raw).with_context(|| format!("cannot read the manifest of {r}"))?;
        if raw.len() as u64 > MAX_JSON {
            bail!("the manifest of {r} is larger than {MAX_JSON} bytes; kata does not read it");
        }
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&raw)));
        if let Some(want) = &r.digest
            && want != &digest
        {
            bail!("{r}: the registry served a manifest with digest {digest}, not the {want} the reference pins; nothing was installed");
        }
        let m: Manifest = serde_json::from_slice(&raw).with_context(|| format!("the manifest of {r} is not an OCI image manifest"))?;
        if let Some(mt) = &m.media_type
            && mt != MANIFEST_MEDIA_TYPE
        {
            bail!("{r} is a {mt}, not a single WebAssembly component ({MANIFEST_MEDIA_TYPE}); name the component's own tag or digest");
        }
        Ok((m, digest, raw))
    }

    /// Download a blob of at most `max_size` bytes, checked against its descriptor.
    fn blob(&mut self, r: &Reference, d: &Descriptor, max_size: u64) -> Result<Vec<u8>> {
        if d.size > max_size {
            bail!("{r} is {} bytes, over the {max_size}-byte limit (--max-size); nothing was installed", d.size);
        }
        let path = format!("/v2/{}/blobs/{}", r.repository, d.digest);
        let resp = self.send(Method::GET, &path, &[], None, &format!("repository:{}:pull", r.repository))?;
        if !resp.status().is_success() {
            bail!("cannot download layer {} of {r}: the registry answered {}", d.digest, error_text(resp));
        }
        let mut bytes = Vec::new();
        let read = resp.take(d.size + 1).read_to_end(&mut bytes);
        if let Err(e) = read {
            bail!(
                "the download of {r} (layer {}) was cut short after {} of {} bytes ({e}); nothing was installed",
                d.digest,
                bytes.len(),
                d.size
            );
        }
        if bytes.len() as u64 != d.size {
            bail!(
                "the download of {r} (layer {}) has {} bytes, but the manifest says {}: it was cut short or is not what the manifest \
                 names; nothing was installed",
                d.digest,
                bytes.len(),
                d.size
            );
        }
        let got = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if got != d.digest {
            bail!(
                "the layer of {r} has digest {got}, but its manifest names {}: the registry served other bytes than the manifest \
                 describes; nothing was installed",
                d.digest
            );
        }
        Ok(bytes)
    }

    /// Pull the component `r` names.
    pub fn pull(&mut self, r: &Reference, max_size: u64) -> Result<Pulled> {
        let (m, manifest_digest, _) = self.manifest(r)?;
        let layer = m.wasm_layer(r)?.clone();
        let bytes = self.blob(r, &layer, max_size)?;
        Ok(Pulled { bytes, manifest_digest })
    }

    /// Every tag of `r`'s repository (following pagination).
    pub fn tags(&mut self, r: &Reference) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut next = Some(format!("/v2/{}/tags/list", r.repository));
        for _ in 0..100 {
            let Some(path) = next.take() else { break };
            let resp = self.send(Method::GET, &path, &[], None, &format!("repository:{}:pull", r.repository))?;
            if !resp.status().is_success() {
                bail!("cannot list the tags of oci://{}/{}: the registry answered {}", r.registry, r.repository, error_text(resp));
            }
            // Link: </v2/name/tags/list?last=x&n=100>; rel="next"
            next = resp
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| l.split_once('<'))
                .and_then(|(_, rest)| rest.split_once('>'))
                .map(|(u, _)| u.to_string());
            let mut raw = Vec::new();
            resp.take(MAX_JSON).read_to_end(&mut raw)?;
            let v: serde_json::Value = serde_json::from_slice(&raw).context("the tag list is not JSON")?;
            out.extend(v["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(String::from)));
        }
        Ok(out)
    }

    /// Upload a blob unless the registry has it.
    fn push_blob(&mut self, r: &Reference, bytes: &[u8]) -> Result<Descriptor> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        let scope = format!("repository:{}:pull,push", r.repository);
        let head = self.send(Method::HEAD, &format!("/v2/{}/blobs/{digest}", r.repository), &[], None, &scope)?;
        if !head.status().is_success() {
            let start =
                self.send(Method::POST, &format!("/v2/{}/blobs/uploads/", r.repository), &[("Content-Length", "0")], Some(&[]), &scope)?;
            if start.status() != reqwest::StatusCode::ACCEPTED {
                bail!("registry {} refused to start an upload to {}: {}", r.registry, r.repository, error_text(start));
            }
            let location = start
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .context("the registry started an upload without saying where to send it (no Location)")?
                .to_string();
            let sep = if location.contains('?') { '&' } else { '?' };
            let put = self.send(
                Method::PUT,
                &format!("{location}{sep}digest={digest}"),
                &[("Content-Type", "application/octet-stream")],
                Some(bytes),
                &scope,
            )?;
            if put.status() != reqwest::StatusCode::CREATED {
                bail!("registry {} refused blob {digest} for {}: {}", r.registry, r.repository, error_text(put));
            }
        }
        Ok(Descriptor { media_type: String::new(), digest, size: bytes.len() as u64 })
    }

    /// Push `component` to `r` (a tag) in the WebAssembly OCI layout;
    /// returns the manifest's digest.
    pub fn push(
        &mut self,
        r: &Reference,
        component: &[u8],
        info: &crate::plugin::ComponentInfo,
        annotations: &[(&str, String)],
    ) -> Result<String> {
        let Some(tag) = r.tag.as_deref().filter(|_| r.digest.is_none()) else {
            bail!("publish to a tag (oci://{}/{}:TAG): a digest names content that already exists", r.registry, r.repository);
        };
        let layer_digest = format!("sha256:{}", hex::encode(Sha256::digest(component)));
        let config = serde_json::json!({
            "created": rfc3339_now(),
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [layer_digest],
            "component": { "exports": info.exports, "imports": info.imports, "target": null },
        });
        let config = serde_json::to_vec(&config)?;
        let mut config_d = self.push_blob(r, &config)?;
        config_d.media_type = CONFIG_MEDIA_TYPE.into();
        let mut layer_d = self.push_blob(r, component)?;
        layer_d.media_type = LAYER_MEDIA_TYPE.into();
        let annotations: serde_json::Map<String, serde_json::Value> =
            annotations.iter().map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone()))).collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": config_d,
            "layers": [layer_d],
            "annotations": annotations,
        });
        let manifest = serde_json::to_vec(&manifest)?;
        let put = self.send(
            Method::PUT,
            &format!("/v2/{}/manifests/{tag}", r.repository),
            &[("Content-Type", MANIFEST_MEDIA_TYPE)],
            Some(&manifest),
            &format!("repository:{}:pull,push", r.repository),
        )?;
        if put.status() != reqwest::StatusCode::CREATED {
            bail!("registry {} refused the manifest for {r}: {}", r.registry, error_text(put));
        }
        Ok(format!("sha256:{}", hex::encode(Sha256::digest(&manifest))))
    }
}

/// Pull `source` (an `oci://` reference) with at most `max_size` bytes of component.
pub fn pull(source: &str, max_size: u64) -> Result<Pulled> {
    let r = Reference::parse(source)?;
    Registry::new(&r.registry)?.pull(&r, max_size)
}

/// A tag as a version, when it reads as one: `v1.2.3`, `1.2`, `1.0.0-rc.1`.
/// (numbers, pre-release) — a release sorts after its pre-releases.
pub fn version_of(tag: &str) -> Option<(Vec<u64>, Option<String>)> {
    let t = tag.strip_prefix('v').unwrap_or(tag);
    let (core, pre) = match t.split_once('-') {
        Some((c, p)) => (c, Some(p.to_string())),
        None => (t, None),
    };
    let core = core.split_once('+').map_or(core, |(c, _)| c);
    let nums: Option<Vec<u64>> = core.split('.').map(|n| n.parse().ok()).collect();
    nums.filter(|n| !n.is_empty() && n.len() <= 4).map(|n| (n, pre))
}

fn cmp_versions(a: &(Vec<u64>, Option<String>), b: &(Vec<u64>, Option<String>)) -> std::cmp::Ordering {
    let n = a.0.len().max(b.0.len());
    let pad = |v: &Vec<u64>| (0..n).map(|i| v.get(i).copied().unwrap_or(0)).collect::<Vec<_>>();
    pad(&a.0).cmp(&pad(&b.0)).then_with(|| match (&a.1, &b.1) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (Some(_), None) => std::cmp::Ordering::Less,
        (Some(x), Some(y)) => x.cmp(y),
    })
}

/// Sort tags oldest first: versions in version order, after every tag that
/// is not a version (alphabetically).
pub fn sort_versions(tags: &mut [String]) {
    tags.sort_by(|a, b| match (version_of(a), version_of(b)) {
        (Some(x), Some(y)) => cmp_versions(&x, &y),
        (Some(_), None) => std::cmp::Ordering::Greater,
        (None, Some(_)) => std::cmp::Ordering::Less,
        (None, None) => a.cmp(b),
    });
}

/// The newest tag in `tags` that is a later version than `current`; a
/// pre-release is only offered to someone already on one.
pub fn newer_tag(current: &str, tags: &[String]) -> Option<String> {
    let cur = version_of(current)?;
    tags.iter()
        .filter_map(|t| version_of(t).map(|v| (t, v)))
        .filter(|(_, v)| v.1.is_none() || cur.1.is_some())
        .filter(|(_, v)| cmp_versions(v, &cur) == std::cmp::Ordering::Greater)
        .max_by(|a, b| cmp_versions(&a.1, &b.1))
        .map(|(t, _)| t.clone())
}

/// Days since 1970-01-01 as (year, month, day) (Howard Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Now as RFC 3339 (UTC, seconds).
pub fn rfc3339_now() -> String {
    let secs = (crate::util::now_ms() / 1000) as i64;
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60)
}

/// Today as `YYYY-MM-DD` (UTC).
pub fn today() -> String {
    rfc3339_now()[..10].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_and_print() {
        let r = Reference::parse("oci://127.0.0.1:5000/kata/quiet:1.2.0").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref(), r.digest.as_deref()),
            ("127.0.0.1:5000", "kata/quiet", Some("1.2.0"), None)
        );
        assert_eq!(r.to_string(), "oci://127.0.0.1:5000/kata/quiet:1.2.0");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("oci://ghcr.io/acme/tg@{d}")).unwrap();
        assert_eq!((r.tag, r.digest.as_deref()), (None, Some(d.as_str())));
        assert_eq!(Reference::parse("oci://ghcr.io/acme/tg").unwrap().tag.as_deref(), Some("latest"));
        for bad in ["oci://ghcr.io", "ghcr.io/x:1", "oci://ghcr.io/Acme/x:1", "oci://h/x@sha256:abc", "oci://h/x:-1", "oci:///x"] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn challenges_parse() {
        assert_eq!(parse_challenge("Basic realm=\"basic-realm\""), Some(Challenge::Basic));
        assert_eq!(
            parse_challenge("Bearer realm=\"https://auth.example/token\",service=\"registry.example\",scope=\"repository:a/b:pull,push\""),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into())
            })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn tags_order_like_versions() {
        let mut t: Vec<String> = ["latest", "v1.10.0", "1.2.0", "1.2.0-rc.1", "1.9", "main"].iter().map(|s| s.to_string()).collect();
        sort_versions(&mut t);
        assert_eq!(t, ["latest", "main", "1.2.0-rc.1", "1.2.0", "1.9", "v1.10.0"]);
        assert_eq!(newer_tag("1.2.0", &t).as_deref(), Some("v1.10.0"));
        assert_eq!(newer_tag("v1.10.0", &t), None);
        assert_eq!(newer_tag("latest", &t), None);
        let pre: Vec<String> = ["1.0.0", "1.1.0-rc.1"].iter().map(|s| s.to_string()).collect();
        assert_eq!(newer_tag("1.0.0", &pre), None, "no pre-release for someone on a release");
        assert_eq!(newer_tag("1.1.0-beta", &pre).as_deref(), Some("1.1.0-rc.1"));
    }

    #[test]
    fn loopback_and_dates() {
        assert!(is_loopback("127.0.0.1:5000") && is_loopback("localhost") && is_loopback("[::1]:5000"));
        assert!(!is_loopback("ghcr.io") && !is_loopback("10.0.0.1:5000"));
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_723), (2024, 1, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
    }
}
