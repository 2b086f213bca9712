//! Who published a plugin, and whether this workspace takes it: the trust
//! decision of `kata plugin add|upgrade`, and `kata plugin keygen|sign|verify|
//! publish|outdated`.
//!
//! The decision, from the component's embedded signature ([`crate::signing`])
//! and the workspace's `[trust]` table:
//!
//! | signature | `unsigned = "refuse"` | `"ask"` (default) | `"allow"` |
//! |---|---|---|---|
//! | by a key in `publishers` | installs | installs | installs |
//! | by another key | refused | shown; trusted on first use with `--yes` or consent at the terminal, recorded in `[trust] publishers` | installs (with `--yes` the key is also trusted) |
//! | none | refused | needs `--allow-unsigned` or consent at the terminal (`--yes` alone is not enough: there is no publisher to pin) | installs |
//! | does not verify | refused | refused | refused |
//!
//! `--yes` keeps its meaning — accept what the review shows and record it in
//! kata.toml — so it covers a new publisher key (which is then pinned), but
//! not an unsigned plugin, which has nothing to record and nothing to pin.
//!
//! Each plugin's publisher and origin are recorded in its `[plugins.NAME]`
//! table (`publisher = "ed25519:…"`, `source = "oci://…"`), where they are
//! reviewed and versioned with the grants they go with. An upgrade whose
//! signer differs from the recorded publisher (or is unsigned) is refused
//! unless `--allow-publisher-change`: a swapped publisher is the classic
//! supply-chain attack. When a table records no publisher (written by hand,
//! or older), the signature of the stored component stands in for it — the
//! stored bytes keep their signature and are hash-checked.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::oci::{Reference, Registry};
use crate::policy::{Policy, PublisherKey, Unsigned};
use crate::signing::{self, Signature, SigningKey};
use crate::workspace::Workspace;

/// What the person running `add`/`upgrade` consented to on the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Consent {
    /// `--yes`: accept what is shown (grants, a new publisher key).
    pub yes: bool,
    /// `--allow-unsigned`.
    pub allow_unsigned: bool,
    /// `--allow-publisher-change` (upgrade).
    pub allow_publisher_change: bool,
}

/// The outcome of the trust decision.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The signature found.
    pub signature: Signature,
    /// The publisher to record for the plugin (None: unsigned).
    pub publisher: Option<PublisherKey>,
    /// Add the publisher to `[trust] publishers` (trust on first use).
    pub trust_new: bool,
}

