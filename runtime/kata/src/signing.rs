//! Plugin signatures: `kata plugin keygen|sign|verify`.
//!
//! # Where the signature lives
//!
//! A signature is embedded in the component itself, as a custom section named
//! `signature` placed first, in the format of the WebAssembly tool
//! conventions' *module signatures* (`Signatures.md` in
//! WebAssembly/tool-conventions, implemented by `wasmsign2`): spec version 1,
//! SHA-256, Ed25519. The signed message is `"wasmsig" ‖ 0x01 ‖ 0x01 ‖ 0x01 ‖
//! SHA-256(every byte after the signature section)`, so the signature covers
//! the whole component — code, imports, and the embedded `kata:manifest`
//! section with the grants it asks for — except itself and the 8-byte
//! preamble. The signature's key id is wasmsign2's default one (the first 12
//! bytes of HMAC-SHA256 keyed with the public key over `"key_id"`), and the
//! signer's public key itself travels in a `kata:publisher` custom section
//! right after the signature (the conventions' key serialization, `0x01 ‖ 32
//! key bytes`), inside what the signature covers: that is what lets kata
//! name an unknown publisher and offer trust on first use, while an
//! attacker who swaps the key breaks the signature.
//!
//! Why embedded rather than a detached `.sig` file (minisign) or an OCI
//! referrer (cosign, Notation):
//!
//! - One file is the whole unit everywhere kata gets plugins from — a path, an
//!   http(s) URL, an OCI layer — so a signature cannot be lost, mismatched or
//!   forgotten on the way, and no registry support for referrers is needed.
//! - The content-addressed store (`.kata/plugins/<sha256>.wasm`) keeps the
//!   signature with the code, so the publisher of an installed plugin can be
//!   re-checked from the stored bytes at any time (`kata plugin list`).
//! - Runtimes that know nothing of signatures ignore custom sections, and
//!   `wasmsign2 verify` checks a kata-signed component as is (and kata checks
//!   one signed by wasmsign2 when its key is trusted).
//!
//! The cost: signing changes the file's bytes (and so its sha256), so a
//! `--sha256` pin or a digest names the *signed* component, and signing
//! replaces an earlier signature instead of adding a second one.
//!
//! # Keys
//!
//! A private key is a PKCS#8 PEM file (`-----BEGIN PRIVATE KEY-----`, the
//! form `openssl genpkey -algorithm ed25519` writes too), created mode 0600.
//! A publisher is named by its public key, `ed25519:<base64>`
//! ([`PublisherKey`]).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use sha2::{Digest, Sha256};

pub use crate::policy::PublisherKey;

/// The custom section that holds the signature data.
pub const SECTION: &str = "signature";
/// The custom section that names the signer's public key (signed content).
pub const PUBLISHER_SECTION: &str = "kata:publisher";
/// The tool conventions' signing domain.
const DOMAIN: &[u8] = b"wasmsig";
/// Specification version, content type (WebAssembly), hash function (SHA-256).
const SPEC_VERSION: u8 = 0x01;
const CONTENT_TYPE: u8 = 0x01;
const HASH_SHA256: u8 = 0x01;
/// Signature algorithm and public-key serialization identifier: Ed25519.
const ED25519_ID: u8 = 0x01;
/// Most hash sets / signatures read from one section (as wasmsign2).
const MAX_HASHES: u32 = 64;
const MAX_SIGNATURES: u32 = 256;

/// What a component's signature says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// No `signature` section.
    Unsigned,
    /// A valid signature over the whole component by this key.
    Signed(PublisherKey),
    /// A valid-looking signature whose key kata cannot tell (no Ed25519 key
    /// id, and none of the keys it was given verifies it).
    Unidentified,
    /// A signature section that does not verify: the component was changed
    /// after it was signed, or the section is damaged. `claimed` is the key
    /// it names, if any.
    Invalid {
        /// The key the signature names.
        claimed: Option<PublisherKey>,
        /// What is wrong.
        reason: String,
    },
}

