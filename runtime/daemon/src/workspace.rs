//! A workspace: a directory with `kata.toml` (policy and config) and `.kata/`
//! (database, compile cache, logs).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The policy file's name.
pub const POLICY_FILE: &str = "kata.toml";

/// The commented policy `kata init` writes.
pub const DEFAULT_POLICY: &str = include_str!("../../../policies/default.toml");

/// A workspace directory.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// The workspace at `root` (which must hold kata.toml).
    pub fn open(root: &Path) -> Result<Self> {
        let root = std::path::absolute(root).with_context(|| format!("bad workspace path {}", root.display()))?;
        if !root.join(POLICY_FILE).is_file() {
            bail!("{} is not a kata workspace: it has no {POLICY_FILE}; create one with `kata init {}`", root.display(), root.display());
        }
        Ok(Self { root })
    }

    /// Find the workspace: `--workspace` if given, else the nearest directory
    /// upwards from the current one holding kata.toml, else the per-user
    /// default workspace under the XDG data directory.
    pub fn discover(explicit: Option<&Path>) -> Result<Self> {
        if let Some(p) = explicit {
            return Self::open(p);
        }
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        if let Some(dir) = cwd.ancestors().find(|d| d.join(POLICY_FILE).is_file()) {
            return Self::open(dir);
        }
        let default = default_workspace()?;
        if default.join(POLICY_FILE).is_file() {
            return Self::open(&default);
        }
        bail!(
            "no kata workspace here: no {POLICY_FILE} in {} or its parents, and no default workspace at {}; \
             run `kata init` to create one, or pass --workspace DIR",
            cwd.display(),
            default.display()
        )
    }

    /// Create a workspace: kata.toml (unless it exists, or `force`) and `.kata/`.
    pub fn init(root: &Path, force: bool) -> Result<Self> {
        std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
        let policy = root.join(POLICY_FILE);
        if policy.exists() && !force {
            bail!("{} already exists; keep it, or pass --force to overwrite it with the default", policy.display());
        }
        std::fs::write(&policy, DEFAULT_POLICY).with_context(|| format!("cannot write {}", policy.display()))?;
        let ws = Self::open(root)?;
        ws.ensure_state_dir()?;
        Ok(ws)
    }

    /// The workspace directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `kata.toml`.
    pub fn policy_path(&self) -> PathBuf {
        self.root.join(POLICY_FILE)
    }

    /// `.kata/`.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(".kata")
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.state_dir().join("kata.db")
    }

    /// Compiled components.
    pub fn cache_dir(&self) -> PathBuf {
        self.state_dir().join("cache")
    }

    /// Create `.kata/` (owner-only) if needed.
    pub fn ensure_state_dir(&self) -> Result<()> {
        let dir = self.state_dir();
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        // Created owner-only (never briefly with the umask's mode); an
        // existing directory is restricted below.
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot restrict {}", dir.display()))?;
        }
        Ok(())
    }

    /// Take the workspace's run lock, so two daemons never share a workspace
    /// (they would send every reply twice). Held until the file is dropped.
    pub fn lock(&self) -> Result<File> {
        self.ensure_state_dir()?;
        let path = self.state_dir().join("run.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {
                // Record who holds it, for `kata plugin list` and friends.
                let _ = file.set_len(0);
                let _ = (&file).write_all(std::process::id().to_string().as_bytes());
                Ok(file)
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                bail!("another `kata run` is already running in {}; stop it first", self.root.display())
            }
            Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
        }
    }

    /// The pid of the `kata run` holding this workspace, if one is running.
    pub fn running_daemon(&self) -> Option<u32> {
        let path = self.state_dir().join("run.lock");
        let file = File::open(&path).ok()?;
        match file.try_lock_shared() {
            Ok(()) => None,
            Err(std::fs::TryLockError::WouldBlock) => Some(std::fs::read_to_string(&path).ok()?.trim().parse().unwrap_or(0)),
            Err(std::fs::TryLockError::Error(_)) => None,
        }
    }
}

/// The per-user workspace used when none is given: `$XDG_DATA_HOME/kata/workspace`.
pub fn default_workspace() -> Result<PathBuf> {
    let dirs = directories::ProjectDirs::from("", "", "kata")
        .context("cannot find the home directory for the default workspace; pass --workspace DIR")?;
    Ok(dirs.data_dir().join("workspace"))
}