/// Ask a yes/no question at the terminal; None when there is no terminal.
fn ask(question: &str) -> Result<Option<bool>> {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Ok(None);
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(Some(matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")))
}

fn describe(sig: &Signature) -> String {
    match sig {
        Signature::Signed(k) => format!("signed by {k}"),
        Signature::Unsigned => "unsigned".into(),
        Signature::Unidentified => "signed by a key kata cannot identify".into(),
        Signature::Invalid { .. } => "carries a signature that does not verify".into(),
    }
}

/// The publisher of an installed plugin: the one its table records, else
/// the signer of its stored component.
pub fn installed_publisher(policy: &Policy, name: &str) -> Option<PublisherKey> {
    let entry = policy.file.plugins.get(name)?;
    if let Some(k) = entry.publisher.as_deref().and_then(|p| PublisherKey::parse(p).ok()) {
        return Some(k);
    }
    let path = policy.plugins.get(name)?.path.as_ref()?;
    let bytes = crate::plugin::read_plugin(path).ok()?;
    signing::check(&bytes, &policy.file.trust.keys()).publisher()
}

/// Decide whether `bytes` (plugin `name`, from `source`) may be installed.
/// `upgrade_from` is the installed publisher when upgrading (`Some(None)`:
/// installed unsigned). Prints the signature line of the review to `out`;
/// asks at the terminal when the policy says ask and no flag decided.
pub fn decide(
    policy: &Policy,
    name: &str,
    source: &str,
    bytes: &[u8],
    upgrade_from: Option<Option<PublisherKey>>,
    consent: &Consent,
    out: &mut dyn Write,
) -> Result<Verdict> {
    let trust = &policy.file.trust;
    let signature = signing::check(bytes, &trust.keys());
    let mode = trust.unsigned;
    let at = policy.path.display();
    if let Signature::Invalid { claimed, reason } = &signature {
        let by = claimed.map_or(String::new(), |k| format!(" (it names publisher {k})"));
        bail!(
            "{source} carries a signature that does not verify{by}: {reason}. kata refuses it whatever [trust] says; get the \
             plugin again from its publisher, or check it with `kata plugin verify`. Nothing was installed"
        );
    }
    if let Some(Some(before)) = upgrade_from
        && signature.publisher() != Some(before)
    {
        if !consent.allow_publisher_change {
            bail!(
                "not upgraded: {name} was published by {before}, but {source} is {}. A changed publisher is what a \
                 supply-chain attack looks like; if you know the publisher moved to a new key, re-run with \
                 --allow-publisher-change. Nothing was changed",
                describe(&signature)
            );
        }
        writeln!(out, "Publisher change allowed (--allow-publisher-change): {before} -> {}.", describe(&signature))?;
    }
    let same_as_installed = matches!((upgrade_from, signature.publisher()), (Some(Some(a)), Some(b)) if a == b);
    match signature {
        Signature::Signed(k) if trust.trusts(&k) => {
            writeln!(out, "Signature: signed by {k} (trusted: listed in [trust] publishers).")?;
            Ok(Verdict { signature, publisher: Some(k), trust_new: false })
        }
        Signature::Signed(k) => {
            if mode == Unsigned::Refuse {
                bail!(
                    "{name} is signed by {k}, which is not in [trust] publishers of {at}, and [trust] unsigned = \"refuse\" installs \
                     only plugins of trusted publishers. If you trust this publisher, add \"{k}\" to [trust] publishers and re-run. \
                     Nothing was installed"
                );
            }
            if same_as_installed {
                writeln!(out, "Signature: signed by {k}, the publisher of the installed version (not in [trust] publishers).")?;
                return Ok(Verdict { signature, publisher: Some(k), trust_new: false });
            }
            writeln!(out, "Signature: signed by {k}, a publisher this workspace does not trust yet.")?;
            if consent.yes {
                writeln!(out, "Trusting {k} (--yes): recorded in [trust] publishers of {at}.")?;
                return Ok(Verdict { signature, publisher: Some(k), trust_new: true });
            }
            if mode == Unsigned::Allow {
                writeln!(out, "Installed without trusting it ([trust] unsigned = \"allow\"); --yes would add it to [trust] publishers.")?;
                return Ok(Verdict { signature, publisher: Some(k), trust_new: false });
            }
            match ask(&format!("Trust {k} as a plugin publisher (recorded in {at}) and install {name}?"))? {
                Some(true) => Ok(Verdict { signature, publisher: Some(k), trust_new: true }),
                Some(false) => bail!("{name} not installed: publisher {k} not trusted. Nothing was installed"),
                None => bail!(
                    "{name} is signed by {k}, a publisher this workspace does not trust yet. Check the key with the publisher; to \
                     trust it on first use (recorded in [trust] publishers of {at}) re-run with --yes, or add it there by hand. \
                     Nothing was installed"
                ),
            }
        }
        Signature::Unsigned | Signature::Unidentified => {
            let what = if signature == Signature::Unsigned {
                "unsigned: nobody vouches for these bytes".to_string()
            } else {
                "signed by a key kata cannot identify (the signature names no Ed25519 key and no trusted key verifies it)".to_string()
            };
            let head = if signature == Signature::Unsigned { "none" } else { "unidentified" };
            writeln!(out, "Signature: {head} — {name} is {what}.")?;
            match mode {
                Unsigned::Refuse => bail!(
                    "{name} is {what}, and [trust] unsigned = \"refuse\" in {at} installs only plugins of trusted publishers. Ask \
                     its author for a signed build (`kata plugin sign`), or change [trust] unsigned. Nothing was installed"
                ),
                Unsigned::Allow => Ok(Verdict { signature, publisher: None, trust_new: false }),
                Unsigned::Ask if consent.allow_unsigned => Ok(Verdict { signature, publisher: None, trust_new: false }),
                Unsigned::Ask => match ask(&format!("Install {name} unsigned?"))? {
                    Some(true) => Ok(Verdict { signature, publisher: None, trust_new: false }),
                    Some(false) => bail!("{name} not installed (unsigned). Nothing was installed"),
                    None => bail!(
                        "{name} is {what}, and [trust] unsigned = \"ask\": install it anyway with --allow-unsigned (--yes does not \
                         cover this: an unsigned plugin has no publisher to pin), or ask its author for a signed build (`kata \
                         plugin sign`). Nothing was installed"
                    ),
                },
            }
        }
        Signature::Invalid { .. } => unreachable!("refused above"),
    }
}

/// Record the verdict in kata.toml: `source` and `publisher` in the plugin's
/// table, and a newly trusted key in `[trust] publishers` with a comment
/// naming the plugin.
pub fn record(doc: &mut toml_edit::DocumentMut, name: &str, source: &str, verdict: &Verdict) -> Result<()> {
    let table = doc
        .get_mut("plugins")
        .and_then(|p| p.as_table_mut())
        .and_then(|p| p.get_mut(name))
        .and_then(|t| t.as_table_mut())
        .with_context(|| format!("[plugins.{name}] is missing from kata.toml"))?;
    table.insert("source", toml_edit::value(source));
    match verdict.publisher {
        Some(k) => {
            table.insert("publisher", toml_edit::value(k.to_string()));
        }
        None => {
            table.remove("publisher");
        }
    }
    let Some(k) = verdict.publisher.filter(|_| verdict.trust_new) else { return Ok(()) };
    if doc.get("trust").is_none() {
        let mut t = toml_edit::Table::new();
        t.decor_mut().set_prefix("\n");
        doc.insert("trust", toml_edit::Item::Table(t));
    }
    let trust = doc["trust"].as_table_mut().context("`trust` in kata.toml is not a table")?;
    let publishers = trust
        .entry("publishers")
        .or_insert_with(|| toml_edit::value(toml_edit::Array::new()))
        .as_array_mut()
        .context("[trust] publishers in kata.toml is not an array")?;
    let mut v = toml_edit::Value::from(k.to_string());
    v.decor_mut().set_prefix(format!("\n    # {name} ({source}), trusted on first use {}\n    ", crate::oci::today()));
    publishers.push_formatted(v);
    publishers.set_trailing_comma(true);
    publishers.set_trailing("\n");
    Ok(())
}

/// `kata plugin keygen [--out PATH] [--force]`.
pub fn keygen(out_path: Option<PathBuf>, force: bool, out: &mut dyn Write) -> Result<()> {
    let path = match out_path {
        Some(p) => p,
        None => signing::default_key_path()?,
    };
    let key = signing::keygen(&path, force)?;
    writeln!(out, "{key}")?;
    eprintln!(
        "Private key: {} (mode 0600; keep it secret and backed up). Public key id: {} (also in {}).\n\
         Sign a plugin with `kata plugin sign FILE{}`; users trust it with [trust] publishers = [\"{key}\"].",
        path.display(),
        key,
        signing::public_key_path(&path).display(),
        if path == signing::default_key_path().unwrap_or_default() {
            String::new()
        } else {
            format!(" --key {}", crate::util::shell_quote(&path))
        }
    );
    Ok(())
}

/// `kata plugin sign FILE [--key PATH] [--out FILE]`.
pub fn sign(file: &Path, key: Option<&Path>, out_file: Option<&Path>, out: &mut dyn Write) -> Result<()> {
    let key_path = match key {
        Some(k) => k.to_path_buf(),
        None => signing::default_key_path()?,
    };
    if key.is_none() && !key_path.exists() {
        bail!("no signing key at {}; create one with `kata plugin keygen`, or name one with --key PATH", key_path.display());
    }
    let key = SigningKey::load(&key_path)?;
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    // A component kata can read: signing anything else helps nobody.
    crate::plugin::inspect(&bytes, &file.display().to_string())?;
    let before = signing::check(&bytes, &[]);
    let signed = signing::sign(&bytes, &key).with_context(|| format!("cannot sign {}", file.display()))?;
    let dest = out_file.unwrap_or(file);
    let tmp = dest.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &signed).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, dest).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    if let Signature::Signed(old) = before
        && old != key.publisher()
    {
        writeln!(out, "Replaced the signature by {old}.")?;
    }
    writeln!(out, "Signed {} as {} (sha256 {}).", dest.display(), key.publisher(), hex::encode(Sha256::digest(&signed)))?;
    Ok(())
}

