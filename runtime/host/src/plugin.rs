//! Loading plugins: recognise what a file is, refuse what kata cannot run with
//! a message that says what to do, and run a channel plugin's calls under its
//! limits.

use std::collections::BTreeMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::Result;
use wasmtime::Store;
use wasmtime::component::{Component, Linker};

use crate::audit::Auditor;
use crate::engine::{CallMeter, Engine};
use crate::host::{self, latest};
use crate::host::{PluginCtx, PluginIdentity, new_store};
use crate::policy::{Limits, PluginGrants};
use crate::sandbox::{NetworkGate, PluginSandbox};
use crate::sink::Sinks;

/// What a plugin file turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentInfo {
    /// The `kata:plugin` version it targets (from the SDK's version section or its exports).
    pub wit_version: Option<String>,
    /// Interfaces it exports, e.g. `kata:plugin/channel@0.1.0`.
    pub exports: Vec<String>,
    /// Interfaces it imports.
    pub imports: Vec<String>,
    /// What it asks for (the `kata:manifest` section), when it carries one.
    pub manifest: Option<crate::manifest::Manifest>,
}

/// The kinds of plugin kata knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Exports kata:plugin/channel.
    Channel,
    /// Exports kata:plugin/tools only.
    Tools,
    /// Exports kata:plugin/service.
    Service,
    /// Exports kata:plugin/hooks (world `hook-plugin`, from 0.1.3).
    Hook,
}

impl Kind {
    /// The kind a component's exports make it.
    pub fn of(info: &ComponentInfo) -> Option<Self> {
        let e = info.kata_exports();
        if e.contains(&"channel") {
            Some(Self::Channel)
        } else if e.contains(&"service") {
            Some(Self::Service)
        } else if e.contains(&"tools") {
            Some(Self::Tools)
        } else if e.contains(&"hooks") {
            Some(Self::Hook)
        } else {
            None
        }
    }

    /// `channel`, `tools`, `service` or `hook`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Channel => "channel",
            Self::Tools => "tools",
            Self::Service => "service",
            Self::Hook => "hook",
        }
    }
}

impl ComponentInfo {
    /// The kata interfaces it exports, without package and version (`channel`, `tools`…).
    pub fn kata_exports(&self) -> Vec<&str> {
        self.exports.iter().filter_map(|e| e.strip_prefix("kata:plugin/")).map(|e| e.split('@').next().unwrap_or(e)).collect()
    }

    /// The contract version whose bindings fit its `iface` export: the
    /// version in the export's name (`kata:plugin/channel@0.1.2`), which is
    /// what its types follow, else the declared [`Self::wit_version`].
    pub fn export_version(&self, iface: &str) -> Option<&str> {
        let prefix = format!("kata:plugin/{iface}@");
        self.exports.iter().find_map(|e| e.strip_prefix(&prefix)).or(self.wit_version.as_deref())
    }
}

/// Why a file is not a runnable plugin. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file is missing or unreadable.
    #[error("cannot read plugin file {path}: {error}; check the `path` of this plugin in kata.toml")]
    Read {
        /// The file.
        path: String,
        /// The I/O error (in the message, not a `source`, so `{:#}` names it once).
        error: std::io::Error,
    },
    /// Not WebAssembly at all.
    #[error(
        "{path} is not a WebAssembly file (it does not start with the \\0asm header); a plugin is a .wasm component built with `kata plugin build`"
    )]
    NotWasm {
        /// The file.
        path: String,
    },
    /// A core module, not a component.
    #[error("{path} is a core WebAssembly module, not a component; {}", core_module_advice(path))]
    CoreModule {
        /// The file.
        path: String,
    },
    /// Broken or unsupported binary.
    #[error("{path} is not a valid WebAssembly component: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// The decoder's or compiler's message.
        reason: String,
    },
    /// Built against a WIT version this host does not know.
    #[error("{path} was built against kata:plugin@{version}, but this kata supports {supported}; {advice}")]
    Version {
        /// The file.
        path: String,
        /// The version it targets.
        version: String,
        /// What the host supports.
        supported: String,
        /// Upgrade kata or rebuild the plugin.
        advice: &'static str,
    },
    /// A component, but not a service where one is expected.
    #[error(
        "{path} is not a service plugin: it exports {found}; a service plugin exports kata:plugin/service (build it against the `service-plugin` world, e.g. from `kata plugin new NAME --kind service`)"
    )]
    NotAService {
        /// The file.
        path: String,
        /// What it does export.
        found: String,
    },
    /// A component, but not a hook where one is expected.
    #[error(
        "{path} is not a hook plugin: it exports {found}; a hook exports kata:plugin/hooks (build it against the `hook-plugin` world of kata:plugin@0.1.3 or later)"
    )]
    NotAHook {
        /// The file.
        path: String,
        /// What it does export.
        found: String,
    },
    /// A component, but not the kind expected here.
    #[error(
        "{path} is not a channel plugin: it exports {found}; a channel plugin exports kata:plugin/channel (build it against the `channel-plugin` world)"
    )]
    WrongWorld {
        /// The file.
        path: String,
        /// What it does export.
        found: String,
    },
    /// A content-addressed plugin file (`.kata/plugins/<sha256>.wasm`) whose
    /// bytes no longer have the hash it was stored under.
    #[error(
        "{path} was changed after it was installed: it was stored as sha256 {expected}, but its bytes now hash to {found}; \
         kata refuses to run it. If you did not change it, treat the workspace as compromised; otherwise reinstall the \
         plugin from a file you trust (`kata plugin upgrade NAME FILE`, or `kata plugin add FILE --name NAME`)"
    )]
    Tampered {
        /// The file.
        path: String,
        /// The hash in its name.
        expected: String,
        /// The hash of its bytes.
        found: String,
    },
    /// It imports something kata does not provide.
    #[error("{path} imports something kata does not provide: {reason}; plugins may import kata:plugin interfaces and WASI 0.2")]
    Imports {
        /// The file.
        path: String,
        /// wasmtime's message.
        reason: String,
    },
}