impl Signature {
    /// One word for tables and JSON: `signed`, `unsigned`, `unidentified`, `invalid`.
    pub fn state(&self) -> &'static str {
        match self {
            Signature::Unsigned => "unsigned",
            Signature::Signed(_) => "signed",
            Signature::Unidentified => "unidentified",
            Signature::Invalid { .. } => "invalid",
        }
    }

    /// The verified publisher, if any.
    pub fn publisher(&self) -> Option<PublisherKey> {
        match self {
            Signature::Signed(k) => Some(*k),
            _ => None,
        }
    }
}

/// One top-level section: its id, its whole payload (for a custom section
/// that includes the name) and, for a custom section, the name and the bytes
/// after it; `end` is the offset just past it.
struct Section<'a> {
    custom: Option<(&'a str, &'a [u8])>,
    start: usize,
    end: usize,
}

fn leb_u32(bytes: &[u8], pos: &mut usize) -> Result<u32> {
    let mut result: u64 = 0;
    for shift in (0..35).step_by(7) {
        let b = *bytes.get(*pos).context("the file ends inside a length")?;
        *pos += 1;
        result |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return u32::try_from(result).context("a length is larger than 32 bits");
        }
    }
    bail!("a length is longer than 5 bytes")
}

fn put_leb(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn take<'a>(bytes: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8]> {
    let end = pos.checked_add(n).filter(|e| *e <= bytes.len()).context("the file ends inside a section")?;
    let s = &bytes[*pos..end];
    *pos = end;
    Ok(s)
}

/// The top-level sections of a module or component.
fn sections(bytes: &[u8]) -> Result<Vec<Section<'_>>> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        bail!("not a WebAssembly file (it does not start with the \\0asm header)");
    }
    let mut pos = 8;
    let mut out = Vec::new();
    while pos < bytes.len() {
        let start = pos;
        let id = bytes[pos];
        pos += 1;
        let size = leb_u32(bytes, &mut pos)? as usize;
        let payload = take(bytes, &mut pos, size)?;
        let custom = if id == 0 {
            let mut p = 0;
            let n = leb_u32(payload, &mut p)? as usize;
            let name = std::str::from_utf8(take(payload, &mut p, n)?).context("a custom section name is not UTF-8")?;
            Some((name, &payload[p..]))
        } else {
            None
        };
        out.push(Section { custom, start, end: pos });
    }
    Ok(out)
}

/// A signature record: key id, algorithm, signature bytes.
struct SigRecord {
    key_id: Vec<u8>,
    alg: u8,
    sig: Vec<u8>,
}

/// The signature data: sets of (hashes, signatures over them).
struct SigData {
    sets: Vec<(Vec<[u8; 32]>, Vec<SigRecord>)>,
}

fn slice<'a>(b: &'a [u8], p: &mut usize) -> Result<&'a [u8]> {
    let n = leb_u32(b, p)? as usize;
    take(b, p, n)
}

