//! Plugin provenance end to end: `kata plugin keygen|sign|verify|publish|
//! outdated`, `[trust]`, and `kata plugin add|upgrade oci://…` against a real
//! OCI registry on loopback — Debian's `docker-registry` (the CNCF
//! distribution server), started by each test as a child process, with
//! htpasswd auth where a test needs a 401. A registry that fails in ways the
//! real one does not (500, a download cut short, a bearer-token challenge)
//! is a tiny fake on loopback. Every refusal leaves kata.toml and the plugin
//! store byte for byte as they were.
#![allow(missing_docs, clippy::unwrap_used)]

use crate::common;

use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ChildGuard, TestWorkspace, free_port, guest, kata_bin, snapshot, wait_for};
use sha2::{Digest, Sha256};

/// htpasswd line for user `kata`, password `s3cret` (bcrypt, cost 5:
/// `htpasswd -Bbn -C 5 kata s3cret`).
const HTPASSWD: &str = "kata:$2y$05$nuIYMV9tpARY8t.cCr3vYeMhNcjsk2whk1PsL1ptcJgyDsLkri0LK\n";

/// `docker-registry serve` on a free loopback port, storage in a temp dir.
struct Registry {
    port: u16,
    dir: tempfile::TempDir,
    _child: ChildGuard,
}

impl Registry {
    fn start(auth: bool) -> Self {
        let bin = ["/usr/bin/docker-registry", "/usr/sbin/docker-registry"].into_iter().map(PathBuf::from).find(|p| p.exists());
        let bin = bin.expect("docker-registry is not installed: run scripts/setup.sh (apt-get install docker-registry)");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        );
        if auth {
            std::fs::write(dir.path().join("htpasswd"), HTPASSWD).unwrap();
            config.push_str(&format!("auth:\n  htpasswd:\n    realm: kata-test\n    path: {}\n", dir.path().join("htpasswd").display()));
        }
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let guard = ChildGuard(Some(child));
        wait_for("docker-registry to listen", Duration::from_secs(20), || TcpStream::connect(("127.0.0.1", port)).ok());
        Self { port, dir, _child: guard }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn reference(&self, repo_tag: &str) -> String {
        format!("oci://127.0.0.1:{}/{repo_tag}", self.port)
    }

    /// The file the registry serves blob `digest` from.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir.path().join("storage/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }

    /// GET a path anonymously (the tests' own view of the registry).
    fn get_json(&self, path: &str, accept: &str) -> serde_json::Value {
        let r = reqwest::blocking::Client::new().get(format!("http://{}{path}", self.host())).header("Accept", accept).send().unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().unwrap()
    }
}

/// The environment every kata run gets: its own Docker config and data dir.
struct Env {
    dir: tempfile::TempDir,
    extra: Vec<(String, String)>,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("docker")).unwrap();
        Self { dir, extra: Vec::new() }
    }

    fn docker_config(&self, json: serde_json::Value) {
        std::fs::write(self.dir.path().join("docker/config.json"), json.to_string()).unwrap();
    }

    fn login(&self, registry: &Registry, user: &str, password: &str) {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.docker_config(serde_json::json!({ "auths": { registry.host(): { "auth": auth } } }));
    }

    /// Run kata (stdin closed: never a terminal) in workspace `ws`.
    fn kata(&self, ws: &Path, args: &[&str]) -> (bool, String, String) {
        let mut cmd = Command::new(kata_bin());
        cmd.args(args)
            .arg("--workspace")
            .arg(ws)
            .env("KATA_LOG", "off")
            .env("DOCKER_CONFIG", self.dir.path().join("docker"))
            .env("XDG_DATA_HOME", self.dir.path().join("data"))
            .env_remove("KATA_OCI_INSECURE");
        for (k, v) in &self.extra {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    }

    fn ok(&self, ws: &Path, args: &[&str]) -> String {
        let (ok, out, err) = self.kata(ws, args);
        assert!(ok, "{args:?} failed:\n{out}\n{err}");
        out
    }

    /// A command that must fail with all of `expect` in its output, leaving
    /// kata.toml and the plugin store byte for byte as they were.
    fn refused(&self, ws: &Path, args: &[&str], expect: &[&str]) -> String {
        let before = state(ws);
        let (ok, out, err) = self.kata(ws, args);
        assert!(!ok, "{args:?} should fail:\n{out}\n{err}");
        assert!(err.starts_with("error: ") && err.trim().lines().count() == 1, "one paragraph: {err}");
        assert!(!err.contains("panicked"), "{err}");
        for e in expect {
            assert!(err.contains(e) || out.contains(e), "{args:?}: expected {e:?} in:\n{out}\n{err}");
        }
        assert!(state(ws) == before, "{args:?} changed kata.toml or the store");
        err
    }
}

