//! `kata:plugin@0.1.3` (latest): bindings generated from `wit/v0.1.3` and the
//! host functions every plugin imports. 0.1.3 adds the `connections`
//! interface (request/response over TCP or TLS, see
//! [`crate::sandbox::conn`]), the `scheduler` interface (a grant; the
//! daemon supplies it as a [`crate::host::Scheduler`]), the `hooks`
//! interface and `hook-plugin` world, channel `feature`s and the `act`
//! export, and `outbound-message.attachments` and `.actions`.

use std::borrow::Cow;

use wasmtime::component::{HasSelf, Linker};

use crate::limits::LogVerdict;

use crate::host::PluginCtx;

/// The version this module implements.
pub const VERSION: &str = "0.1.3";

/// Largest state key.
const MAX_STATE_KEY: usize = 256;
/// Largest state value.
const MAX_STATE_VALUE: usize = 1 << 20;
/// Most keys `state-keys` returns.
const MAX_STATE_KEYS: usize = 1000;

/// The `channel-plugin` world: `types`, `host` and `connections` imports
/// (their Rust types are shared by every other world below), the `channel`
/// export.
#[allow(missing_docs)]
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        world: "channel-plugin",
        path: "../../wit/v0.1.3",
        imports: { "kata:plugin/connections": async | trappable },
        exports: { default: async },
        additional_derives: [PartialEq],
        with: {
            "kata:plugin/connections.connection": crate::sandbox::conn::Connection,
        },
    });
}

/// The `service-plugin` world: the same `types`, `host` and `connections`
/// as channels, plus the `emitter` import and the `service` export.
#[allow(missing_docs)]
pub(crate) mod service_bindings {
    wasmtime::component::bindgen!({
        world: "service-plugin",
        path: "../../wit/v0.1.3",
        exports: { default: async },
        with: {
            "kata:plugin/types": super::bindings::kata::plugin::types,
            "kata:plugin/host": super::bindings::kata::plugin::host,
            "kata:plugin/connections": super::bindings::kata::plugin::connections,
        },
    });
}

/// The `tools-plugin` world: the `tools` export and the `scheduler` import,
/// sharing `types`, `host` and `connections` with the channel world. A
/// `channel-tools-plugin` component matches it too.
#[allow(missing_docs)]
pub(crate) mod tools_bindings {
    wasmtime::component::bindgen!({
        world: "tools-plugin",
        path: "../../wit/v0.1.3",
        exports: { default: async },
        additional_derives: [PartialEq],
        with: {
            "kata:plugin/types": super::bindings::kata::plugin::types,
            "kata:plugin/host": super::bindings::kata::plugin::host,
            "kata:plugin/connections": super::bindings::kata::plugin::connections,
        },
    });
}

/// The `hook-plugin` world: the `hooks` export, on the shared `types` and `host`.
#[allow(missing_docs)]
pub(crate) mod hook_bindings {
    wasmtime::component::bindgen!({
        world: "hook-plugin",
        path: "../../wit/v0.1.3",
        exports: { default: async },
        additional_derives: [PartialEq],
        with: {
            "kata:plugin/types": super::bindings::kata::plugin::types,
            "kata:plugin/host": super::bindings::kata::plugin::host,
        },
    });
}

/// The `channel-batch-plugin` world: a channel that also exports the
/// optional `channel-batch` interface (added to 0.1.3 after it was
/// published; nothing requires it). Only its `channel-batch` export is used
/// from these bindings; the rest are [`bindings`]'.
#[allow(missing_docs, dead_code)]
pub(crate) mod batch_bindings {
    wasmtime::component::bindgen!({
        world: "channel-batch-plugin",
        path: "../../wit/v0.1.3",
        exports: { default: async },
        with: {
            "kata:plugin/types": super::bindings::kata::plugin::types,
            "kata:plugin/host": super::bindings::kata::plugin::host,
            "kata:plugin/connections": super::bindings::kata::plugin::connections,
        },
    });
}

/// The name a component exports `channel-batch` under.
pub const BATCH_EXPORT: &str = "kata:plugin/channel-batch@0.1.3";

/// The `channel-batch` export of an instance.
pub type ChannelBatch = batch_bindings::exports::kata::plugin::channel_batch::Guest;

/// Where a component's `channel` and `channel-batch` exports are, looked up
/// once when it is loaded (a component without `channel-batch` has none).
#[derive(Clone)]
pub struct BatchPre {
    main: bindings::ChannelPluginIndices,
    batch: batch_bindings::exports::kata::plugin::channel_batch::GuestIndices,
}