impl SigData {
    fn parse(b: &[u8]) -> Result<Self> {
        let mut p = 0;
        let head = take(b, &mut p, 3).context("the signature section is too short")?;
        if head != [SPEC_VERSION, CONTENT_TYPE, HASH_SHA256] {
            bail!(
                "the signature section uses spec version {}, content type {}, hash function {}; kata reads version 1, WebAssembly, SHA-256",
                head[0],
                head[1],
                head[2]
            );
        }
        let count = leb_u32(b, &mut p)?;
        if count > MAX_HASHES {
            bail!("the signature section holds {count} hash sets (at most {MAX_HASHES})");
        }
        let mut sets = Vec::new();
        for _ in 0..count {
            let set = slice(b, &mut p)?;
            let mut q = 0;
            let n = leb_u32(set, &mut q)?;
            if n > MAX_HASHES {
                bail!("a signed hash set holds {n} hashes (at most {MAX_HASHES})");
            }
            let mut hashes = Vec::new();
            for _ in 0..n {
                hashes.push(<[u8; 32]>::try_from(take(set, &mut q, 32)?).context("hash")?);
            }
            let n = leb_u32(set, &mut q)?;
            if n > MAX_SIGNATURES {
                bail!("a signed hash set holds {n} signatures (at most {MAX_SIGNATURES})");
            }
            let mut sigs = Vec::new();
            for _ in 0..n {
                let rec = slice(set, &mut q)?;
                let mut r = 0;
                let key_id = slice(rec, &mut r)?.to_vec();
                let alg = *take(rec, &mut r, 1)?.first().context("algorithm")?;
                let sig = slice(rec, &mut r)?.to_vec();
                sigs.push(SigRecord { key_id, alg, sig });
            }
            sets.push((hashes, sigs));
        }
        if p != b.len() {
            bail!("the signature section has {} bytes after its last signature", b.len() - p);
        }
        Ok(Self { sets })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = vec![SPEC_VERSION, CONTENT_TYPE, HASH_SHA256];
        put_leb(&mut out, self.sets.len() as u32);
        for (hashes, sigs) in &self.sets {
            let mut set = Vec::new();
            put_leb(&mut set, hashes.len() as u32);
            for h in hashes {
                set.extend_from_slice(h);
            }
            put_leb(&mut set, sigs.len() as u32);
            for s in sigs {
                let mut rec = Vec::new();
                put_leb(&mut rec, s.key_id.len() as u32);
                rec.extend_from_slice(&s.key_id);
                rec.push(s.alg);
                put_leb(&mut rec, s.sig.len() as u32);
                rec.extend_from_slice(&s.sig);
                put_leb(&mut set, rec.len() as u32);
                set.extend_from_slice(&rec);
            }
            put_leb(&mut out, set.len() as u32);
            out.extend_from_slice(&set);
        }
        out
    }
}

/// The message an Ed25519 signature covers for a set of hashes.
fn message(hashes: &[[u8; 32]]) -> Vec<u8> {
    let mut m = DOMAIN.to_vec();
    m.extend_from_slice(&[SPEC_VERSION, CONTENT_TYPE, HASH_SHA256]);
    for h in hashes {
        m.extend_from_slice(h);
    }
    m
}

/// A serialized public key: the conventions' `0x01 ‖ key`, or bare 32 key bytes.
fn key_of(serialized: &[u8]) -> Option<PublisherKey> {
    match serialized {
        [ED25519_ID, rest @ ..] if rest.len() == 32 => rest.try_into().ok().map(PublisherKey::from_bytes),
        k if k.len() == 32 => k.try_into().ok().map(PublisherKey::from_bytes),
        _ => None,
    }
}

/// wasmsign2's default key id for a public key: HMAC-SHA256 keyed with the
/// key, over `"key_id"`, first 12 bytes. `wasmsign2 verify` skips a
/// signature whose key id is not this one.
pub fn default_key_id(key: &PublisherKey) -> [u8; 12] {
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.bytes()), b"key_id");
    let mut id = [0; 12];
    id.copy_from_slice(&tag.as_ref()[..12]);
    id
}

fn verifies(key: &PublisherKey, msg: &[u8], sig: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, key.bytes()).verify(msg, sig).is_ok()
}

/// Where the signed content starts (just past a leading `signature`
/// section), and that section's data; an error for a `signature` section
/// anywhere but first.
fn split(bytes: &[u8]) -> Result<(usize, Option<&[u8]>)> {
    let secs = sections(bytes)?;
    if let Some(i) = secs.iter().skip(1).position(|s| s.custom.is_some_and(|(n, _)| n == SECTION)) {
        bail!("section {} is a `signature` section, but a signature must be the first section", i + 2);
    }
    match secs.first() {
        Some(Section { custom: Some((SECTION, data)), end, .. }) => Ok((*end, Some(data))),
        _ => Ok((8, None)),
    }
}