/// kata.toml and the plugin store, byte for byte.
fn state(ws: &Path) -> (Vec<u8>, BTreeMap<PathBuf, Vec<u8>>) {
    (std::fs::read(ws.join("kata.toml")).unwrap(), snapshot(&ws.join(".kata/plugins")))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A copy of guest `name` in `dir`, with an extra custom section `note`
/// (so one guest yields several distinct releases).
fn release(dir: &Path, name: &str, note: &str) -> PathBuf {
    let mut bytes = std::fs::read(guest(name)).unwrap();
    let mut payload = vec![4u8];
    payload.extend_from_slice(b"note");
    payload.extend_from_slice(note.as_bytes());
    bytes.push(0);
    bytes.push(payload.len() as u8);
    bytes.extend_from_slice(&payload);
    let out = dir.join(format!("{name}-{note}.wasm"));
    std::fs::write(&out, bytes).unwrap();
    out
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// keygen → sign → verify → publish → add oci:// → list → outdated →
/// upgrade with the same key; by tag and by digest; and the registry's view
/// of what was pushed (the WebAssembly OCI artifact layout).
#[test]
fn keygen_sign_publish_add_list_upgrade() {
    let env = Env::new();
    let reg = Registry::start(false);
    let work = tempfile::tempdir().unwrap();
    let ws = TestWorkspace::new("");

    // keygen at the default place (XDG data dir) and at a given path.
    let out = env.ok(ws.path(), &["plugin", "keygen"]);
    let default_key = env.dir.path().join("data/kata/keys/publisher.pem");
    assert!(default_key.exists(), "keygen writes to kata's XDG data dir: {out}");
    let key_path = work.path().join("alice.pem");
    let alice = env.ok(ws.path(), &["plugin", "keygen", "--out", s(&key_path)]).trim().to_string();
    assert!(alice.starts_with("ed25519:") && alice.len() == 8 + 44, "{alice}");
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert_eq!(std::fs::read_to_string(work.path().join("alice.pem.pub")).unwrap().trim(), alice);
    let (ok, _, err) = env.kata(ws.path(), &["plugin", "keygen", "--out", s(&key_path)]);
    assert!(!ok && err.contains("already exists"), "{err}");

    // sign → verify.
    let v1 = release(work.path(), "guest-chat", "v1");
    let unsigned = std::fs::read(&v1).unwrap();
    env.refused(ws.path(), &["plugin", "verify", s(&v1)], &["is not signed"]);
    env.ok(ws.path(), &["plugin", "sign", s(&v1), "--key", s(&key_path)]);
    let out = env.ok(ws.path(), &["plugin", "verify", s(&v1)]);
    assert!(out.contains(&format!("signed by {alice}")) && out.contains("NOT in [trust] publishers"), "{out}");
    let signed = std::fs::read(&v1).unwrap();
    assert!(signed.len() > unsigned.len() && signed.ends_with(&unsigned[8..]), "the signature is a section in front of the content");
    let other = env.ok(ws.path(), &["plugin", "keygen", "--out", s(&work.path().join("bob.pem"))]).trim().to_string();
    env.refused(ws.path(), &["plugin", "verify", s(&v1), "--publisher", &other], &[&format!("signed by {alice}, not by {other}")]);

    // publish; the registry holds the WebAssembly OCI artifact layout.
    let r1 = reg.reference("kata/chat:1.0.0");
    let out = env.ok(ws.path(), &["plugin", "publish", s(&v1), &r1]);
    assert!(out.contains(&format!("signed by {alice}")), "{out}");
    let manifest = reg.get_json("/v2/kata/chat/manifests/1.0.0", "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.wasm.config.v0+json");
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], "application/wasm");
    assert_eq!(layers[0]["digest"], format!("sha256:{}", sha256(&signed)));
    assert_eq!(manifest["annotations"]["dev.kata.publisher"], alice.as_str());
    assert_eq!(manifest["annotations"]["org.opencontainers.image.title"], "chat");
    let config = reg.get_json(&format!("/v2/kata/chat/blobs/{}", manifest["config"]["digest"].as_str().unwrap()), "*/*");
    assert_eq!((config["architecture"].as_str(), config["os"].as_str()), (Some("wasm"), Some("wasip2")));
    assert_eq!(config["layerDigests"][0], layers[0]["digest"]);
    assert!(
        config["component"]["exports"].as_array().unwrap().iter().any(|e| e.as_str().unwrap().starts_with("kata:plugin/channel")),
        "{config}"
    );

    // add: an unknown publisher is shown and needs consent (--yes), which is
    // recorded in [trust] with a comment naming the plugin.
    env.refused(ws.path(), &["plugin", "add", &r1], &[&alice, "does not trust yet", "--yes"]);
    let out = env.ok(ws.path(), &["plugin", "add", &r1, "--yes"]);
    assert!(out.contains(&format!("Trusting {alice}")) && out.contains("Installed chat"), "{out}");
    let toml = std::fs::read_to_string(ws.path().join("kata.toml")).unwrap();
    assert!(toml.contains(&format!("# chat ({r1}), trusted on first use")) && toml.contains(&format!("\"{alice}\",")), "{toml}");
    assert!(toml.contains(&format!("source = \"{r1}\"")) && toml.contains(&format!("publisher = \"{alice}\"")), "{toml}");
    let stored = ws.path().join(format!(".kata/plugins/{}.wasm", sha256(&signed)));
    assert_eq!(std::fs::read(&stored).unwrap(), signed, "the stored component keeps its signature");
    // The edited kata.toml is a valid policy that trusts alice.
    let policy = kata::policy::Policy::load(&ws.path().join("kata.toml"), ws.path()).unwrap();
    assert!(policy.file.trust.trusts(&kata::policy::PublisherKey::parse(&alice).unwrap()));

    // list: origin, publisher, signature state.
    let out = env.ok(ws.path(), &["plugin", "list"]);
    assert!(out.contains(&format!("from {r1}; signed by {alice} (trusted)")), "{out}");
    let listing: serde_json::Value = serde_json::from_str(&env.ok(ws.path(), &["plugin", "list", "--json"])).unwrap();
    let row = &listing["plugins"][0];
    assert_eq!(
        (row["source"].as_str(), row["signature"].as_str(), row["publisher"].as_str()),
        (Some(r1.as_str()), Some("signed"), Some(alice.as_str()))
    );
    assert_eq!(row["trusted"], true);

    // A second release under a later tag: outdated sees it, upgrade takes it (same key).
    let v2 = release(work.path(), "guest-chat", "v2");
    env.ok(ws.path(), &["plugin", "sign", s(&v2), "--key", s(&key_path)]);
    let r2 = reg.reference("kata/chat:1.1.0");
    env.ok(ws.path(), &["plugin", "publish", s(&v2), &r2]);
    env.ok(ws.path(), &["plugin", "publish", s(&v2), &reg.reference("kata/chat:latest")]);
    let out = env.ok(ws.path(), &["plugin", "outdated"]);
    assert!(out.contains("1.1.0 is newer than 1.0.0") && out.contains(&format!("kata plugin upgrade chat {r2}")), "{out}");
    let out = env.ok(ws.path(), &["plugin", "upgrade", "chat", &r2]);
    assert!(out.contains(&format!("signed by {alice} (trusted")) && out.contains("Upgraded chat"), "{out}");
    assert!(!stored.exists(), "the old code left the store");
    let out = env.ok(ws.path(), &["plugin", "outdated", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["status"], "current", "{rows:#}");

    // By digest, under another name; the digest is checked.
    let digest = format!("sha256:{}", sha256(&reqwest_manifest(&reg, "kata/chat", "1.0.0")));
    let pinned = reg.reference(&format!("kata/chat@{digest}"));
    let out = env.ok(ws.path(), &["plugin", "add", &pinned, "--name", "chat-pinned"]);
    assert!(out.contains("Installed chat-pinned"), "{out}");
    let out = env.ok(ws.path(), &["plugin", "outdated"]);
    assert!(out.contains("pinned by digest"), "{out}");
    // Plugins added by file record the absolute path; outdated compares the file.
    let v3 = release(work.path(), "guest-chat", "v3");
    env.ok(ws.path(), &["plugin", "sign", s(&v3), "--key", s(&key_path)]);
    env.ok(ws.path(), &["plugin", "add", s(&v3), "--name", "chat-file"]);
    env.ok(ws.path(), &["plugin", "sign", s(&v3), "--key", s(&work.path().join("bob.pem"))]);
    let out = env.ok(ws.path(), &["plugin", "outdated"]);
    assert!(out.contains("the file changed since it was installed") && out.contains("kata plugin upgrade chat-file"), "{out}");
    // ...and `upgrade NAME` re-reads the recorded source: now bob's, refused.
    env.refused(ws.path(), &["plugin", "upgrade", "chat-file"], &[&format!("published by {alice}"), &other, "--allow-publisher-change"]);
}

/// The raw manifest bytes of `repo:tag` (what its digest is taken of).
fn reqwest_manifest(reg: &Registry, repo: &str, tag: &str) -> Vec<u8> {
    let r = reqwest::blocking::Client::new()
        .get(format!("http://{}/v2/{repo}/manifests/{tag}", reg.host()))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    r.bytes().unwrap().to_vec()
}

/// Unsigned plugins under the three `[trust] unsigned` settings, a bad
/// signature (grants swapped after signing), an untrusted key under
/// "refuse", and a publisher change on upgrade.
#[test]
fn trust_decisions_and_refusals_change_nothing() {
    let env = Env::new();
    let work = tempfile::tempdir().unwrap();
    let alice_key = work.path().join("alice.pem");
    let bob_key = work.path().join("bob.pem");
    let ws = TestWorkspace::new("");
    let alice = env.ok(ws.path(), &["plugin", "keygen", "--out", s(&alice_key)]).trim().to_string();
    let bob = env.ok(ws.path(), &["plugin", "keygen", "--out", s(&bob_key)]).trim().to_string();

    // Unsigned, default "ask": shown, refused without --allow-unsigned (--yes is not enough).
    let plain = release(work.path(), "guest-chat", "plain");
    let err = env.refused(ws.path(), &["plugin", "add", s(&plain), "--yes"], &["unsigned", "--allow-unsigned"]);
    assert!(err.contains("[trust] unsigned = \"ask\""), "{err}");
    let out = env.ok(ws.path(), &["plugin", "add", s(&plain), "--allow-unsigned"]);
    assert!(out.contains("Signature: none") && out.contains("Installed chat"), "{out}");
    let listing = env.ok(ws.path(), &["plugin", "list"]);
    assert!(listing.contains("; unsigned"), "{listing}");

    // A bad signature: the manifest's network request swapped after signing.
    let signed = release(work.path(), "guest-chat", "swap");
    env.ok(ws.path(), &["plugin", "sign", s(&signed), "--key", s(&alice_key)]);
    let mut bytes = std::fs::read(&signed).unwrap();
    let at = bytes.windows(12).position(|w| w == b"${api_base}/").expect("the manifest asks for ${api_base}/");
    bytes[at..at + 12].copy_from_slice(b"http://x.io/");
    let swapped = work.path().join("swapped.wasm");
    std::fs::write(&swapped, &bytes).unwrap();
    env.refused(ws.path(), &["plugin", "verify", s(&swapped)], &["does not verify", &alice, "changed after it was signed"]);
    for extra in [&[][..], &["--yes", "--allow-unsigned"][..]] {
        let mut args = vec!["plugin", "add", s(&swapped), "--name", "swapped"];
        args.extend_from_slice(extra);
        env.refused(ws.path(), &args, &["does not verify", "whatever [trust] says", "Nothing was installed"]);
    }

    // "refuse": unsigned and unknown keys are refused, even with every flag; trusted keys install.
    let strict = TestWorkspace::new(&format!("\n[trust]\nunsigned = \"refuse\"\npublishers = [\"{alice}\"]\n"));
    env.refused(strict.path(), &["plugin", "add", s(&plain), "--allow-unsigned", "--yes"], &["unsigned = \"refuse\""]);
    let by_bob = release(work.path(), "guest-chat", "bob");
    env.ok(ws.path(), &["plugin", "sign", s(&by_bob), "--key", s(&bob_key)]);
    env.refused(strict.path(), &["plugin", "add", s(&by_bob), "--yes", "--allow-unsigned"], &[&bob, "not in [trust] publishers", "refuse"]);
    let by_alice = release(work.path(), "guest-chat", "alice");
    env.ok(ws.path(), &["plugin", "sign", s(&by_alice), "--key", s(&alice_key)]);
    let out = env.ok(strict.path(), &["plugin", "add", s(&by_alice)]);
    assert!(out.contains("(trusted: listed in [trust] publishers)"), "{out}");

    // "allow": unsigned installs without a flag; an unknown key installs, untrusted.
    let open = TestWorkspace::new("\n[trust]\nunsigned = \"allow\"\n");
    env.ok(open.path(), &["plugin", "add", s(&plain), "--name", "a"]);
    let out = env.ok(open.path(), &["plugin", "add", s(&by_bob), "--name", "b"]);
    assert!(out.contains("without trusting it"), "{out}");
    let toml = std::fs::read_to_string(open.path().join("kata.toml")).unwrap();
    let policy = kata::policy::Policy::load(&open.path().join("kata.toml"), open.path()).unwrap();
    assert!(policy.file.trust.publishers.is_empty() && toml.contains(&format!("publisher = \"{bob}\"")), "{toml}");

    // Publisher change on upgrade: alice's plugin, offered bob's code or unsigned code.
    let ws2 = TestWorkspace::new(&format!("\n[trust]\npublishers = [\"{alice}\", \"{bob}\"]\n"));
    env.ok(ws2.path(), &["plugin", "add", s(&by_alice)]);
    env.refused(
        ws2.path(),
        &["plugin", "upgrade", "chat", s(&by_bob), "--yes"],
        &[&format!("published by {alice}"), &format!("signed by {bob}"), "supply-chain", "--allow-publisher-change"],
    );
    let plain2 = release(work.path(), "guest-chat", "plain2");
    env.refused(
        ws2.path(),
        &["plugin", "upgrade", "chat", s(&plain2), "--yes", "--allow-unsigned"],
        &["is unsigned", "--allow-publisher-change"],
    );
    // A kata.toml without the recorded publisher still pins it: the stored code's signature.
    let toml_path = ws2.path().join("kata.toml");
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    std::fs::write(&toml_path, toml.replace(&format!("publisher = \"{alice}\"\n"), "")).unwrap();
    env.refused(ws2.path(), &["plugin", "upgrade", "chat", s(&by_bob)], &[&format!("published by {alice}")]);
    let out = env.ok(ws2.path(), &["plugin", "upgrade", "chat", s(&by_bob), "--allow-publisher-change"]);
    assert!(out.contains("Publisher change allowed") && out.contains("Upgraded chat"), "{out}");
    assert!(std::fs::read_to_string(&toml_path).unwrap().contains(&format!("publisher = \"{bob}\"")));
}

/// The registry side of bad input: a tag that does not exist, a layer whose
/// bytes do not match the manifest's digest, a size over --max-size, 401
/// without and with wrong credentials (then right ones, from `auths` and from
/// a credential helper), all against the real registry.
#[test]
fn registry_refusals_change_nothing() {
    let env = Env::new();
    let reg = Registry::start(true);
    let work = tempfile::tempdir().unwrap();
    let ws = TestWorkspace::new("");
    let key = work.path().join("k.pem");
    env.ok(ws.path(), &["plugin", "keygen", "--out", s(&key)]);
    let v1 = release(work.path(), "guest-chat", "v1");
    env.ok(ws.path(), &["plugin", "sign", s(&v1), "--key", s(&key)]);
    let r1 = reg.reference("kata/chat:1.0.0");

    // 401: no credentials, then wrong ones.
    env.refused(
        ws.path(),
        &["plugin", "publish", s(&v1), &r1],
        &["asks for a user name and password", &format!("docker login {}", reg.host())],
    );
    env.login(&reg, "kata", "wrong");
    env.refused(ws.path(), &["plugin", "publish", s(&v1), &r1], &["refused the credentials of user \"kata\"", "HTTP 401"]);
    env.login(&reg, "kata", "s3cret");
    env.ok(ws.path(), &["plugin", "publish", s(&v1), &r1]);
    env.docker_config(serde_json::json!({}));
    env.refused(ws.path(), &["plugin", "add", &r1, "--yes"], &["asks for a user name and password"]);

    // Credentials from a credential helper.
    let bin = work.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-kata-test");
    std::fs::write(
        &helper,
        "#!/bin/sh\nread host\necho \"{\\\"ServerURL\\\":\\\"$host\\\",\\\"Username\\\":\\\"kata\\\",\\\"Secret\\\":\\\"s3cret\\\"}\"\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    env.docker_config(serde_json::json!({ "credHelpers": { reg.host(): "kata-test" } }));
    let mut env = env;
    env.extra.push(("PATH".into(), format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default())));

    // A tag that does not exist: the message lists the ones that do.
    env.refused(
        ws.path(),
        &["plugin", "add", &reg.reference("kata/chat:9.9.9"), "--yes"],
        &["no tag \"9.9.9\"", "1.0.0", "nothing was installed"],
    );
    env.refused(ws.path(), &["plugin", "add", &reg.reference("kata/nothing:1.0.0"), "--yes"], &["kata/nothing"]);
    // A digest that does not exist.
    env.refused(
        ws.path(),
        &["plugin", "add", &reg.reference(&format!("kata/chat@sha256:{}", "0".repeat(64))), "--yes"],
        &["no manifest sha256:000"],
    );
    // Over --max-size: refused before the download.
    env.refused(ws.path(), &["plugin", "add", &r1, "--yes", "--max-size", "1KiB"], &["over the 1024-byte limit"]);

    // Installs with the helper's credentials.
    let out = env.ok(ws.path(), &["plugin", "add", &r1, "--yes"]);
    assert!(out.contains("Installed chat"), "{out}");
    env.ok(ws.path(), &["plugin", "remove", "chat"]);

    // The registry serves other bytes than the manifest names (its storage
    // was tampered with): the layer digest check refuses them.
    let manifest: serde_json::Value = serde_json::from_slice(&authed_get(&reg, "/v2/kata/chat/manifests/1.0.0")).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_string();
    let file = reg.blob_file(&layer);
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    env.refused(
        ws.path(),
        &["plugin", "add", &r1, "--yes"],
        &["has digest sha256:", &format!("its manifest names {layer}"), "nothing was installed"],
    );
}

/// GET with the test registry's credentials.
fn authed_get(reg: &Registry, path: &str) -> Vec<u8> {
    let r = reqwest::blocking::Client::new()
        .get(format!("http://{}{path}", reg.host()))
        .basic_auth("kata", Some("s3cret"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.bytes().unwrap().to_vec()
}

/// What the fake registry answers: status, headers, body, and how many body
/// bytes to send before hanging up (a download cut short).
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    cut: Option<usize>,
}

impl Answer {
    fn new(status: u16, body: Vec<u8>) -> Self {
        Self { status, headers: Vec::new(), body, cut: None }
    }
}

/// A loopback HTTP server answering each request with `handler(head)`, for
/// what a real registry does not do on demand.
struct FakeRegistry {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeRegistry {
    fn start(handler: impl Fn(&str, u16) -> Answer + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let (head, _) = common::read_request(&mut BufReader::new(stream.try_clone().unwrap()));
                log.lock().unwrap().push(head.clone());
                let a = handler(&head, port);
                let mut out = format!("HTTP/1.1 {} X\r\ncontent-length: {}\r\nconnection: close\r\n", a.status, a.body.len());
                for (k, v) in &a.headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                let _ = stream.write_all(out.as_bytes());
                let _ = stream.write_all(&a.body[..a.cut.unwrap_or(a.body.len())]);
                let _ = stream.flush();
            }
        });
        Self { port, requests }
    }

    fn reference(&self, repo_tag: &str) -> String {
        format!("oci://127.0.0.1:{}/{repo_tag}", self.port)
    }
}

