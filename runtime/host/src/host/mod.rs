//! The host side of the WIT contract, one module per published version.
//!
//! Every version of `kata:plugin` ever released keeps its module here (and its
//! WIT under `wit/vX.Y.Z/`, never edited), so a component built against an old
//! version keeps loading when the host moves on — the scheme Zed's extension
//! host uses. The newest is aliased as [`latest`]; older modules convert their
//! types to the latest ones, and [`ChannelPre`] / [`ChannelBindings`] pick the
//! module from the version a component declares.

mod ctx;
pub mod v0_1_0;
pub mod v0_1_1;
pub mod v0_1_2;
pub mod v0_1_3;

pub use v0_1_3 as latest;

use wasmtime::Store;
use wasmtime::component::InstancePre;

pub use ctx::{Emit, PluginCtx, PluginIdentity, Scheduler, new_store, scheduler_not_granted};

/// The WIT package every version lives in.
pub const PACKAGE: &str = "kata:plugin";

/// The custom section in which the SDKs record the WIT version a component targets.
pub const VERSION_SECTION: &str = "kata:wit-version";

/// WIT versions this host can run, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &[v0_1_0::VERSION, v0_1_1::VERSION, v0_1_2::VERSION, v0_1_3::VERSION];

/// Add the latest host interfaces, and WASI 0.2 with wasi:http, to a linker.
/// Older 0.1.x components link against them through semver-compatible names.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<PluginCtx>) -> anyhow::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    latest::add_to_linker(linker)?;
    Ok(())
}

/// A channel component linked and ready to instantiate, with the bindings of
/// the contract version it was built against.
#[derive(Clone)]
pub enum ChannelPre {
    /// Built against 0.1.0.
    V0_1_0(v0_1_0::ChannelPluginPre<PluginCtx>),
    /// Built against 0.1.1.
    V0_1_1(v0_1_1::ChannelPluginPre<PluginCtx>),
    /// Built against 0.1.2.
    V0_1_2(v0_1_2::ChannelPluginPre<PluginCtx>),
    /// Built against 0.1.3, with the optional `channel-batch` export if it has one.
    V0_1_3(v0_1_3::ChannelPluginPre<PluginCtx>, Option<v0_1_3::BatchPre>),
}

impl ChannelPre {
    /// Pick the bindings for `version` (the component's declared WIT version).
    pub fn new(pre: InstancePre<PluginCtx>, version: Option<&str>) -> wasmtime::Result<Self> {
        Ok(match version {
            Some("0.1.0") => Self::V0_1_0(v0_1_0::ChannelPluginPre::new(pre)?),
            Some("0.1.1") => Self::V0_1_1(v0_1_1::ChannelPluginPre::new(pre)?),
            Some("0.1.2") => Self::V0_1_2(v0_1_2::ChannelPluginPre::new(pre)?),
            _ => {
                let batch = v0_1_3::BatchPre::new(&pre)?;
                Self::V0_1_3(v0_1_3::ChannelPluginPre::new(pre)?, batch)
            }
        })
    }

    /// Whether the component exports `channel-batch` (`send-batch`).
    pub fn can_send_batch(&self) -> bool {
        matches!(self, Self::V0_1_3(_, Some(_)))
    }

    /// Instantiate in `store`.
    pub async fn instantiate_async(&self, store: &mut Store<PluginCtx>) -> wasmtime::Result<ChannelBindings> {
        Ok(match self {
            Self::V0_1_0(p) => ChannelBindings::V0_1_0(p.instantiate_async(store).await?),
            Self::V0_1_1(p) => ChannelBindings::V0_1_1(p.instantiate_async(store).await?),
            Self::V0_1_2(p) => ChannelBindings::V0_1_2(p.instantiate_async(store).await?),
            Self::V0_1_3(p, None) => ChannelBindings::V0_1_3(p.instantiate_async(store).await?, None),
            Self::V0_1_3(p, Some(batch)) => {
                let instance = p.instance_pre().instantiate_async(&mut *store).await?;
                let (main, batch) = batch.load(&mut *store, &instance)?;
                ChannelBindings::V0_1_3(main, Some(batch))
            }
        })
    }
}

/// The `channel` export of an instance, whatever version it speaks, with
/// results converted to the latest types.
pub enum ChannelBindings {
    /// 0.1.0.
    V0_1_0(v0_1_0::ChannelPlugin),
    /// 0.1.1.
    V0_1_1(v0_1_1::ChannelPlugin),
    /// 0.1.2.
    V0_1_2(v0_1_2::ChannelPlugin),
    /// 0.1.3, with its `channel-batch` export if it has one.
    V0_1_3(v0_1_3::ChannelPlugin, Option<v0_1_3::ChannelBatch>),
}