impl BatchPre {
    /// The indices, when the component exports `channel-batch`.
    pub fn new(pre: &wasmtime::component::InstancePre<PluginCtx>) -> wasmtime::Result<Option<Self>> {
        if pre.component().get_export_index(None, BATCH_EXPORT).is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            main: bindings::ChannelPluginIndices::new(pre)?,
            batch: batch_bindings::exports::kata::plugin::channel_batch::GuestIndices::new(pre)?,
        }))
    }

    /// Both exports of `instance`.
    pub fn load(
        &self,
        mut store: impl wasmtime::AsContextMut,
        instance: &wasmtime::component::Instance,
    ) -> wasmtime::Result<(ChannelPlugin, ChannelBatch)> {
        let main = self.main.load(&mut store, instance)?;
        Ok((main, self.batch.load(&mut store, instance)?))
    }
}

pub use service_bindings::{ServicePlugin as ServiceBindings, ServicePluginPre as ServicePre};

pub use bindings::exports::kata::plugin::channel::{
    ChannelAction, ChannelInfo, Edit, Feature, FrameResult, IngressMode, PollResult, Reaction, StreamKind, Subscription, Target,
};
pub use bindings::kata::plugin::connections::ConnectionError;
pub use bindings::kata::plugin::types::{
    Action, Attachment, ChannelError, ConversationKind, Frame, LogLevel, Message, OutboundAttachment, OutboundMessage, SendReceipt,
};
pub use bindings::kata::plugin::types::{ToolError, ToolSpec};
pub use bindings::{ChannelPlugin, ChannelPluginPre};
pub use hook_bindings::exports::kata::plugin::hooks::{HookPoint, InboundVerdict, OutboundVerdict, ToolCall, ToolVerdict};
pub use hook_bindings::{HookPlugin as HookBindings, HookPluginPre as HookPre};
pub use tools_bindings::kata::plugin::scheduler::{SchedulerError, TaskInfo, TaskRequest, TaskTarget};
pub use tools_bindings::{ToolsPlugin, ToolsPluginPre};

/// Add the host interfaces to a linker. Components built against older 0.1.x
/// versions link against these too: wasmtime resolves `host@0.1.0` …
/// `host@0.1.2` to the semver-compatible `host@0.1.3`, whose functions are a
/// superset with the same types.
pub fn add_to_linker(linker: &mut Linker<PluginCtx>) -> anyhow::Result<()> {
    ChannelPlugin::add_to_linker::<PluginCtx, HasSelf<PluginCtx>>(linker, |c| c)?;
    service_bindings::kata::plugin::emitter::add_to_linker::<PluginCtx, HasSelf<PluginCtx>>(linker, |c| c)?;
    tools_bindings::kata::plugin::scheduler::add_to_linker::<PluginCtx, HasSelf<PluginCtx>>(linker, |c| c)?;
    Ok(())
}

impl bindings::kata::plugin::types::Host for PluginCtx {}

impl service_bindings::kata::plugin::emitter::Host for PluginCtx {
    fn emit(&mut self, message: Message) -> Result<(), String> {
        match &self.emitter {
            Some(e) => self.blocking(|| e.emit(message, self.sandbox())),
            None => Err("emit is for service plugins only; a channel returns its messages from poll".into()),
        }
    }
}