/// `kata plugin verify FILE [--publisher KEY]`: succeeds only for a valid
/// signature (by `publisher`, when given); says whether the workspace trusts it.
pub fn verify(ws: Option<&Workspace>, file: &Path, publisher: Option<&str>, out: &mut dyn Write) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let policy = ws.map(|w| Policy::load(&w.policy_path(), w.root())).transpose()?;
    let known = policy.as_ref().map(|p| p.file.trust.keys()).unwrap_or_default();
    let want = publisher.map(PublisherKey::parse).transpose().map_err(anyhow::Error::msg)?;
    let known: Vec<PublisherKey> = known.into_iter().chain(want).collect();
    let shown = file.display();
    match signing::check(&bytes, &known) {
        Signature::Signed(k) => {
            if let Some(w) = want
                && w != k
            {
                bail!("{shown} is signed by {k}, not by {w}");
            }
            let trusted = match &policy {
                Some(p) if p.file.trust.trusts(&k) => format!("trusted by this workspace ([trust] in {})", p.path.display()),
                Some(p) => format!("NOT in [trust] publishers of {}", p.path.display()),
                None => "no workspace to check trust against".into(),
            };
            writeln!(out, "{shown}: signed by {k} — {trusted}.")?;
            writeln!(out, "The signature covers the whole component (code, imports and its kata:manifest grants).")?;
            Ok(())
        }
        Signature::Unsigned => bail!("{shown} is not signed; sign it with `kata plugin sign {}`", crate::util::shell_quote(file)),
        Signature::Unidentified => {
            bail!(
                "{shown} is signed, but by a key kata cannot identify (no Ed25519 key id); verify with --publisher ed25519:… if you know it"
            )
        }
        Signature::Invalid { claimed, reason } => {
            let by = claimed.map_or(String::new(), |k| format!(" (it names publisher {k})"));
            bail!("{shown} carries a signature that does not verify{by}: {reason}")
        }
    }
}