type ChannelResult<T> = wasmtime::Result<Result<T, latest::ChannelError>>;

impl ChannelBindings {
    /// `describe()`.
    pub async fn describe(&self, s: &mut Store<PluginCtx>) -> wasmtime::Result<latest::ChannelInfo> {
        match self {
            Self::V0_1_0(b) => b.kata_plugin_channel().call_describe(s).await.map(Into::into),
            Self::V0_1_1(b) => b.kata_plugin_channel().call_describe(s).await.map(Into::into),
            Self::V0_1_2(b) => b.kata_plugin_channel().call_describe(s).await.map(Into::into),
            Self::V0_1_3(b, _) => b.kata_plugin_channel().call_describe(s).await,
        }
    }

    /// `connect()`.
    pub async fn connect(&self, s: &mut Store<PluginCtx>) -> ChannelResult<()> {
        match self {
            Self::V0_1_0(b) => Ok(b.kata_plugin_channel().call_connect(s).await?.map_err(Into::into)),
            Self::V0_1_1(b) => Ok(b.kata_plugin_channel().call_connect(s).await?.map_err(Into::into)),
            Self::V0_1_2(b) => Ok(b.kata_plugin_channel().call_connect(s).await?.map_err(Into::into)),
            Self::V0_1_3(b, _) => b.kata_plugin_channel().call_connect(s).await,
        }
    }

    /// `poll(cursor)`.
    pub async fn poll(&self, s: &mut Store<PluginCtx>, cursor: Option<&str>) -> ChannelResult<latest::PollResult> {
        match self {
            Self::V0_1_0(b) => Ok(b.kata_plugin_channel().call_poll(s, cursor).await?.map(Into::into).map_err(Into::into)),
            Self::V0_1_1(b) => Ok(b.kata_plugin_channel().call_poll(s, cursor).await?.map(Into::into).map_err(Into::into)),
            Self::V0_1_2(b) => Ok(b.kata_plugin_channel().call_poll(s, cursor).await?.map(Into::into).map_err(Into::into)),
            Self::V0_1_3(b, _) => b.kata_plugin_channel().call_poll(s, cursor).await,
        }
    }

    /// `subscribe()`.
    pub async fn subscribe(&self, s: &mut Store<PluginCtx>) -> ChannelResult<latest::Subscription> {
        match self {
            Self::V0_1_0(b) => Ok(b.kata_plugin_channel().call_subscribe(s).await?.map(Into::into).map_err(Into::into)),
            Self::V0_1_1(b) => Ok(b.kata_plugin_channel().call_subscribe(s).await?.map(Into::into).map_err(Into::into)),
            Self::V0_1_2(b) => Ok(b.kata_plugin_channel().call_subscribe(s).await?.map(Into::into).map_err(Into::into)),
            Self::V0_1_3(b, _) => b.kata_plugin_channel().call_subscribe(s).await,
        }
    }

    /// `on-frame(frame)`.
    pub async fn on_frame(&self, s: &mut Store<PluginCtx>, frame: &latest::Frame) -> ChannelResult<latest::FrameResult> {
        match self {
            Self::V0_1_0(b) => Ok(b.kata_plugin_channel().call_on_frame(s, &frame.into()).await?.map(Into::into).map_err(Into::into)),
            Self::V0_1_1(b) => Ok(b.kata_plugin_channel().call_on_frame(s, &frame.into()).await?.map(Into::into).map_err(Into::into)),
            Self::V0_1_2(b) => Ok(b.kata_plugin_channel().call_on_frame(s, &frame.into()).await?.map(Into::into).map_err(Into::into)),
            Self::V0_1_3(b, _) => b.kata_plugin_channel().call_on_frame(s, frame).await,
        }
    }

    /// `send(message)`.
    pub async fn send(&self, s: &mut Store<PluginCtx>, msg: &latest::OutboundMessage) -> ChannelResult<latest::SendReceipt> {
        match self {
            Self::V0_1_0(b) => Ok(b.kata_plugin_channel().call_send(s, &msg.into()).await?.map(Into::into).map_err(Into::into)),
            Self::V0_1_1(b) => Ok(b.kata_plugin_channel().call_send(s, &msg.into()).await?.map(Into::into).map_err(Into::into)),
            Self::V0_1_2(b) => Ok(b.kata_plugin_channel().call_send(s, &msg.into()).await?.map(Into::into).map_err(Into::into)),
            Self::V0_1_3(b, _) => b.kata_plugin_channel().call_send(s, msg).await,
        }
    }

