//! # kata-notes: Markdown notes for the agent
//!
//! A tools plugin (world `tools-plugin` of `kata:plugin@0.1.2`) over one
//! directory, which kata.toml grants at `/notes`:
//!
//! ```toml
//! [plugins.notes]
//! path = "…/notes.wasm"
//! files = [{ host = "~/notes", guest = "/notes", mode = "rw" }]   # "ro": search and read only
//! ```
//!
//! | tool | arguments | does |
//! |---|---|---|
//! | `search` | `query`, `limit` (default 20, at most 50) | case-insensitive substring search over note paths and contents; each hit is `path:line: excerpt` |
//! | `read` | `path` | the note's text (at most [`MAX_READ`] bytes) |
//! | `list` | `dir` (optional) | the notes under a directory, with sizes |
//! | `append` | `path`, `text` | appends Markdown to a note (created if missing; `.md` added when the name has no extension) |
//! | `attach` | `path` | hands the note back as a file, sent with the agent's reply (kata's attachment convention: `{"attachments": [{"path", "name", "mime_type"}]}`; kata reads the file within this plugin's grant, up to its `limits.max_message`) |
//!
//! A note is a file ending in `.md`, `.markdown` or `.txt`. Paths are
//! relative to the notes directory and confined to it: no absolute paths, no
//! `..`, no hidden (`.`) components — and kata's sandbox enforces the same
//! below the plugin. Sizes are capped: [`MAX_APPEND`] per append,
//! [`MAX_NOTE`] per note, [`MAX_SCAN`] per file searched, [`MAX_FILES`] files
//! per search. `search`, `read`, `list` and `attach` only read: the manifest declares
//! them read-only, so kata's `safe` mode runs them (with the directory
//! read-only) and refuses `append`.
//!
//! The logic is plain functions over a root directory ([`Notes`]), so
//! `cargo test` runs it natively against a temporary directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit/v0.1.2", world: "kata:plugin/tools-plugin" });
}

use bindings::exports::kata::plugin::tools::{Guest, ToolError, ToolSpec};

/// Where kata.toml mounts the notes directory.
pub const ROOT: &str = "/notes";
/// Most bytes `read` returns.
pub const MAX_READ: usize = 48 << 10;
/// Most bytes one `append` adds.
pub const MAX_APPEND: usize = 16 << 10;
/// Largest note `append` grows.
pub const MAX_NOTE: u64 = 1 << 20;
/// Largest file `search` reads (bigger ones are matched by name only).
pub const MAX_SCAN: u64 = 1 << 20;
/// Most files one `search` or `list` looks at.
pub const MAX_FILES: usize = 5000;
/// Most characters of a line shown as an excerpt.
const EXCERPT: usize = 160;
/// Deepest directory level searched.
const MAX_DEPTH: usize = 16;
/// What a note's name ends with.
const EXTENSIONS: [&str; 3] = ["md", "markdown", "txt"];

/// The notes under one root directory.
pub struct Notes {
    root: PathBuf,
}

impl Notes {
    /// Notes under `root` (`/notes` in the plugin).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Fail clearly when kata.toml grants no directory.
    fn check_root(&self) -> Result<(), ToolError> {
        if self.root.is_dir() {
            return Ok(());
        }
        Err(ToolError::Failed(format!(
            "there is no notes directory: kata.toml grants this plugin no directory at {root}; add \
             files = [{{ host = \"~/notes\", guest = \"{root}\", mode = \"rw\" }}] under [plugins.NAME] (the notes plugin's table)",
            root = self.root.display()
        )))
    }