/// `kata plugin publish FILE oci://REGISTRY/NAME:TAG`.
pub fn publish(file: &Path, reference: &str, out: &mut dyn Write) -> Result<()> {
    let r = Reference::parse(reference)?;
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let info = crate::plugin::inspect(&bytes, &file.display().to_string())?;
    if crate::plugin::Kind::of(&info).is_none() {
        bail!(
            "{} is not a kata plugin (it exports {}); kata publishes channel, tools and service plugins",
            file.display(),
            info.exports.join(", ")
        );
    }
    let signature = signing::check(&bytes, &[]);
    if let Signature::Invalid { reason, .. } = &signature {
        bail!(
            "{} carries a signature that does not verify ({reason}); sign it again with `kata plugin sign` before publishing",
            file.display()
        );
    }
    let mut annotations = vec![("org.opencontainers.image.created", crate::oci::rfc3339_now())];
    if let Some(m) = &info.manifest {
        annotations.push(("org.opencontainers.image.title", m.name.clone()));
        annotations.push(("org.opencontainers.image.version", m.version.clone()));
        if !m.description.is_empty() {
            annotations.push(("org.opencontainers.image.description", m.description.clone()));
        }
    }
    if let Some(k) = signature.publisher() {
        annotations.push((crate::oci::PUBLISHER_ANNOTATION, k.to_string()));
    }
    let mut reg = Registry::new(&r.registry)?;
    let digest = reg.push(&r, &bytes, &info, &annotations).with_context(|| format!("publishing {} to {r} failed", file.display()))?;
    writeln!(out, "Published {} to {r} (manifest {digest}, {} bytes, {}).", file.display(), bytes.len(), describe(&signature))?;
    if signature == Signature::Unsigned {
        writeln!(
            out,
            "Note: it is unsigned, so `kata plugin add` asks before installing it; sign it with `kata plugin sign` and publish again."
        )?;
    }
    writeln!(out, "Install it with `kata plugin add {r}` (or pinned: {}).", r.with_digest(&digest))?;
    Ok(())
}