    /// `disconnect()`.
    pub async fn disconnect(&self, s: &mut Store<PluginCtx>) -> wasmtime::Result<()> {
        match self {
            Self::V0_1_0(b) => b.kata_plugin_channel().call_disconnect(s).await,
            Self::V0_1_1(b) => b.kata_plugin_channel().call_disconnect(s).await,
            Self::V0_1_2(b) => b.kata_plugin_channel().call_disconnect(s).await,
            Self::V0_1_3(b, _) => b.kata_plugin_channel().call_disconnect(s).await,
        }
    }

    /// `act(action)`; `unsupported` for components older than 0.1.3 (they
    /// list no features).
    pub async fn act(&self, s: &mut Store<PluginCtx>, action: &latest::ChannelAction) -> ChannelResult<()> {
        match self {
            Self::V0_1_3(b, _) => b.kata_plugin_channel().call_act(s, action).await,
            _ => Ok(Err(latest::ChannelError::Unsupported)),
        }
    }

    /// `send-batch(messages)` of the optional `channel-batch` export;
    /// `unsupported` for a component without it.
    pub async fn send_batch(
        &self,
        s: &mut Store<PluginCtx>,
        messages: &[latest::OutboundMessage],
    ) -> ChannelResult<Vec<Result<latest::SendReceipt, latest::ChannelError>>> {
        match self {
            Self::V0_1_3(_, Some(b)) => b.call_send_batch(s, messages).await,
            _ => Ok(Err(latest::ChannelError::Unsupported)),
        }
    }

    /// Whether this instance exports `channel-batch`.
    pub fn can_send_batch(&self) -> bool {
        matches!(self, Self::V0_1_3(_, Some(_)))
    }

    /// The contract version of this instance's component.
    pub fn version(&self) -> &'static str {
        match self {
            Self::V0_1_0(_) => v0_1_0::VERSION,
            Self::V0_1_1(_) => v0_1_1::VERSION,
            Self::V0_1_2(_) => v0_1_2::VERSION,
            Self::V0_1_3(..) => v0_1_3::VERSION,
        }
    }
}

/// A tools component (world `tools-plugin` or `channel-tools-plugin`) linked
/// and ready to instantiate, with the bindings of its contract version.
#[derive(Clone)]
pub enum ToolsPre {
    /// Built against 0.1.0.
    V0_1_0(v0_1_0::ToolsPluginPre<PluginCtx>),
    /// Built against 0.1.1.
    V0_1_1(v0_1_1::ToolsPluginPre<PluginCtx>),
    /// Built against 0.1.2 or 0.1.3: `tools` did not change in 0.1.3, and
    /// wasmtime finds a `tools@0.1.2` export for `tools@0.1.3`.
    V0_1_3(v0_1_3::ToolsPluginPre<PluginCtx>),
}

impl ToolsPre {
    /// Pick the bindings for `version` (the component's declared WIT version).
    pub fn new(pre: InstancePre<PluginCtx>, version: Option<&str>) -> wasmtime::Result<Self> {
        Ok(match version {
            Some("0.1.0") => Self::V0_1_0(v0_1_0::ToolsPluginPre::new(pre)?),
            Some("0.1.1") => Self::V0_1_1(v0_1_1::ToolsPluginPre::new(pre)?),
            _ => Self::V0_1_3(v0_1_3::ToolsPluginPre::new(pre)?),
        })
    }

    /// Instantiate in `store`.
    pub async fn instantiate_async(&self, store: &mut Store<PluginCtx>) -> wasmtime::Result<ToolsBindings> {
        Ok(match self {
            Self::V0_1_0(p) => ToolsBindings::V0_1_0(p.instantiate_async(store).await?),
            Self::V0_1_1(p) => ToolsBindings::V0_1_1(p.instantiate_async(store).await?),
            Self::V0_1_3(p) => ToolsBindings::V0_1_3(p.instantiate_async(store).await?),
        })
    }
}

/// The `tools` export of an instance, whatever version it speaks.
pub enum ToolsBindings {
    /// 0.1.0.
    V0_1_0(v0_1_0::ToolsPlugin),
    /// 0.1.1.
    V0_1_1(v0_1_1::ToolsPlugin),
    /// 0.1.2 and 0.1.3.
    V0_1_3(v0_1_3::ToolsPlugin),
}