    /// `rel` inside the root, or why not.
    pub fn resolve(&self, rel: &str) -> Result<PathBuf, ToolError> {
        let bad = |why: &str| {
            Err(ToolError::InvalidArgs(format!("path {rel:?} {why}; give a path relative to the notes directory, e.g. \"ideas/kata.md\"")))
        };
        let rel = rel.trim().trim_start_matches("./");
        if rel.is_empty() {
            return bad("is empty");
        }
        if rel.starts_with('/') || rel.contains('\\') || rel.contains('\0') {
            return bad("must be relative, with / between directories");
        }
        let mut out = self.root.clone();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            if part == ".." {
                return bad("may not leave the notes directory (..)");
            }
            if part.starts_with('.') {
                return bad("may not name hidden files or directories");
            }
            out.push(part);
        }
        Ok(out)
    }

    /// `path` relative to the root, with `/` separators.
    fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.root).unwrap_or(path).components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
    }

    /// Every note under `dir` (sorted, at most [`MAX_FILES`]), with its size.
    fn walk(&self, dir: &Path) -> Vec<(PathBuf, u64)> {
        let mut out = Vec::new();
        let mut stack = vec![(dir.to_path_buf(), 0usize)];
        while let Some((d, depth)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else { continue };
            let mut entries: Vec<_> = entries.flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries.into_iter().rev() {
                let name = e.file_name().to_string_lossy().to_string();
                // Hidden files and symbolic links are not notes.
                let Ok(meta) = e.path().symlink_metadata() else { continue };
                if name.starts_with('.') || meta.file_type().is_symlink() {
                    continue;
                }
                if meta.is_dir() && depth < MAX_DEPTH {
                    stack.push((e.path(), depth + 1));
                } else if meta.is_file() && is_note(&name) {
                    out.push((e.path(), meta.len()));
                }
            }
            if out.len() >= MAX_FILES {
                break;
            }
        }
        out.sort();
        out.truncate(MAX_FILES);
        out
    }

    /// Case-insensitive substring search over paths and contents.
    pub fn search(&self, query: &str, limit: usize) -> Result<String, ToolError> {
        self.check_root()?;
        let query = query.trim();
        if query.is_empty() {
            return Err(ToolError::InvalidArgs("`query` is empty; give a word or phrase to look for".into()));
        }
        let needle = query.to_lowercase();
        let limit = limit.clamp(1, 50);
        let (mut hits, mut notes, mut more) = (Vec::new(), 0usize, 0usize);
        for (path, size) in self.walk(&self.root) {
            let rel = self.relative(&path);
            let mut found = false;
            let mut add = |line: String, hits: &mut Vec<String>| {
                found = true;
                if hits.len() < limit { hits.push(line) } else { more += 1 }
            };
            if rel.to_lowercase().contains(&needle) {
                add(format!("{rel} (the name matches)"), &mut hits);
            }
            if size <= MAX_SCAN
                && let Ok(bytes) = std::fs::read(&path)
            {
                for (i, line) in String::from_utf8_lossy(&bytes).lines().enumerate() {
                    if let Some(at) = line.to_lowercase().find(&needle) {
                        add(format!("{rel}:{}: {}", i + 1, excerpt(line, at, needle.len())), &mut hits);
                    }
                }
            }
            notes += usize::from(found);
        }
        if hits.is_empty() {
            return Ok(format!("No note mentions {query:?}."));
        }
        let mut out = format!("{} match(es) for {query:?} in {notes} note(s):\n", hits.len() + more);
        for h in &hits {
            out.push_str(h);
            out.push('\n');
        }
        if more > 0 {
            let _ = writeln!(out, "… and {more} more (raise `limit`, up to 50, or search for something narrower)");
        }
        Ok(out.trim_end().to_string())
    }

    /// A note's text.
    pub fn read(&self, rel: &str) -> Result<String, ToolError> {
        self.check_root()?;
        let path = self.resolve(rel)?;
        if path.is_dir() {
            return Err(ToolError::InvalidArgs(format!("{rel:?} is a directory; `list` shows the notes in it")));
        }
        let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ToolError::Failed(format!("there is no note {rel:?}; `search` or `list` finds notes")),
            _ => ToolError::Failed(format!("cannot read {rel:?}: {e}")),
        })?;
        let mut text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_READ)]).into_owned();
        if bytes.len() > MAX_READ {
            let _ = write!(text, "\n[… cut: the note has {} bytes; only the first {MAX_READ} are shown]", bytes.len());
        }
        Ok(text)
    }

    /// The notes under `dir` (the root when empty).
    pub fn list(&self, dir: &str) -> Result<String, ToolError> {
        self.check_root()?;
        let d = if dir.trim().is_empty() { self.root.clone() } else { self.resolve(dir)? };
        if !d.is_dir() {
            return Err(ToolError::Failed(format!("there is no directory {dir:?} in the notes")));
        }
        let notes = self.walk(&d);
        if notes.is_empty() {
            return Ok("No notes yet.".into());
        }
        let mut out = format!("{} note(s):\n", notes.len());
        for (p, size) in notes {
            let _ = writeln!(out, "{} ({size} bytes)", self.relative(&p));
        }
        Ok(out.trim_end().to_string())
    }

    /// Hand a note back as a file for the reply: kata's attachment
    /// convention, a JSON result whose `attachments` name the file where
    /// this plugin sees it (kata reads it within the grant).
    pub fn attach(&self, rel: &str) -> Result<String, ToolError> {
        self.check_root()?;
        let path = self.resolve(rel)?;
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        if !is_note(&name) {
            return Err(ToolError::InvalidArgs(format!("{rel:?} is not a note: a note's name ends in .md, .markdown or .txt")));
        }
        let meta = std::fs::metadata(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ToolError::Failed(format!("there is no note {rel:?}; `search` or `list` finds notes")),
            _ => ToolError::Failed(format!("cannot read {rel:?}: {e}")),
        })?;
        if !meta.is_file() {
            return Err(ToolError::InvalidArgs(format!("{rel:?} is a directory; `list` shows the notes in it")));
        }
        let mime = if name.to_ascii_lowercase().ends_with(".txt") { "text/plain" } else { "text/markdown" };
        let shown = self.relative(&path);
        Ok(serde_json::json!({
            "attachments": [{"path": format!("{ROOT}/{shown}"), "name": name, "mime_type": mime}],
            "text": format!("{shown} ({} bytes) is attached to your reply.", meta.len()),
        })
        .to_string())
    }

    /// Append `text` to a note (created, with its directories, if missing).
    pub fn append(&self, rel: &str, text: &str) -> Result<String, ToolError> {
        self.check_root()?;
        if text.trim().is_empty() {
            return Err(ToolError::InvalidArgs("`text` is empty; nothing to append".into()));
        }
        if text.len() > MAX_APPEND {
            return Err(ToolError::InvalidArgs(format!("`text` is {} bytes; append at most {MAX_APPEND} at a time", text.len())));
        }
        let mut path = self.resolve(rel)?;
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        if !name.contains('.') {
            path.set_extension("md");
        } else if !is_note(&name) {
            return Err(ToolError::InvalidArgs(format!("{rel:?} is not a note: a note's name ends in .md, .markdown or .txt")));
        }
        let before = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if before + text.len() as u64 > MAX_NOTE {
            return Err(ToolError::Failed(format!("{rel:?} would grow past {MAX_NOTE} bytes; start a new note")));
        }
        let write_error = |e: std::io::Error| {
            let hint = if matches!(e.kind(), std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem) {
                " (the notes directory is read-only here: kata.toml grants it with mode = \"ro\", or the permission mode runs tools read-only)"
            } else {
                ""
            };
            ToolError::Failed(format!("cannot write {}: {e}{hint}", self.relative(&path)))
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(write_error)?;
        }
        let mut chunk = String::new();
        if before > 0 {
            let last = std::fs::read(&path).ok().and_then(|b| b.last().copied());
            if last != Some(b'\n') {
                chunk.push('\n');
            }
        }
        chunk.push_str(text);
        if !text.ends_with('\n') {
            chunk.push('\n');
        }
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(write_error)?;
        f.write_all(chunk.as_bytes()).map_err(write_error)?;
        Ok(format!("Appended {} bytes to {} (now {} bytes).", chunk.len(), self.relative(&path), before + chunk.len() as u64))
    }
}