/// A manifest for `layer` in the WebAssembly layout.
fn manifest_for(layer: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.wasm.config.v0+json", "digest": format!("sha256:{}", sha256(b"{}")), "size": 2 },
        "layers": [{ "mediaType": "application/wasm", "digest": format!("sha256:{}", sha256(layer)), "size": layer.len() }],
    }))
    .unwrap()
}

/// Registries that fail: HTTP 500, a download cut short, a manifest that is
/// not a WebAssembly artifact; and the bearer-token challenge (token fetched
/// from the realm with the Docker credentials, then sent).
#[test]
fn failing_registries_and_bearer_tokens() {
    let env = Env::new();
    let ws = TestWorkspace::new("");
    let work = tempfile::tempdir().unwrap();
    let key = work.path().join("k.pem");
    env.ok(ws.path(), &["plugin", "keygen", "--out", s(&key)]);
    let v1 = release(work.path(), "guest-chat", "v1");
    env.ok(ws.path(), &["plugin", "sign", s(&v1), "--key", s(&key)]);
    let component = std::fs::read(&v1).unwrap();

    let broken = FakeRegistry::start(|_, _| Answer::new(500, br#"{"errors":[{"code":"UNKNOWN","message":"disk on fire"}]}"#.to_vec()));
    env.refused(
        ws.path(),
        &["plugin", "add", &broken.reference("kata/chat:1.0.0"), "--yes"],
        &["HTTP 500", "disk on fire", "try again later"],
    );
    env.refused(ws.path(), &["plugin", "publish", s(&v1), &broken.reference("kata/chat:1.0.0")], &["HTTP 500"]);

    let (m, c) = (manifest_for(&component), component.clone());
    let cut = FakeRegistry::start(move |head, _| {
        if head.contains("/manifests/") {
            Answer::new(200, m.clone())
        } else {
            Answer { cut: Some(c.len() / 2), ..Answer::new(200, c.clone()) }
        }
    });
    env.refused(ws.path(), &["plugin", "add", &cut.reference("kata/chat:1.0.0"), "--yes"], &["cut short", "nothing was installed"]);

    let image = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", "1".repeat(64)), "size": 2 },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{}", "2".repeat(64)), "size": 9 }],
    }))
    .unwrap();
    let container = FakeRegistry::start(move |_, _| Answer::new(200, image.clone()));
    env.refused(ws.path(), &["plugin", "add", &container.reference("library/nginx:1"), "--yes"], &["not a WebAssembly component artifact"]);

    // Bearer: /v2/… answers 401 with a challenge naming /token; /token wants
    // the Docker credentials and issues a token the registry then accepts.
    let (m, c) = (manifest_for(&component), component.clone());
    let bearer = FakeRegistry::start(move |head, port| {
        let line = head.lines().next().unwrap_or("").to_string();
        if line.contains("/token?") {
            // kata:s3cret
            if head.contains("authorization: Basic a2F0YTpzM2NyZXQ=") || head.contains("Authorization: Basic a2F0YTpzM2NyZXQ=") {
                assert!(line.contains("scope=repository%3Akata%2Fchat%3Apull") && line.contains("service=fake"), "{line}");
                return Answer::new(200, br#"{"token":"t0ken"}"#.to_vec());
            }
            return Answer::new(401, b"{}".to_vec());
        }
        if !head.to_ascii_lowercase().contains("authorization: bearer t0ken") {
            let challenge = format!("Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake\",scope=\"repository:kata/chat:pull\"");
            return Answer { headers: vec![("WWW-Authenticate".into(), challenge)], ..Answer::new(401, b"{}".to_vec()) };
        }
        if line.contains("/manifests/") { Answer::new(200, m.clone()) } else { Answer::new(200, c.clone()) }
    });
    let r = bearer.reference("kata/chat:1.0.0");
    env.refused(ws.path(), &["plugin", "add", &r, "--yes"], &["refused", "docker login"]);
    let config = serde_json::json!({ "auths": { format!("127.0.0.1:{}", bearer.port): { "username": "kata", "password": "s3cret" } } });
    env.docker_config(config);
    let out = env.ok(ws.path(), &["plugin", "add", &r, "--yes"]);
    assert!(out.contains("Installed chat"), "{out}");
    let requests = bearer.requests.lock().unwrap().clone();
    assert!(requests.iter().any(|h| h.contains("/token?")), "{requests:?}");
}