/// One row of `kata plugin outdated`.
#[derive(Debug, serde::Serialize)]
pub struct Outdated {
    /// The plugin's name.
    pub name: String,
    /// Where it came from.
    pub source: Option<String>,
    /// `current`, `newer` (a later tag, or new content under the same tag
    /// or file), `pinned` (by digest), `unchecked` or `error`.
    pub status: &'static str,
    /// The later tag or what changed, for people.
    pub detail: String,
    /// What to run to upgrade, if anything.
    pub upgrade: Option<String>,
}

/// `kata plugin outdated`: newer tags for OCI sources, changed files for
/// file sources; URLs are not re-downloaded.
pub fn outdated(ws: &Workspace) -> Result<Vec<Outdated>> {
    let policy = Policy::load(&ws.policy_path(), ws.root())?;
    let mut rows = Vec::new();
    for (name, entry) in &policy.file.plugins {
        let installed = policy.plugins.get(name).and_then(|g| g.path.as_ref()).and_then(|p| std::fs::read(p).ok());
        let installed_sha = installed.as_ref().map(|b| hex::encode(Sha256::digest(b)));
        let source = entry.source.clone();
        let mut row = Outdated { name: name.clone(), source: source.clone(), status: "unchecked", detail: String::new(), upgrade: None };
        match source.as_deref() {
            None => row.detail = "no recorded source (installed by hand, or before kata recorded sources)".into(),
            Some(s) if Reference::is_oci(s) => match check_oci(s, installed_sha.as_deref()) {
                Ok((status, detail, newer)) => {
                    row.status = status;
                    row.detail = detail;
                    row.upgrade = newer.map(|r| format!("kata plugin upgrade {name} {r}"));
                }
                Err(e) => {
                    row.status = "error";
                    row.detail = format!("{e:#}");
                }
            },
            Some(s) if s.starts_with("http://") || s.starts_with("https://") => {
                row.detail = "a URL is not re-downloaded to compare; `kata plugin upgrade NAME` fetches it again".into();
            }
            Some(s) => match std::fs::read(s) {
                Ok(bytes) if Some(hex::encode(Sha256::digest(&bytes))) == installed_sha => {
                    row.status = "current";
                    row.detail = "the file has not changed".into();
                }
                Ok(_) => {
                    row.status = "newer";
                    row.detail = "the file changed since it was installed".into();
                    row.upgrade = Some(format!("kata plugin upgrade {name}"));
                }
                Err(e) => {
                    row.status = "error";
                    row.detail = format!("cannot read {s}: {e}");
                }
            },
        }
        rows.push(row);
    }
    Ok(rows)
}

/// (status, detail, reference to upgrade to) for one OCI source.
fn check_oci(source: &str, installed_sha: Option<&str>) -> Result<(&'static str, String, Option<Reference>)> {
    let r = Reference::parse(source)?;
    let mut reg = Registry::new(&r.registry)?;
    if r.tag.is_none() {
        return Ok(("pinned", "pinned by digest".into(), None));
    }
    let tag = r.tag.clone().unwrap_or_default();
    let tags = reg.tags(&r)?;
    if let Some(newer) = crate::oci::newer_tag(&tag, &tags) {
        let to = r.with_tag(&newer);
        return Ok(("newer", format!("{newer} is newer than {tag}"), Some(to)));
    }
    // The same tag may name new content (e.g. `latest`).
    let (m, _, _) = reg.manifest(&r)?;
    let layer = m.wasm_layer(&r)?;
    if installed_sha.is_some_and(|h| layer.digest != format!("sha256:{h}")) {
        return Ok(("newer", format!("{tag} now names other content ({})", layer.digest), Some(r.clone())));
    }
    Ok(("current", format!("{tag} is the newest version tag"), None))
}

/// Print `kata plugin outdated` as a table.
pub fn print_outdated(rows: &[Outdated], out: &mut dyn Write) -> Result<()> {
    if rows.is_empty() {
        writeln!(out, "No plugins in this workspace.")?;
        return Ok(());
    }
    writeln!(out, "{:<16} {:<10} DETAIL", "NAME", "STATUS")?;
    for r in rows {
        writeln!(out, "{:<16} {:<10} {}", r.name, r.status, r.detail)?;
        if let Some(u) = &r.upgrade {
            writeln!(out, "{:<16} {:<10} upgrade: {u}", "", "")?;
        }
    }
    Ok(())
}