/// Whether a file name is a note's.
fn is_note(name: &str) -> bool {
    name.rsplit_once('.').is_some_and(|(stem, ext)| !stem.is_empty() && EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

/// The part of `line` around byte `at` (a match of `len` bytes in its
/// lowercase form), at most [`EXCERPT`] characters, trimmed.
fn excerpt(line: &str, at: usize, len: usize) -> String {
    let line = line.trim();
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= EXCERPT {
        return line.to_string();
    }
    // Lowercasing can shift byte offsets a little; a character index is close enough.
    let centre = line.char_indices().take_while(|(i, _)| *i < at).count() + len / 2;
    let start = centre.saturating_sub(EXCERPT / 2).min(chars.len() - EXCERPT);
    let mut s: String = chars[start..start + EXCERPT].iter().collect();
    if start > 0 {
        s.insert(0, '…');
    }
    if start + EXCERPT < chars.len() {
        s.push('…');
    }
    s
}

fn spec(name: &str, description: &str, schema: Value) -> ToolSpec {
    ToolSpec { name: name.into(), description: description.into(), args_schema: schema.to_string() }
}

fn string_arg(args: &Value, key: &str) -> Result<String, ToolError> {
    args[key].as_str().map(str::to_string).ok_or_else(|| ToolError::InvalidArgs(format!("`{key}` (a string) is required")))
}

/// Run one tool on `notes`.
pub fn call(notes: &Notes, name: &str, args_json: &str) -> Result<String, ToolError> {
    let args: Value = serde_json::from_str(args_json).map_err(|e| ToolError::InvalidArgs(format!("the arguments are not JSON: {e}")))?;
    match name {
        "search" => notes.search(&string_arg(&args, "query")?, args["limit"].as_u64().unwrap_or(20) as usize),
        "read" => notes.read(&string_arg(&args, "path")?),
        "list" => notes.list(args["dir"].as_str().unwrap_or_default()),
        "append" => notes.append(&string_arg(&args, "path")?, &string_arg(&args, "text")?),
        "attach" => notes.attach(&string_arg(&args, "path")?),
        _ => Err(ToolError::UnknownTool(name.to_string())),
    }
}

struct Tools;

impl Guest for Tools {
    fn list() -> Vec<ToolSpec> {
        use serde_json::json;
        vec![
            spec(
                "search",
                "Search the notes for a word or phrase (case-insensitive) in their names and text. Returns `path:line: excerpt` lines.",
                json!({"type": "object", "properties": {
                    "query": {"type": "string", "description": "what to look for"},
                    "limit": {"type": "integer", "description": "most hits to return (default 20, at most 50)"}},
                    "required": ["query"]}),
            ),
            spec(
                "read",
                "Read one note by its path relative to the notes directory (e.g. \"ideas/kata.md\").",
                json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
            ),
            spec(
                "list",
                "List the notes (Markdown and text files) in the notes directory or one of its subdirectories.",
                json!({"type": "object", "properties": {"dir": {"type": "string", "description": "a subdirectory (default: all notes)"}}}),
            ),
            spec(
                "append",
                "Append Markdown text to a note, creating it if it does not exist (\".md\" is added to a name without extension).",
                json!({"type": "object", "properties": {"path": {"type": "string"}, "text": {"type": "string"}}, "required": ["path", "text"]}),
            ),
            spec(
                "attach",
                "Send one note to the person as a file with your reply (by its path relative to the notes directory).",
                json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
            ),
        ]
    }

    fn call(name: String, args_json: String) -> Result<String, ToolError> {
        call(&Notes::new(ROOT), &name, &args_json)
    }
}

bindings::export!(Tools with_types_in bindings);

/// The WIT version, in the custom section kata reads (the Rust SDK writes
/// it for channels; tools plugins write it themselves).
#[cfg(target_family = "wasm")]
#[used]
#[unsafe(link_section = "kata:wit-version")]
static KATA_WIT_VERSION: [u8; 5] = *b"0.1.2";

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh notes directory under the system's temp dir.
    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kata-notes-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("ideas")).expect("mkdir");
        std::fs::write(d.join("todo.md"), "# Todo\n- buy milk\n- write the Kata docs\n").expect("write");
        std::fs::write(d.join("ideas/kata.md"), "Kata runs plugins.\nNothing else here.\n").expect("write");
        std::fs::write(d.join("ideas/image.png"), "kata kata").expect("write");
        std::fs::write(d.join(".hidden.md"), "kata secret").expect("write");
        d
    }

    fn failed(r: Result<String, ToolError>) -> String {
        match r {
            Err(ToolError::Failed(m) | ToolError::InvalidArgs(m) | ToolError::UnknownTool(m)) => m,
            Ok(t) => panic!("expected an error, got {t:?}"),
        }
    }

    #[test]
    fn search_is_case_insensitive_over_names_and_lines() {
        let d = dir("search");
        let n = Notes::new(&d);
        let out = n.search("KATA", 20).expect("search");
        assert!(out.starts_with("3 match(es) for \"KATA\" in 2 note(s):"), "{out}");
        assert!(out.contains("ideas/kata.md (the name matches)"), "{out}");
        assert!(out.contains("ideas/kata.md:1: Kata runs plugins."), "{out}");
        assert!(out.contains("todo.md:3: - write the Kata docs"), "{out}");
        assert!(!out.contains("image.png") && !out.contains("hidden"), "{out}");
        let out = n.search("kata", 1).expect("search");
        assert!(out.contains("… and 2 more"), "{out}");
        assert_eq!(n.search("nothing like this", 5).expect("search"), "No note mentions \"nothing like this\".");
        assert!(failed(n.search("  ", 5)).contains("empty"));
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn paths_are_confined_to_the_notes_directory() {
        let n = Notes::new("/notes");
        assert_eq!(n.resolve("ideas/kata.md").expect("ok"), PathBuf::from("/notes/ideas/kata.md"));
        assert_eq!(n.resolve("./a.md").expect("ok"), PathBuf::from("/notes/a.md"));
        for bad in ["../etc/passwd", "/etc/passwd", "a/../../b.md", ".ssh/id", "", "a\\b.md"] {
            assert!(matches!(n.resolve(bad), Err(ToolError::InvalidArgs(_))), "{bad}");
        }
    }

    #[test]
    fn read_list_and_append() {
        let d = dir("rw");
        let n = Notes::new(&d);
        assert_eq!(n.read("todo.md").expect("read"), "# Todo\n- buy milk\n- write the Kata docs\n");
        assert!(failed(n.read("nope.md")).contains("no note"));
        assert!(failed(n.read("ideas")).contains("directory"));
        let list = n.list("").expect("list");
        assert_eq!(list, "2 note(s):\nideas/kata.md (38 bytes)\ntodo.md (40 bytes)");
        assert_eq!(n.list("ideas").expect("list"), "1 note(s):\nideas/kata.md (38 bytes)");
        let out = n.append("journal/today", "went running").expect("append");
        assert_eq!(out, "Appended 13 bytes to journal/today.md (now 13 bytes).");
        n.append("journal/today.md", "- and swimming\n").expect("append");
        assert_eq!(std::fs::read_to_string(d.join("journal/today.md")).expect("read"), "went running\n- and swimming\n");
        assert!(failed(n.append("x.png", "no")).contains("not a note"));
        assert!(failed(n.append("x.md", &"y".repeat(MAX_APPEND + 1))).contains("at most"));
        std::fs::write(d.join("big.md"), vec![b'z'; MAX_READ + 10]).expect("write");
        assert!(n.read("big.md").expect("read").ends_with(&format!("only the first {MAX_READ} are shown]")));
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn without_a_granted_directory_every_tool_says_what_to_grant() {
        let n = Notes::new("/definitely/not/granted");
        let m = failed(call(&n, "search", r#"{"query":"x"}"#));
        assert!(m.contains("files = [{ host = \"~/notes\", guest = \"/definitely/not/granted\", mode = \"rw\" }]"), "{m}");
        assert!(failed(call(&n, "append", r#"{"path":"a","text":"b"}"#)).contains("no notes directory"));
        assert!(matches!(call(&n, "nope", "{}"), Err(ToolError::UnknownTool(_))));
        assert!(matches!(call(&n, "read", "{}"), Err(ToolError::InvalidArgs(_))));
        assert!(matches!(call(&n, "read", "not json"), Err(ToolError::InvalidArgs(_))));
    }

    #[test]
    fn attach_hands_a_note_back_by_the_attachment_convention() {
        let d = dir("attach");
        let n = Notes::new(&d);
        let v: Value = serde_json::from_str(&n.attach("ideas/kata.md").expect("attach")).expect("json");
        assert_eq!(v["attachments"][0]["path"], "/notes/ideas/kata.md");
        assert_eq!(
            (v["attachments"][0]["name"].as_str(), v["attachments"][0]["mime_type"].as_str()),
            (Some("kata.md"), Some("text/markdown"))
        );
        assert!(failed(n.attach("nope.md")).contains("no note"));
        assert!(failed(n.attach("ideas/image.png")).contains("not a note"));
        assert!(failed(n.attach("../x.md")).contains("may not leave"));
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn long_lines_are_cut_around_the_match() {
        let line = format!("{} needle {}", "a".repeat(300), "b".repeat(300));
        let at = line.find("needle").expect("there");
        let e = excerpt(&line, at, 6);
        assert!(e.contains("needle") && e.starts_with('…') && e.ends_with('…'), "{e}");
        assert_eq!(e.chars().count(), EXCERPT + 2);
    }
}