impl ToolsBindings {
    /// `list()`.
    pub async fn list(&self, s: &mut Store<PluginCtx>) -> wasmtime::Result<Vec<latest::ToolSpec>> {
        match self {
            Self::V0_1_0(b) => Ok(b.kata_plugin_tools().call_list(s).await?.into_iter().map(Into::into).collect()),
            Self::V0_1_1(b) => Ok(b.kata_plugin_tools().call_list(s).await?.into_iter().map(Into::into).collect()),
            Self::V0_1_3(b) => b.kata_plugin_tools().call_list(s).await,
        }
    }

    /// `call(name, args-json)`.
    pub async fn call(&self, s: &mut Store<PluginCtx>, name: &str, args_json: &str) -> wasmtime::Result<Result<String, latest::ToolError>> {
        match self {
            Self::V0_1_0(b) => Ok(b.kata_plugin_tools().call_call(s, name, args_json).await?.map_err(Into::into)),
            Self::V0_1_1(b) => Ok(b.kata_plugin_tools().call_call(s, name, args_json).await?.map_err(Into::into)),
            Self::V0_1_3(b) => b.kata_plugin_tools().call_call(s, name, args_json).await,
        }
    }
}

/// `msg` as a channel with `features` can take it: attachments become a line
/// each in the text unless the channel lists `attachments`, and actions
/// become `reply "ID"` hints unless it lists `buttons` (a button sends its id
/// as message text, so typing the id is the same as pressing it). Borrowed
/// when nothing changes. Components older than 0.1.3 list no features, so
/// they get the text form of everything.
///
/// ```
/// use kata_host::host::{degrade_outbound, latest::{Action, Feature, OutboundAttachment, OutboundMessage}};
///
/// let msg = OutboundMessage {
///     conversation: "c".into(), thread: None, reply_to: None, text: "Run `rm -rf build`?".into(),
///     idempotency_key: "k".into(),
///     attachments: vec![OutboundAttachment { name: "plan.txt".into(), mime_type: "text/plain".into(), data: vec![b'x'; 2048] }],
///     actions: vec![Action { id: "yes 7".into(), label: "Approve".into() }, Action { id: "no 7".into(), label: "Deny".into() }],
/// };
/// let plain = degrade_outbound(&msg, &[]);
/// assert_eq!(plain.text, "Run `rm -rf build`?\n\n[file not sent: plan.txt (text/plain, 2 KiB)]\n\nreply \"yes 7\" to Approve\nreply \"no 7\" to Deny");
/// assert!(plain.attachments.is_empty() && plain.actions.is_empty());
/// let rich = degrade_outbound(&msg, &[Feature::Attachments, Feature::Buttons]);
/// assert_eq!(*rich, msg);
/// ```
pub fn degrade_outbound<'a>(
    msg: &'a latest::OutboundMessage,
    features: &[latest::Feature],
) -> std::borrow::Cow<'a, latest::OutboundMessage> {
    use std::fmt::Write;
    let files = !msg.attachments.is_empty() && !features.contains(&latest::Feature::Attachments);
    let buttons = !msg.actions.is_empty() && !features.contains(&latest::Feature::Buttons);
    if !files && !buttons {
        return std::borrow::Cow::Borrowed(msg);
    }
    let mut m = msg.clone();
    if files {
        let mut block = String::new();
        for a in std::mem::take(&mut m.attachments) {
            let size = file_size(a.data.len());
            let _ = write!(block, "{}[file not sent: {} ({}, {size})]", if block.is_empty() { "" } else { "\n" }, a.name, a.mime_type);
        }
        append_block(&mut m.text, &block);
    }
    if buttons {
        let mut block = String::new();
        for a in std::mem::take(&mut m.actions) {
            let sep = if block.is_empty() { "" } else { "\n" };
            if a.label.is_empty() || a.label == a.id {
                let _ = write!(block, "{sep}reply \"{}\"", a.id);
            } else {
                let _ = write!(block, "{sep}reply \"{}\" to {}", a.id, a.label);
            }
        }
        append_block(&mut m.text, &block);
    }
    std::borrow::Cow::Owned(m)
}

/// A file size for people: `512 bytes`, `2 KiB`, `1.5 MiB`.
fn file_size(n: usize) -> String {
    match n {
        0..1024 => format!("{n} bytes"),
        1024..1_048_576 => format!("{} KiB", (n as f64 / 1024.0 * 10.0).round() / 10.0),
        _ => format!("{} MiB", (n as f64 / 1_048_576.0 * 10.0).round() / 10.0),
    }
}

/// Append `block` to `text` after a blank line (or as the text, when empty).
fn append_block(text: &mut String, block: &str) {
    if !text.trim_end().is_empty() {
        text.truncate(text.trim_end().len());
        text.push_str("\n\n");
    } else {
        text.clear();
    }
    text.push_str(block);
}