/// Check the signature of a component. `known` are keys to try when a
/// signature does not carry its key (the trusted publishers); a key they
/// contain is preferred when several signatures verify.
pub fn check(bytes: &[u8], known: &[PublisherKey]) -> Signature {
    let (start, data) = match split(bytes) {
        Ok(s) => s,
        Err(e) => return Signature::Invalid { claimed: None, reason: format!("{e:#}") },
    };
    let Some(data) = data else { return Signature::Unsigned };
    let data = match SigData::parse(data) {
        Ok(d) => d,
        Err(e) => return Signature::Invalid { claimed: None, reason: format!("its signature section cannot be read: {e:#}") },
    };
    let content: [u8; 32] = Sha256::digest(&bytes[start..]).into();
    // The key the component names (untrusted until a signature verifies with it).
    let announced = sections(bytes)
        .ok()
        .and_then(|secs| secs.iter().find_map(|s| s.custom.filter(|(n, _)| *n == PUBLISHER_SECTION).and_then(|(_, k)| key_of(k))));
    let mut valid = Vec::new();
    let mut claimed = announced;
    let mut unidentified = false;
    let mut signed_other_content = false;
    for (hashes, sigs) in &data.sets {
        let msg = message(hashes);
        let covers = hashes.last() == Some(&content);
        for s in sigs.iter().filter(|s| s.alg == ED25519_ID) {
            let named = key_of(&s.key_id)
                .or(announced.filter(|k| s.key_id == default_key_id(k)))
                .or_else(|| known.iter().copied().find(|k| s.key_id == default_key_id(k)));
            claimed = claimed.or(named);
            let candidates: Vec<PublisherKey> = named.into_iter().chain(announced).chain(known.iter().copied()).collect();
            match candidates.into_iter().find(|k| verifies(k, &msg, &s.sig)) {
                Some(k) if covers => valid.push(k),
                Some(_) => signed_other_content = true,
                None if named.is_none() => unidentified = true,
                None => {}
            }
        }
    }
    if let Some(k) = valid.iter().find(|k| known.contains(k)).or(valid.first()) {
        return Signature::Signed(*k);
    }
    if signed_other_content {
        return Signature::Invalid {
            claimed,
            reason: "the component was changed after it was signed (its bytes no longer have the hash the signature covers)".into(),
        };
    }
    if unidentified && claimed.is_none() {
        return Signature::Unidentified;
    }
    Signature::Invalid { claimed, reason: "the signature does not verify with the key it names".into() }
}

/// A private signing key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl SigningKey {
    /// The publisher this key signs as.
    pub fn publisher(&self) -> PublisherKey {
        let pk: [u8; 32] = self.pair.public_key().as_ref().try_into().unwrap_or([0; 32]);
        PublisherKey::from_bytes(pk)
    }

    /// Read a PKCS#8 PEM (or raw DER) Ed25519 private key.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read(path).with_context(|| format!("cannot read the signing key {}", path.display()))?;
        let der = match std::str::from_utf8(&text) {
            Ok(s) if s.contains("-----BEGIN") => {
                let body: String = s
                    .lines()
                    .skip_while(|l| !l.starts_with("-----BEGIN PRIVATE KEY-----"))
                    .skip(1)
                    .take_while(|l| !l.starts_with("-----END"))
                    .collect();
                if body.is_empty() {
                    bail!("{} holds no `-----BEGIN PRIVATE KEY-----` block; use a key from `kata plugin keygen`", path.display());
                }
                base64::engine::general_purpose::STANDARD
                    .decode(body.trim())
                    .with_context(|| format!("the PEM block in {} is not valid base64", path.display()))?
            }
            _ => text,
        };
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|e| {
            anyhow::anyhow!(
                "{} is not an Ed25519 private key in PKCS#8 form ({e}); create one with `kata plugin keygen` or `openssl genpkey -algorithm ed25519`",
                path.display()
            )
        })?;
        Ok(Self { pair })
    }
}

/// Where `kata plugin keygen` keeps the key by default: kata's XDG data
/// directory (`~/.local/share/kata/keys/publisher.pem` on Linux).
pub fn default_key_path() -> Result<PathBuf> {
    let dirs = directories::ProjectDirs::from("", "", "kata")
        .context("cannot find your home directory for kata's signing key; give one with --key PATH (or --out PATH for keygen)")?;
    Ok(dirs.data_dir().join("keys").join("publisher.pem"))
}