/// The sha256 a plugin file is stored under, when it is content-addressed:
/// its name is 64 lowercase hex digits and `.wasm`, as `kata plugin add`
/// names the files it keeps in `.kata/plugins/`.
///
/// ```
/// use std::path::Path;
/// use kata_host::plugin::stored_hash;
///
/// let stored = format!(".kata/plugins/{}.wasm", "a".repeat(64));
/// assert_eq!(stored_hash(Path::new(&stored)), Some(&*"a".repeat(64)));
/// assert_eq!(stored_hash(Path::new("echo.wasm")), None);
/// ```
pub fn stored_hash(file: &Path) -> Option<&str> {
    let stem = file.file_stem()?.to_str()?;
    let content_addressed = file.extension().is_some_and(|e| e == "wasm")
        && stem.len() == 64
        && stem.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    content_addressed.then_some(stem)
}

/// Read a plugin file. A content-addressed one (see [`stored_hash`]) must
/// still hash to its name: a stored component that was replaced — by other
/// code, even another valid plugin — is refused before anything compiles
/// it or loads its compiled copy from the cache.
pub fn read_plugin(file: &Path) -> Result<Vec<u8>, LoadError> {
    read_plugin_digested(file).map(|(bytes, _)| bytes)
}

/// [`read_plugin`], and the sha256 (hex) of the bytes, which the compile
/// cache is keyed by ([`Engine::compile_digested`]): hashed once per load.
pub fn read_plugin_digested(file: &Path) -> Result<(Vec<u8>, String), LoadError> {
    use sha2::Digest;
    let path = file.display().to_string();
    let bytes = std::fs::read(file).map_err(|error| LoadError::Read { path: path.clone(), error })?;
    let found = hex::encode(sha2::Sha256::digest(&bytes));
    if let Some(expected) = stored_hash(file)
        && found != expected
    {
        return Err(LoadError::Tampered { path, expected: expected.to_string(), found });
    }
    Ok((bytes, found))
}

/// How to turn the core module at `path` into a component: the exact kata
/// command (which adapts WASI preview1 imports with the reactor adapter, as
/// `kata plugin build` does), or `kata plugin build` for a Rust crate.
fn core_module_advice(path: &str) -> String {
    let (module, out) = if path.starts_with("http://") || path.starts_with("https://") {
        ("MODULE.wasm".to_string(), "COMPONENT.wasm".to_string())
    } else {
        let p = Path::new(path);
        let out = p.with_extension("component.wasm");
        (crate::util::shell_quote(p), crate::util::shell_quote(&out))
    };
    let download = if module == "MODULE.wasm" { "download it, then " } else { "" };
    format!(
        "{download}turn it into one with `kata plugin componentize {module} --out {out}` (it needs the component-type \
         information wit-bindgen embeds, and adapts WASI preview1 imports with the reactor adapter) and add {out}; for a \
         Rust crate, `kata plugin build DIR` does both steps"
    )
}