/// The tamper check's advice works: a stored file changed after
/// installation is refused, and reinstalling the same bytes (`upgrade NAME
/// FILE` or `add FILE`) restores it instead of saying "nothing to do".
#[test]
fn a_tampered_store_is_restored_by_reinstalling() {
    let env = Env::new();
    let ws = TestWorkspace::new("");
    let quiet = guest("guest-quiet");
    env.ok(ws.path(), &["plugin", "add", s(&quiet), "--name", "quiet", "--allow-unsigned"]);
    let policy = kata::policy::Policy::load(&ws.path().join("kata.toml"), ws.path()).unwrap();
    let stored = policy.plugins["quiet"].path.clone().unwrap();
    std::fs::copy(guest("guest-trap"), &stored).unwrap();
    let out = env.ok(ws.path(), &["plugin", "list"]);
    assert!(out.contains("changed after it was installed"), "{out}");
    let out = env.ok(ws.path(), &["plugin", "upgrade", "quiet", s(&quiet), "--allow-unsigned"]);
    assert!(out.contains("Restored quiet's stored code"), "{out}");
    assert_eq!(std::fs::read(&stored).unwrap(), std::fs::read(&quiet).unwrap());
    std::fs::copy(guest("guest-trap"), &stored).unwrap();
    let out = env.ok(ws.path(), &["plugin", "add", s(&quiet), "--name", "quiet", "--allow-unsigned"]);
    assert!(out.contains("Restored quiet's stored code"), "{out}");
    assert_eq!(std::fs::read(&stored).unwrap(), std::fs::read(&quiet).unwrap());
    let out = env.ok(ws.path(), &["plugin", "add", s(&quiet), "--name", "quiet", "--allow-unsigned"]);
    assert!(out.contains("nothing to do"), "{out}");
}