/// The public key file written next to a private key: `KEY.pub`.
pub fn public_key_path(key: &Path) -> PathBuf {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// Create a new key pair at `path` (mode 0600; refused if it exists unless
/// `force`) and its public key id at `path.pub`.
pub fn keygen(path: &Path, force: bool) -> Result<PublisherKey> {
    if path.exists() && !force {
        bail!(
            "{} already exists; kata does not overwrite a signing key (plugins signed with it would lose their publisher). \
             Use it as it is, choose another --out, or pass --force to replace it",
            path.display()
        );
    }
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| anyhow::anyhow!("cannot generate a key: {e}"))?;
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
    );
    let key = SigningKey { pair: Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| anyhow::anyhow!("generated key: {e}"))? };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // Written to a new 0600 file, then renamed: the key is never readable by others.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let written = f.write_all(pem.as_bytes()).and_then(|()| f.sync_all()).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    let publisher = key.publisher();
    let pub_path = public_key_path(path);
    std::fs::write(&pub_path, format!("{publisher}\n")).with_context(|| format!("cannot write {}", pub_path.display()))?;
    Ok(publisher)
}

/// A custom section: id 0, size, name, data.
fn custom_section(name: &str, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    put_leb(&mut payload, name.len() as u32);
    payload.extend_from_slice(name.as_bytes());
    payload.extend_from_slice(data);
    let mut out = vec![0];
    put_leb(&mut out, payload.len() as u32);
    out.extend_from_slice(&payload);
    out
}