impl PluginCtx {
    /// Refuse a scheduler change in a call that runs with write grants stripped.
    fn writable(&self) -> Result<(), SchedulerError> {
        if self.id.read_only {
            return Err(SchedulerError::NotGranted(
                "tasks cannot be created or cancelled here: this call runs with every write grant stripped (the safe permission mode)"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl tools_bindings::kata::plugin::scheduler::Host for PluginCtx {
    fn create(&mut self, request: TaskRequest) -> Result<TaskInfo, SchedulerError> {
        let s = self.scheduler.clone().ok_or_else(|| crate::host::scheduler_not_granted(&self.id.name))?;
        self.writable()?;
        self.blocking(|| s.create(&self.id.name, self.session.as_deref(), request))
    }

    fn list(&mut self) -> Result<Vec<TaskInfo>, SchedulerError> {
        let s = self.scheduler.clone().ok_or_else(|| crate::host::scheduler_not_granted(&self.id.name))?;
        self.blocking(|| s.list(&self.id.name))
    }

    fn cancel(&mut self, id: i64) -> Result<(), SchedulerError> {
        let s = self.scheduler.clone().ok_or_else(|| crate::host::scheduler_not_granted(&self.id.name))?;
        self.writable()?;
        self.blocking(|| s.cancel(&self.id.name, id))
    }
}

impl bindings::kata::plugin::host::Host for PluginCtx {
    /// A plugin's log line, within its limits: lines over
    /// `limits.log_lines_per_minute` (across its instances) are dropped
    /// before any work is done on them and summed up in one line when lines
    /// flow again; a line over `limits.max_log_line` is cut (what is cut is
    /// never scanned, and no part of a secret survives the cut). Control
    /// characters are removed and secret values redacted.
    fn log(&mut self, level: LogLevel, message: String) {
        // A line the daemon would not write anyway (debug when logging at
        // info) costs nothing and takes nothing from the budget.
        let enabled = match level {
            LogLevel::Trace => tracing::enabled!(tracing::Level::TRACE),
            LogLevel::Debug => tracing::enabled!(tracing::Level::DEBUG),
            LogLevel::Info => tracing::enabled!(tracing::Level::INFO),
            LogLevel::Warn => tracing::enabled!(tracing::Level::WARN),
            LogLevel::Error => tracing::enabled!(tracing::Level::ERROR),
        };
        if !enabled {
            return;
        }
        let plugin = &*self.id.name;
        let sandbox = self.sandbox();
        let limits = &sandbox.grants().limits;
        let per_minute = limits.log_lines_per_minute;
        match crate::limits::admit_log_line(plugin, per_minute) {
            LogVerdict::Suppress => return,
            LogVerdict::WriteAfter(n, over) => tracing::warn!(
                plugin,
                "suppressed {n} lines from {plugin} in the last {}s (limits.log_lines_per_minute = {per_minute})",
                over.as_secs().max(1)
            ),
            LogVerdict::Write => {}
        }
        // Control characters go before redaction, so they cannot hide a secret value.
        let clean = |s: &str| -> String { s.chars().filter(|c| !c.is_control() || *c == '\t').collect() };
        let (message, cut) =
            crate::limits::cut_redacted(message, limits.max_log_line_bytes, crate::limits::LOG_CUT, sandbox.redactor().longest(), |s| {
                let s = clean(s);
                match sandbox.redact(&s, "log line") {
                    Cow::Borrowed(_) => Cow::Owned(s),
                    Cow::Owned(o) => Cow::Owned(o),
                }
            });
        if cut {
            crate::limits::hit(plugin, "max_log_line", 1);
        }
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn state_get(&mut self, key: String) -> Option<Vec<u8>> {
        match self.blocking(|| self.id.state.get(&self.id.name, &key)) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(plugin = %self.id.name, "state-get {key:?} failed: {e:#}");
                None
            }
        }
    }

    fn state_set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        if self.id.read_only {
            return Err("plugin state is read-only here: this call runs with every write grant stripped (the safe permission mode)".into());
        }
        if key.len() > MAX_STATE_KEY {
            return Err(format!("state key is {} bytes; the limit is {MAX_STATE_KEY}", key.len()));
        }
        if value.len() > MAX_STATE_VALUE {
            crate::limits::hit(&self.id.name, "max_state_value", 1);
            return Err(format!("state value is {} bytes; the limit is {MAX_STATE_VALUE}", value.len()));
        }
        self.blocking(|| self.id.state.set(&self.id.name, &key, &value)).map_err(|e| format!("cannot store state: {e:#}"))
    }

    fn state_delete(&mut self, key: String) {
        if self.id.read_only {
            tracing::warn!(plugin = %self.id.name, "state-delete {key:?} refused: this call runs with write grants stripped");
            return;
        }
        if let Err(e) = self.blocking(|| self.id.state.delete(&self.id.name, &key)) {
            tracing::error!(plugin = %self.id.name, "state-delete {key:?} failed: {e:#}");
        }
    }

    fn state_keys(&mut self, prefix: String) -> Vec<String> {
        match self.blocking(|| self.id.state.keys(&self.id.name, &prefix, MAX_STATE_KEYS)) {
            Ok(keys) => keys,
            Err(e) => {
                tracing::error!(plugin = %self.id.name, "state-keys {prefix:?} failed: {e:#}");
                Vec::new()
            }
        }
    }

    fn config_get(&mut self, key: String) -> Option<String> {
        self.id.config.get(&key).cloned()
    }

    fn now_ms(&mut self) -> u64 {
        crate::util::now_ms()
    }
}