/// Read what a component is without compiling it.
///
/// ```
/// use kata_host::plugin::{LoadError, inspect};
///
/// assert!(matches!(inspect(b"hello", "x.wasm"), Err(LoadError::NotWasm { .. })));
/// // A core module is refused with the command that makes a component of it.
/// let e = inspect(b"\0asm\x01\0\0\0", "m.wasm").unwrap_err().to_string();
/// assert!(e.contains("kata plugin componentize"), "{e}");
/// ```
pub fn inspect(bytes: &[u8], path: &str) -> Result<ComponentInfo, LoadError> {
    if !bytes.starts_with(b"\0asm") {
        return Err(LoadError::NotWasm { path: path.into() });
    }
    if wasmparser::Parser::is_core_wasm(bytes) {
        return Err(LoadError::CoreModule { path: path.into() });
    }
    if !wasmparser::Parser::is_component(bytes) {
        return Err(LoadError::Invalid { path: path.into(), reason: "unknown WebAssembly binary version".into() });
    }
    let mut info = ComponentInfo { wit_version: None, exports: vec![], imports: vec![], manifest: None };
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| LoadError::Invalid { path: path.into(), reason: e.to_string() })?;
        use wasmparser::Payload;
        match payload {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::CustomSection(c) if c.name() == host::VERSION_SECTION => {
                let v = String::from_utf8_lossy(c.data()).trim().to_string();
                info.wit_version.get_or_insert(v);
            }
            Payload::CustomSection(c) if c.name() == crate::manifest::SECTION && info.manifest.is_none() => {
                let text = std::str::from_utf8(c.data())
                    .map_err(|_| LoadError::Invalid { path: path.into(), reason: "its kata:manifest section is not UTF-8 text".into() })?;
                let m = crate::manifest::Manifest::parse(text, path).map_err(|reason| LoadError::Invalid { path: path.into(), reason })?;
                info.manifest = Some(m);
            }
            Payload::ComponentImportSection(s) if depth == 1 => {
                for import in s {
                    let import = import.map_err(|e| LoadError::Invalid { path: path.into(), reason: e.to_string() })?;
                    info.imports.push(import.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(s) if depth == 1 => {
                for export in s {
                    let export = export.map_err(|e| LoadError::Invalid { path: path.into(), reason: e.to_string() })?;
                    info.exports.push(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    if info.wit_version.is_none() {
        info.wit_version = info
            .exports
            .iter()
            .chain(&info.imports)
            .filter_map(|n| n.strip_prefix("kata:plugin/"))
            .find_map(|n| n.split_once('@').map(|(_, v)| v.to_string()));
    }
    Ok(info)
}

/// Check a version string against what this host supports.
pub fn check_version(version: &str, path: &str) -> Result<(), LoadError> {
    let parse = |v: &str| -> Option<(u64, u64, u64)> {
        let mut it = v.split('.').map(|p| p.parse::<u64>().ok());
        Some((it.next()??, it.next()??, it.next()??))
    };
    let Some(want) = parse(version) else {
        return Err(LoadError::Version {
            path: path.into(),
            version: version.into(),
            supported: host::SUPPORTED_VERSIONS.join(", "),
            advice: "the version section is malformed; rebuild the plugin with a released SDK",
        });
    };
    // Same major.minor (0.x: same minor) and a patch we have seen is compatible.
    let ok = host::SUPPORTED_VERSIONS.iter().filter_map(|s| parse(s)).any(|have| have.0 == want.0 && have.1 == want.1 && want.2 <= have.2);
    if ok {
        return Ok(());
    }
    let newest = host::SUPPORTED_VERSIONS.iter().filter_map(|s| parse(s)).max();
    let advice = if newest.is_some_and(|n| want > n) { "upgrade kata to run it" } else { "rebuild the plugin against a supported version" };
    Err(LoadError::Version { path: path.into(), version: version.into(), supported: host::SUPPORTED_VERSIONS.join(", "), advice })
}

/// A channel plugin compiled, linked and ready to instantiate.
pub struct ChannelPlugin {
    /// Its grants from the policy.
    pub grants: Arc<PluginGrants>,
    sandbox: Arc<PluginSandbox>,
    pre: host::ChannelPre,
    id: PluginIdentity,
    engine: Engine,
    /// What the file declared.
    pub info: ComponentInfo,
    /// Where `send` puts frames for the plugin's open stream.
    outlet: crate::outlet::Outlet,
}

/// Build the linker every plugin is instantiated through.
pub fn linker(engine: &Engine) -> Result<Linker<PluginCtx>> {
    let mut linker = Linker::new(engine.wasmtime());
    host::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// A component read, checked, compiled and linked, with its grants narrowed
/// to its manifest, its secrets resolved and its sandbox built: everything
/// every kind of plugin needs before its world's bindings (see [`prepare`]).
pub struct Prepared {
    /// Its grants, narrowed to its manifest.
    pub grants: Arc<PluginGrants>,
    /// Its sandbox, with its secrets.
    pub sandbox: Arc<PluginSandbox>,
    /// The linked component.
    pub pre: wasmtime::component::InstancePre<PluginCtx>,
    /// What each of its stores knows about it.
    pub id: PluginIdentity,
    /// What the file declared.
    pub info: ComponentInfo,
    /// The file, for messages.
    pub path: String,
}

/// The values of a plugin's secrets, read from their sources (env, file,
/// kata's store). A missing one is an error naming the kata.toml table.
pub fn resolve_secrets(grants: &PluginGrants, workspace: &Path) -> Result<BTreeMap<String, String>> {
    let mut secrets = BTreeMap::new();
    for (name, source) in &grants.secrets {
        let value = crate::secret_store::resolve(source, workspace).map_err(|e| {
            anyhow::anyhow!(
                "plugin {}: secret {name}: {e}; set it, or change `secrets` under [plugins.{}] in kata.toml",
                grants.name,
                grants.name
            )
        })?;
        secrets.insert(name.clone(), value);
    }
    Ok(secrets)
}

/// Read, validate, compile (or load from cache) and link a plugin that must
/// export `kata:plugin/{export}`. Secrets are resolved now, so a missing one
/// fails at start, not mid-run. State and audit records go to `sinks`.
pub fn prepare(
    engine: &Engine,
    linker: &Linker<PluginCtx>,
    grants: PluginGrants,
    sinks: Sinks,
    workspace: &Path,
    export: &str,
) -> Result<Prepared> {
    let Some(file) = grants.path.clone() else {
        anyhow::bail!("plugin {} has no `path` in kata.toml; install it with `kata plugin add FILE --name {}`", grants.name, grants.name);
    };
    let path = file.display().to_string();
    let (bytes, digest) = read_plugin_digested(&file)?;
    let info = inspect(&bytes, &path)?;
    if let Some(v) = &info.wit_version {
        check_version(v, &path)?;
    }
    if !info.kata_exports().contains(&export) {
        let found = if info.exports.is_empty() { "nothing".to_string() } else { info.exports.join(", ") };
        return Err(match export {
            "service" => LoadError::NotAService { path, found },
            "hooks" => LoadError::NotAHook { path, found },
            _ => LoadError::WrongWorld { path, found },
        }
        .into());
    }
    let component = compile(engine, &bytes, &digest, &path)?;
    let pre = linker.instantiate_pre(&component).map_err(|e| LoadError::Imports { path: path.clone(), reason: format!("{e:#}") })?;
    // The manifest asks, the policy decides: only what both say is given.
    let mut grants = grants;
    if let Some(m) = &info.manifest {
        let dropped = grants.restrict_to(m).map_err(|reason| LoadError::Invalid { path: path.clone(), reason })?;
        for d in dropped {
            tracing::warn!(
                plugin = %grants.name,
                "kata.toml grants {d}, but the plugin's manifest does not ask for it: not given to the plugin"
            );
        }
    }
    let secrets = resolve_secrets(&grants, workspace)?;
    let id =
        PluginIdentity { name: grants.name.as_str().into(), config: Arc::new(grants.config.clone()), state: sinks.state, read_only: false };
    let grants = Arc::new(grants);
    let auditor = Auditor::with(sinks.audit, &grants.name);
    let sandbox = Arc::new(PluginSandbox::new(grants.clone(), secrets, auditor));
    Ok(Prepared { grants, sandbox, pre, id, info, path })
}

impl ChannelPlugin {
    /// Read, validate, compile (or load from cache) and link a channel plugin.
    /// Secrets are resolved now, so a missing one fails at start, not mid-run.
    /// Its state and audit records go to `sinks`.
    pub fn load(engine: &Engine, linker: &Linker<PluginCtx>, grants: PluginGrants, sinks: Sinks, workspace: &Path) -> Result<Self> {
        let Prepared { grants, sandbox, pre, id, info, path } = prepare(engine, linker, grants, sinks, workspace, "channel")?;
        let pre = host::ChannelPre::new(pre, info.export_version("channel"))
            .map_err(|e| LoadError::WrongWorld { path, found: format!("incompatible exports ({e:#})") })?;
        Ok(Self { grants, sandbox, pre, id, engine: engine.clone(), info, outlet: Default::default() })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.grants.name
    }

    /// Whether the component exports the optional `channel-batch`
    /// interface (`send-batch`, see [`ChannelInstance::send_batch`]).
    pub fn can_send_batch(&self) -> bool {
        self.pre.can_send_batch()
    }

    /// Where `send` puts frames for the plugin's open stream (see [`crate::outlet`]).
    pub fn outlet(&self) -> &crate::outlet::Outlet {
        &self.outlet
    }

    /// Its sandbox: secret scanner and audit log (for redacting what it returns).
    pub fn sandbox(&self) -> &Arc<PluginSandbox> {
        &self.sandbox
    }

    /// A new sandboxed store for this plugin, not yet instantiated (exposed
    /// for benchmarks, which measure it as the baseline of instantiation).
    #[doc(hidden)]
    pub fn new_store(&self) -> Store<PluginCtx> {
        let gate = NetworkGate::new(self.sandbox.clone());
        new_store(&self.engine, self.id.clone(), gate, &self.grants)
    }

    /// Create a fresh instance (a new store with its own memory and limits).
    pub async fn instantiate(&self) -> Result<ChannelInstance, CallError> {
        self.instantiate_in(self.new_store()).await
    }

    /// Instantiate in a store made by [`Self::new_store`] (benchmarks time
    /// this step alone).
    #[doc(hidden)]
    pub async fn instantiate_in(&self, mut store: Store<PluginCtx>) -> Result<ChannelInstance, CallError> {
        let limits = self.grants.limits;
        let meter = arm(&mut store, &limits);
        let bindings = guarded(&meter, &limits, self.pre.instantiate_async(&mut store)).await?;
        Ok(Instance::new(store, bindings, limits))
    }
}

/// A hook plugin (world `hook-plugin`) compiled, linked and ready to
/// instantiate. Each call runs in a fresh instance (as tools calls do), under
/// the plugin's limits; the daemon bounds it further by the hook's budget.
pub struct HookPlugin {
    /// Its grants from the policy.
    pub grants: Arc<PluginGrants>,
    sandbox: Arc<PluginSandbox>,
    pre: latest::HookPre<PluginCtx>,
    id: PluginIdentity,
    engine: Engine,
    /// What the file declared.
    pub info: ComponentInfo,
}

/// One live instance of a hook plugin.
pub type HookInstance = Instance<latest::HookBindings>;

/// A hook call's outcome: the verdict, or the error text the hook returned
/// (secret values redacted). A trap or timeout is the outer [`CallError`].
pub type HookResult<T> = Result<Result<T, String>, CallError>;

impl HookPlugin {
    /// Read, validate, compile (or load from cache) and link a hook plugin,
    /// with the same checks and sandbox as a channel. Its state and audit
    /// records go to `sinks`.
    pub fn load(engine: &Engine, linker: &Linker<PluginCtx>, grants: PluginGrants, sinks: Sinks, workspace: &Path) -> Result<Self> {
        let Prepared { grants, sandbox, pre, id, info, path } = prepare(engine, linker, grants, sinks, workspace, "hooks")?;
        let pre = latest::HookPre::new(pre).map_err(|e| LoadError::NotAHook { path, found: format!("incompatible exports ({e:#})") })?;
        Ok(Self { grants, sandbox, pre, id, engine: engine.clone(), info })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.grants.name
    }

    /// Its sandbox: secret scanner and audit log.
    pub fn sandbox(&self) -> &Arc<PluginSandbox> {
        &self.sandbox
    }

    /// A fresh instance (a new store with its own memory and limits).
    pub async fn instantiate(&self) -> Result<HookInstance, CallError> {
        let gate = NetworkGate::new(self.sandbox.clone());
        let mut store = new_store(&self.engine, self.id.clone(), gate, &self.grants);
        let limits = self.grants.limits;
        let meter = arm(&mut store, &limits);
        let bindings = guarded(&meter, &limits, self.pre.instantiate_async(&mut store)).await?;
        Ok(Instance::new(store, bindings, limits))
    }

    /// `points()`, in a fresh instance.
    pub async fn points(&self) -> Result<Vec<latest::HookPoint>, CallError> {
        self.instantiate().await?.points().await
    }

    /// `message-received(channel, message)`, in a fresh instance.
    pub async fn message_received(&self, channel: &str, message: &latest::Message) -> HookResult<latest::InboundVerdict> {
        self.instantiate().await?.message_received(channel, message).await
    }

    /// `message-sending(channel, message)`, in a fresh instance.
    pub async fn message_sending(&self, channel: &str, message: &latest::OutboundMessage) -> HookResult<latest::OutboundVerdict> {
        self.instantiate().await?.message_sending(channel, message).await
    }

    /// `before-tool-call(call)`, in a fresh instance.
    pub async fn before_tool_call(&self, call: &latest::ToolCall) -> HookResult<latest::ToolVerdict> {
        self.instantiate().await?.before_tool_call(call).await
    }
}

fn compile(engine: &Engine, bytes: &[u8], digest: &str, path: &str) -> Result<Component, LoadError> {
    engine.compile_digested(bytes, digest).map_err(|e| LoadError::Invalid { path: path.into(), reason: format!("{e:#}") })
}

/// Why a call into a plugin did not return a value.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The plugin returned a channel error (it is fine; the call failed).
    #[error("{}", describe_channel_error(.0))]
    Channel(latest::ChannelError),
    /// The guest trapped: the instance is unusable and must be replaced.
    #[error("{0}")]
    Trap(String),
    /// The call took longer than `call_timeout`; the instance was abandoned.
    #[error("call did not finish within {0:?} (limits.call_timeout)")]
    Timeout(Duration),
}

impl CallError {
    /// Whether the instance must be discarded after this error.
    pub fn breaks_instance(&self) -> bool {
        !matches!(self, CallError::Channel(_))
    }
}

/// Count a failed call that a limit stopped (CPU, memory, wall clock), from
/// its error text as [`describe_trap`] words it.
pub fn note_call_error(plugin: &str, e: &CallError) {
    let limit = match e {
        CallError::Timeout(_) => "call_timeout",
        CallError::Trap(t) if t.contains("(limits.cpu_per_call)") => "cpu_per_call",
        CallError::Trap(t) if t.contains("(limits.memory)") => "memory",
        _ => return,
    };
    crate::limits::hit(plugin, limit, 1);
}

/// Render a channel error for logs.
pub fn describe_channel_error(e: &latest::ChannelError) -> String {
    use latest::ChannelError as E;
    match e {
        E::AuthFailed(m) => format!("authentication failed: {m}"),
        E::RateLimited(ms) => format!("rate limited; retry after {ms} ms"),
        E::Network(m) => format!("network error: {m}"),
        E::InvalidConfig(m) => format!("invalid configuration: {m}"),
        E::Unsupported => "operation not supported by the plugin".to_string(),
        E::Fatal(m) => format!("fatal error: {m}"),
    }
}

/// Run one call into a plugin under its limits (`meter` is the store's,
/// armed by [`arm`]): the time it runs is charged to its CPU budget (see
/// [`CallMeter`]), it must be done within `limits.call_timeout`, and a trap
/// becomes a [`CallError`] that says which limit it hit.
///
/// A call that finishes in its first poll, as most do, reads the clock once
/// and starts no timer; one that waits on the host arms a tokio timer for
/// what is left of its time.
pub async fn guarded<T>(meter: &CallMeter, limits: &Limits, fut: impl Future<Output = wasmtime::Result<T>>) -> Result<T, CallError> {
    let mut fut = std::pin::pin!(fut);
    let mut deadline = None;
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let result = std::future::poll_fn(|cx| {
        let now = Instant::now();
        let until = match deadline {
            None => *deadline.insert(meter.first_poll(now, limits.call_timeout)),
            Some(d) => {
                meter.poll_begins(now);
                d
            }
        };
        if let Poll::Ready(r) = fut.as_mut().poll(cx) {
            meter.call_done();
            return Poll::Ready(Some(r));
        }
        let now = Instant::now();
        meter.poll_ends(now);
        if now >= until {
            return Poll::Ready(None);
        }
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until.into())));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    match result {
        None => Err(CallError::Timeout(limits.call_timeout)),
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(CallError::Trap(describe_trap(&e, limits))),
    }
}

/// A trap in words: which limit it hit, or what wasmtime said.
pub fn describe_trap(e: &wasmtime::Error, limits: &Limits) -> String {
    if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
        return format!("exceeded its CPU budget of {:?} per call (limits.cpu_per_call)", limits.cpu_per_call);
    }
    let text = format!("{e:#}");
    if text.contains("growing memory") || text.contains("memory.grow") {
        return format!("exceeded its memory limit of {} MiB (limits.memory) and was stopped", limits.memory_bytes >> 20);
    }
    format!("trapped: {}", text.replace('\n', " "))
}

/// Arm the CPU meter of `store` for one call under `limits`, and return the
/// meter to run the call with (see [`guarded`]).
pub fn arm(store: &mut Store<PluginCtx>, limits: &Limits) -> Arc<CallMeter> {
    reset_meter(store, limits);
    store.data().meter.clone()
}

/// Start the CPU meter of `store` and its epoch deadline afresh for a call
/// under `limits` (what [`arm`] and [`Instance::begin`] both do).
fn reset_meter(store: &mut Store<PluginCtx>, limits: &Limits) {
    store.data().meter.reset(limits.cpu_per_call);
    store.set_epoch_deadline(1);
}

/// One live instance of a plugin, whatever its world (`B` is the world's
/// bindings): a channel's ([`ChannelInstance`]), a service's or a tools
/// plugin's. Every call goes through [`Self::begin`] and [`Self::end`], which
/// enforce the plugin's limits the same way for all of them. Calls never
/// overlap (each takes `&mut self`); after a trap or timeout the instance
/// refuses further calls and the owner creates a new one.
pub struct Instance<B> {
    store: Store<PluginCtx>,
    bindings: B,
    limits: Limits,
    /// The store's own meter (a second handle, usable while a call holds the store).
    meter: Arc<CallMeter>,
    broken: bool,
    /// A channel's `describe().features`, once asked for (see
    /// [`ChannelInstance::features`]).
    features: Option<Vec<latest::Feature>>,
}

/// One live instance of a channel plugin.
pub type ChannelInstance = Instance<host::ChannelBindings>;

impl<B> Instance<B> {
    /// An instance made in `store` (see [`arm`] and [`guarded`]).
    pub fn new(store: Store<PluginCtx>, bindings: B, limits: Limits) -> Self {
        let meter = store.data().meter.clone();
        Self { store, bindings, limits, meter, broken: false, features: None }
    }

    /// Start a call: refuse if the instance broke earlier, arm the CPU meter,
    /// and reset a service emitter's per-call budget. Run the call with
    /// [`Guard::run`] and hand its result to [`Self::end`].
    pub fn begin(&mut self) -> Result<(&B, &mut Store<PluginCtx>, Guard<'_>), CallError> {
        if self.broken {
            return Err(CallError::Trap("instance was stopped earlier".into()));
        }
        reset_meter(&mut self.store, &self.limits);
        if let Some(e) = &self.store.data().emitter {
            e.begin_call();
        }
        Ok((&self.bindings, &mut self.store, Guard { meter: &self.meter, limits: &self.limits }))
    }

    /// Finish a call: a trap or a timeout breaks the instance and is counted
    /// against the plugin (see [`note_call_error`]).
    pub fn end<T>(&mut self, r: Result<T, CallError>) -> Result<T, CallError> {
        if let Err(e) = &r {
            self.broken = e.breaks_instance();
            note_call_error(&self.store.data().id.name, e);
        }
        r
    }

    /// The plugin's sandbox (for redacting what it returns).
    pub fn sandbox(&self) -> &Arc<PluginSandbox> {
        self.store.data().sandbox()
    }

    /// Time the last call ran (what its CPU budget was charged), not
    /// counting its last poll (the one that returned its result).
    pub fn last_cpu(&self) -> Duration {
        self.meter.used()
    }
}

/// The limits of one call begun by [`Instance::begin`].
pub struct Guard<'a> {
    meter: &'a CallMeter,
    limits: &'a Limits,
}

impl<'a> Guard<'a> {
    /// Run the call under the instance's limits (see [`guarded`]).
    pub fn run<T>(self, fut: impl Future<Output = wasmtime::Result<T>>) -> impl Future<Output = Result<T, CallError>> {
        guarded(self.meter, self.limits, fut)
    }
}

/// `call!(self, |g, s| g.method(s, …))`: one guarded call on an [`Instance`].
macro_rules! call {
    ($self:ident, |$g:ident, $s:ident| $body:expr) => {{
        let ($g, $s, guard) = $self.begin()?;
        let r = guard.run($body).await;
        $self.end(r)
    }};
}

impl ChannelInstance {
    /// Wrap an error the plugin returned, with any secret value in its text
    /// redacted: these texts end up in logs and in the outbox's `last_error`.
    fn channel_error(&self, e: latest::ChannelError) -> CallError {
        use latest::ChannelError as E;
        let sandbox = self.sandbox();
        let r = |m: String| sandbox.redact(&m, "error").into_owned();
        CallError::Channel(match e {
            E::AuthFailed(m) => E::AuthFailed(r(m)),
            E::Network(m) => E::Network(r(m)),
            E::InvalidConfig(m) => E::InvalidConfig(r(m)),
            E::Fatal(m) => E::Fatal(r(m)),
            other => other,
        })
    }

    /// `describe()`.
    pub async fn describe(&mut self) -> Result<latest::ChannelInfo, CallError> {
        call!(self, |g, s| g.describe(s))
    }

    /// `connect()`.
    pub async fn connect(&mut self) -> Result<(), CallError> {
        call!(self, |g, s| g.connect(s))?.map_err(|e| self.channel_error(e))
    }

    /// `poll(cursor)`.
    pub async fn poll(&mut self, cursor: Option<&str>) -> Result<latest::PollResult, CallError> {
        call!(self, |g, s| g.poll(s, cursor))?.map_err(|e| self.channel_error(e))
    }

    /// `subscribe()`.
    pub async fn subscribe(&mut self) -> Result<latest::Subscription, CallError> {
        call!(self, |g, s| g.subscribe(s))?.map_err(|e| self.channel_error(e))
    }

    /// `on-frame(frame)`.
    pub async fn on_frame(&mut self, frame: &latest::Frame) -> Result<latest::FrameResult, CallError> {
        call!(self, |g, s| g.on_frame(s, frame))?.map_err(|e| self.channel_error(e))
    }

    /// The features the channel lists in `describe` (asked once per
    /// instance; none for components older than 0.1.3, without a call).
    pub async fn features(&mut self) -> Result<Vec<latest::Feature>, CallError> {
        if let Some(f) = &self.features {
            return Ok(f.clone());
        }
        let f = if self.bindings.version() == latest::VERSION { self.describe().await?.features } else { Vec::new() };
        self.features = Some(f.clone());
        Ok(f)
    }

    /// `send(message)`. Attachments and actions the channel has no feature
    /// for are turned into text first ([`host::degrade_outbound`]).
    pub async fn send(&mut self, msg: &latest::OutboundMessage) -> Result<latest::SendReceipt, CallError> {
        let msg = if msg.attachments.is_empty() && msg.actions.is_empty() {
            std::borrow::Cow::Borrowed(msg)
        } else {
            let features = self.features().await?;
            std::borrow::Cow::Owned(host::degrade_outbound(msg, &features).into_owned())
        };
        let msg = &*msg;
        call!(self, |g, s| g.send(s, msg))?.map_err(|e| self.channel_error(e))
    }

    /// Whether the component exports the optional `channel-batch`
    /// interface ([`Self::send_batch`]).
    pub fn can_send_batch(&self) -> bool {
        self.bindings.can_send_batch()
    }

    /// `send-batch(messages)`: one result per message, in order (a short
    /// list from the plugin is filled with `network` errors: those were not
    /// sent). Degraded like [`Self::send`]. An error for the whole call
    /// (`unsupported` from a component without `channel-batch`, or one that
    /// does not batch now) is the outer error.
    pub async fn send_batch(
        &mut self,
        messages: &[latest::OutboundMessage],
    ) -> Result<Vec<Result<latest::SendReceipt, CallError>>, CallError> {
        let rich = messages.iter().any(|m| !m.attachments.is_empty() || !m.actions.is_empty());
        let degraded: Vec<latest::OutboundMessage>;
        let messages = if rich {
            let features = self.features().await?;
            degraded = messages.iter().map(|m| host::degrade_outbound(m, &features).into_owned()).collect();
            &degraded[..]
        } else {
            messages
        };
        let results = call!(self, |g, s| g.send_batch(s, messages))?.map_err(|e| self.channel_error(e))?;
        let mut out: Vec<Result<latest::SendReceipt, CallError>> =
            results.into_iter().take(messages.len()).map(|r| r.map_err(|e| self.channel_error(e))).collect();
        while out.len() < messages.len() {
            out.push(Err(CallError::Channel(latest::ChannelError::Network("send-batch returned no result for this message".into()))));
        }
        Ok(out)
    }

    /// `act(action)`, when the channel lists the action's feature (`typing`,
    /// `edit`, `reactions`); `unsupported` without a call otherwise, and
    /// always for components older than 0.1.3.
    pub async fn act(&mut self, action: &latest::ChannelAction) -> Result<(), CallError> {
        let needs = match action {
            latest::ChannelAction::Typing(_) => latest::Feature::Typing,
            latest::ChannelAction::Edit(_) => latest::Feature::Edit,
            latest::ChannelAction::React(_) => latest::Feature::Reactions,
        };
        if !self.features().await?.contains(&needs) {
            return Err(CallError::Channel(latest::ChannelError::Unsupported));
        }
        call!(self, |g, s| g.act(s, action))?.map_err(|e| self.channel_error(e))
    }

    /// `disconnect()`, best effort.
    pub async fn disconnect(&mut self) {
        let _: Result<(), CallError> = async { call!(self, |g, s| g.disconnect(s)) }.await;
    }
}

impl HookInstance {
    /// An error text from the hook, with secret values redacted (it goes to logs and audit rows).
    fn hook_error(&self, e: String) -> String {
        self.sandbox().redact(&e, "error").into_owned()
    }

    /// `points()`.
    pub async fn points(&mut self) -> Result<Vec<latest::HookPoint>, CallError> {
        call!(self, |g, s| g.kata_plugin_hooks().call_points(s))
    }

    /// `message-received(channel, message)`.
    pub async fn message_received(&mut self, channel: &str, message: &latest::Message) -> HookResult<latest::InboundVerdict> {
        Ok(call!(self, |g, s| g.kata_plugin_hooks().call_message_received(s, channel, message))?.map_err(|e| self.hook_error(e)))
    }

    /// `message-sending(channel, message)`.
    pub async fn message_sending(&mut self, channel: &str, message: &latest::OutboundMessage) -> HookResult<latest::OutboundVerdict> {
        Ok(call!(self, |g, s| g.kata_plugin_hooks().call_message_sending(s, channel, message))?.map_err(|e| self.hook_error(e)))
    }

    /// `before-tool-call(call)`.
    pub async fn before_tool_call(&mut self, call: &latest::ToolCall) -> HookResult<latest::ToolVerdict> {
        Ok(call!(self, |g, s| g.kata_plugin_hooks().call_before_tool_call(s, call))?.map_err(|e| self.hook_error(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(check_version("0.1.0", "p").is_ok());
        let e = check_version("0.2.0", "p.wasm").expect_err("future").to_string();
        assert!(e.contains("kata:plugin@0.2.0") && e.contains("upgrade kata"), "{e}");
        let e = check_version("0.0.9", "p.wasm").expect_err("old").to_string();
        assert!(e.contains("rebuild"), "{e}");
        assert!(check_version("zero", "p").is_err());
    }

    #[test]
    fn recognises_non_components() {
        assert!(matches!(inspect(b"hello", "x"), Err(LoadError::NotWasm { .. })));
        let core = b"\0asm\x01\0\0\0";
        assert!(matches!(inspect(core, "x"), Err(LoadError::CoreModule { .. })));
        let truncated = b"\0asm\x0d\0\x01\0\x01";
        assert!(inspect(truncated, "x").is_err());
    }
}