/// Sign a component (replacing any signature it has): the `signature`
/// section first, then a `kata:publisher` section naming the key, then every
/// other section byte for byte.
pub fn sign(bytes: &[u8], key: &SigningKey) -> Result<Vec<u8>> {
    split(bytes)?;
    let secs = sections(bytes)?;
    let publisher = key.publisher();
    let mut serialized = vec![ED25519_ID];
    serialized.extend_from_slice(publisher.bytes());
    let mut content = custom_section(PUBLISHER_SECTION, &serialized);
    for s in secs.iter().filter(|s| !s.custom.is_some_and(|(n, _)| n == SECTION || n == PUBLISHER_SECTION)) {
        content.extend_from_slice(&bytes[s.start..s.end]);
    }
    let hashes = [<[u8; 32]>::from(Sha256::digest(&content))];
    let sig = key.pair.sign(&message(&hashes)).as_ref().to_vec();
    let record = SigRecord { key_id: default_key_id(&publisher).to_vec(), alg: ED25519_ID, sig };
    let data = SigData { sets: vec![(hashes.to_vec(), vec![record])] }.encode();
    let mut out = bytes[..8].to_vec();
    out.extend_from_slice(&custom_section(SECTION, &data));
    out.extend_from_slice(&content);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty component with one custom section standing in for the manifest.
    fn component() -> Vec<u8> {
        let mut b = b"\0asm\x0d\0\x01\0".to_vec();
        let mut payload = Vec::new();
        put_leb(&mut payload, 13);
        payload.extend_from_slice(b"kata:manifest");
        payload.extend_from_slice(b"name = \"x\"\nnetwork = []\n");
        b.push(0);
        put_leb(&mut b, payload.len() as u32);
        b.extend_from_slice(&payload);
        b
    }

    fn key(dir: &Path, name: &str) -> SigningKey {
        let p = dir.join(name);
        keygen(&p, false).unwrap();
        SigningKey::load(&p).unwrap()
    }

    #[test]
    fn sign_then_check_covers_every_byte_but_the_signature() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (key(dir.path(), "a.pem"), key(dir.path(), "b.pem"));
        let plain = component();
        assert_eq!(check(&plain, &[]), Signature::Unsigned);
        let signed = sign(&plain, &a).unwrap();
        assert_eq!(check(&signed, &[]), Signature::Signed(a.publisher()));
        assert_eq!(&signed[signed.len() - plain.len() + 8..], &plain[8..], "the content is kept byte for byte");
        assert!(signed.windows(PUBLISHER_SECTION.len()).any(|w| w == PUBLISHER_SECTION.as_bytes()), "the key travels along");
        // Re-signing replaces the signature.
        let resigned = sign(&signed, &b).unwrap();
        assert_eq!(check(&resigned, &[]), Signature::Signed(b.publisher()));
        assert_eq!(resigned.len(), signed.len());
        // Any changed byte of the content (here: the manifest's grants) breaks it.
        let mut swapped = signed.clone();
        let at = swapped.len() - 2; // the `]` of `network = []`
        swapped[at] = b'*';
        assert!(matches!(check(&swapped, &[]), Signature::Invalid { claimed: Some(k), .. } if k == a.publisher()));
        // A signature moved onto other content does not verify either.
        let mut other = sign(&plain, &a).unwrap();
        other.extend_from_slice(&[0, 2, 1, b'x']);
        assert!(matches!(check(&other, &[]), Signature::Invalid { .. }));
        // Truncated inside the signature section: invalid, not a panic.
        for n in 9..40 {
            assert_ne!(check(&signed[..n], &[]).state(), "signed");
        }
    }

    #[test]
    fn a_signature_without_a_key_id_verifies_with_a_known_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = key(dir.path(), "a.pem");
        let plain = component();
        let hashes = [<[u8; 32]>::from(Sha256::digest(&plain[8..]))];
        let sig = a.pair.sign(&message(&hashes)).as_ref().to_vec();
        let data = SigData { sets: vec![(hashes.to_vec(), vec![SigRecord { key_id: vec![], alg: ED25519_ID, sig }])] }.encode();
        let mut payload = vec![9];
        payload.extend_from_slice(b"signature");
        payload.extend_from_slice(&data);
        let mut bytes = plain[..8].to_vec();
        bytes.push(0);
        put_leb(&mut bytes, payload.len() as u32);
        bytes.extend_from_slice(&payload);
        bytes.extend_from_slice(&plain[8..]);
        assert_eq!(check(&bytes, &[]), Signature::Unidentified);
        assert_eq!(check(&bytes, &[a.publisher()]), Signature::Signed(a.publisher()));
    }

    #[test]
    fn key_ids_are_wasmsign2s_and_a_swapped_key_breaks_the_signature() {
        // A key made by `wasmsign2 keygen` and the key id `wasmsign2 sign -K` wrote for it.
        let k = PublisherKey::parse("ed25519:TUDZf+ICgVFc1oI9NXUERja+LJnNRdc0sUPNzqlzbgA=").unwrap();
        assert_eq!(hex::encode(default_key_id(&k)), "9237c267b0e9bd28a4a15142");
        // Someone replaces the named key with their own: the signature no longer verifies.
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (key(dir.path(), "a.pem"), key(dir.path(), "b.pem"));
        let mut signed = sign(&component(), &a).unwrap();
        let at = signed.windows(32).position(|w| w == a.publisher().bytes()).unwrap();
        signed[at..at + 32].copy_from_slice(b.publisher().bytes());
        assert!(matches!(check(&signed, &[]), Signature::Invalid { claimed: Some(k), .. } if k == b.publisher()));
        // Dropping the key section changes the signed content too.
        let signed = sign(&component(), &a).unwrap();
        let secs = sections(&signed).unwrap();
        let mut bare = signed[..secs[1].start].to_vec();
        bare.extend_from_slice(&signed[secs[1].end..]);
        assert_ne!(check(&bare, &[]).state(), "signed", "the content changed: the signature covered the key section");
    }

    #[test]
    fn keys_are_private_and_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k/publisher.pem");
        let id = keygen(&p, false).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(std::fs::read_to_string(public_key_path(&p)).unwrap().trim(), id.to_string());
        assert!(keygen(&p, false).unwrap_err().to_string().contains("already exists"));
        assert_eq!(SigningKey::load(&p).unwrap().publisher(), id);
    }
}