/// The tamper check on reload: a stored component replaced while the daemon
/// runs (its compiled copy already in the cache) is refused at `kata
/// reload` before anything compiles it or loads it from the cache — logged,
/// audited, `refused` in `kata status` — and the other plugin keeps running.
#[test]
fn a_component_tampered_with_while_the_daemon_runs_is_refused_at_reload() {
    let env = Env::new();
    let ws = TestWorkspace::new("");
    for (file, name) in [("guest-v0-1-0", "healthy"), ("guest-quiet", "victim")] {
        env.ok(ws.path(), &["plugin", "add", s(&guest(file)), "--name", name, "--yes", "--allow-unsigned"]);
    }
    let toml_path = ws.path().join("kata.toml");
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    std::fs::write(&toml_path, toml.replace("[plugins.healthy]\n", "[plugins.healthy]\nallow_from = [\"*\"]\n")).unwrap();
    let stored = kata::policy::Policy::load(&toml_path, ws.path()).unwrap().plugins["victim"].path.clone().unwrap();

    let mut daemon = ws.run(&[]);
    common::wait_for_or(
        "both plugins to load",
        Duration::from_secs(60),
        || ws.log(),
        || (ws.log().matches("plugin loaded").count() >= 2).then_some(()),
    );
    let db = wait_for("the daemon's database", Duration::from_secs(30), || kata::store::Db::open(&ws.path().join(".kata/kata.db")).ok());
    common::wait_for_or(
        "the healthy plugin's replies",
        Duration::from_secs(60),
        || ws.log(),
        || (db.plugin_activity("healthy").ok()?.sent == 3).then_some(()),
    );

    std::fs::copy(guest("guest-trap"), &stored).unwrap();
    let out = env.ok(ws.path(), &["reload"]);
    assert!(out.contains("Stopped: victim"), "{out}");
    let (ok, out, err) = env.kata(ws.path(), &["status", "--json"]);
    assert!(ok, "{err}");
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    let find = |n: &str| st["plugins"].as_array().unwrap().iter().find(|p| p["name"] == n).cloned().unwrap_or_default();
    assert_eq!(find("victim")["health"]["state"], "refused", "{st:#}");
    assert!(find("victim")["health"]["last_error"].as_str().unwrap_or("").contains("changed after it was installed"), "{st:#}");
    assert_ne!(find("healthy")["health"]["state"], "refused", "{st:#}");
    assert!(!find("healthy").is_null(), "the other plugin still runs: {st:#}");
    assert!(ws.log().contains("not loading plugin victim"), "{}", ws.log());
    assert!(!ws.log().contains("guest-trap always crashes"), "the swapped code never ran: {}", ws.log());
    let (ok, out, _) = env.kata(ws.path(), &["audit", "--json", "--plugin", "victim"]);
    assert!(ok);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(rows.as_array().unwrap().iter().any(|r| r["kind"] == "integrity" && r["verdict"] == "deny"), "{rows:#}");
    assert!(daemon.signal_and_wait("TERM").success(), "{}", ws.log());
}
