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

pub use v0_1_2 as latest;

use wasmtime::Store;
use wasmtime::component::InstancePre;

pub use ctx::{Emit, PluginCtx, PluginIdentity, new_store};

/// The WIT package every version lives in.
pub const PACKAGE: &str = "kata:plugin";

/// The custom section in which the SDKs record the WIT version a component targets.
pub const VERSION_SECTION: &str = "kata:wit-version";

/// WIT versions this host can run, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &[v0_1_0::VERSION, v0_1_1::VERSION, v0_1_2::VERSION];

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
}

impl ChannelPre {
    /// Pick the bindings for `version` (the component's declared WIT version).
    pub fn new(pre: InstancePre<PluginCtx>, version: Option<&str>) -> wasmtime::Result<Self> {
        Ok(match version {
            Some("0.1.0") => Self::V0_1_0(v0_1_0::ChannelPluginPre::new(pre)?),
            Some("0.1.1") => Self::V0_1_1(v0_1_1::ChannelPluginPre::new(pre)?),
            _ => Self::V0_1_2(v0_1_2::ChannelPluginPre::new(pre)?),
        })
    }

    /// Instantiate in `store`.
    pub async fn instantiate_async(&self, store: &mut Store<PluginCtx>) -> wasmtime::Result<ChannelBindings> {
        Ok(match self {
            Self::V0_1_0(p) => ChannelBindings::V0_1_0(p.instantiate_async(store).await?),
            Self::V0_1_1(p) => ChannelBindings::V0_1_1(p.instantiate_async(store).await?),
            Self::V0_1_2(p) => ChannelBindings::V0_1_2(p.instantiate_async(store).await?),
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
}

type ChannelResult<T> = wasmtime::Result<Result<T, latest::ChannelError>>;

impl ChannelBindings {
    /// `describe()`.
    pub async fn describe(&self, s: &mut Store<PluginCtx>) -> wasmtime::Result<latest::ChannelInfo> {
        match self {
            Self::V0_1_0(b) => b.kata_plugin_channel().call_describe(s).await.map(Into::into),
            Self::V0_1_1(b) => b.kata_plugin_channel().call_describe(s).await.map(Into::into),
            Self::V0_1_2(b) => b.kata_plugin_channel().call_describe(s).await,
        }
    }

    /// `connect()`.
    pub async fn connect(&self, s: &mut Store<PluginCtx>) -> ChannelResult<()> {
        match self {
            Self::V0_1_0(b) => Ok(b.kata_plugin_channel().call_connect(s).await?.map_err(Into::into)),
            Self::V0_1_1(b) => Ok(b.kata_plugin_channel().call_connect(s).await?.map_err(Into::into)),
            Self::V0_1_2(b) => b.kata_plugin_channel().call_connect(s).await,
        }
    }

    /// `poll(cursor)`.
    pub async fn poll(&self, s: &mut Store<PluginCtx>, cursor: Option<&str>) -> ChannelResult<latest::PollResult> {
        match self {
            Self::V0_1_0(b) => Ok(b.kata_plugin_channel().call_poll(s, cursor).await?.map(Into::into).map_err(Into::into)),
            Self::V0_1_1(b) => Ok(b.kata_plugin_channel().call_poll(s, cursor).await?.map(Into::into).map_err(Into::into)),
            Self::V0_1_2(b) => b.kata_plugin_channel().call_poll(s, cursor).await,
        }
    }

    /// `subscribe()`.
    pub async fn subscribe(&self, s: &mut Store<PluginCtx>) -> ChannelResult<latest::Subscription> {
        match self {
            Self::V0_1_0(b) => Ok(b.kata_plugin_channel().call_subscribe(s).await?.map(Into::into).map_err(Into::into)),
            Self::V0_1_1(b) => Ok(b.kata_plugin_channel().call_subscribe(s).await?.map(Into::into).map_err(Into::into)),
            Self::V0_1_2(b) => b.kata_plugin_channel().call_subscribe(s).await,
        }
    }

    /// `on-frame(frame)`.
    pub async fn on_frame(&self, s: &mut Store<PluginCtx>, frame: &latest::Frame) -> ChannelResult<latest::FrameResult> {
        match self {
            Self::V0_1_0(b) => Ok(b.kata_plugin_channel().call_on_frame(s, &frame.into()).await?.map(Into::into).map_err(Into::into)),
            Self::V0_1_1(b) => Ok(b.kata_plugin_channel().call_on_frame(s, &frame.into()).await?.map(Into::into).map_err(Into::into)),
            Self::V0_1_2(b) => b.kata_plugin_channel().call_on_frame(s, frame).await,
        }
    }

    /// `send(message)`.
    pub async fn send(&self, s: &mut Store<PluginCtx>, msg: &latest::OutboundMessage) -> ChannelResult<latest::SendReceipt> {
        match self {
            Self::V0_1_0(b) => Ok(b.kata_plugin_channel().call_send(s, &msg.into()).await?.map(Into::into).map_err(Into::into)),
            Self::V0_1_1(b) => Ok(b.kata_plugin_channel().call_send(s, &msg.into()).await?.map(Into::into).map_err(Into::into)),
            Self::V0_1_2(b) => b.kata_plugin_channel().call_send(s, msg).await,
        }
    }

    /// `disconnect()`.
    pub async fn disconnect(&self, s: &mut Store<PluginCtx>) -> wasmtime::Result<()> {
        match self {
            Self::V0_1_0(b) => b.kata_plugin_channel().call_disconnect(s).await,
            Self::V0_1_1(b) => b.kata_plugin_channel().call_disconnect(s).await,
            Self::V0_1_2(b) => b.kata_plugin_channel().call_disconnect(s).await,
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
    /// Built against 0.1.2.
    V0_1_2(v0_1_2::ToolsPluginPre<PluginCtx>),
}

impl ToolsPre {
    /// Pick the bindings for `version` (the component's declared WIT version).
    pub fn new(pre: InstancePre<PluginCtx>, version: Option<&str>) -> wasmtime::Result<Self> {
        Ok(match version {
            Some("0.1.0") => Self::V0_1_0(v0_1_0::ToolsPluginPre::new(pre)?),
            Some("0.1.1") => Self::V0_1_1(v0_1_1::ToolsPluginPre::new(pre)?),
            _ => Self::V0_1_2(v0_1_2::ToolsPluginPre::new(pre)?),
        })
    }

    /// Instantiate in `store`.
    pub async fn instantiate_async(&self, store: &mut Store<PluginCtx>) -> wasmtime::Result<ToolsBindings> {
        Ok(match self {
            Self::V0_1_0(p) => ToolsBindings::V0_1_0(p.instantiate_async(store).await?),
            Self::V0_1_1(p) => ToolsBindings::V0_1_1(p.instantiate_async(store).await?),
            Self::V0_1_2(p) => ToolsBindings::V0_1_2(p.instantiate_async(store).await?),
        })
    }
}

/// The `tools` export of an instance, whatever version it speaks.
pub enum ToolsBindings {
    /// 0.1.0.
    V0_1_0(v0_1_0::ToolsPlugin),
    /// 0.1.1.
    V0_1_1(v0_1_1::ToolsPlugin),
    /// 0.1.2.
    V0_1_2(v0_1_2::ToolsPlugin),
}

impl ToolsBindings {
    /// `list()`.
    pub async fn list(&self, s: &mut Store<PluginCtx>) -> wasmtime::Result<Vec<latest::ToolSpec>> {
        match self {
            Self::V0_1_0(b) => Ok(b.kata_plugin_tools().call_list(s).await?.into_iter().map(Into::into).collect()),
            Self::V0_1_1(b) => Ok(b.kata_plugin_tools().call_list(s).await?.into_iter().map(Into::into).collect()),
            Self::V0_1_2(b) => b.kata_plugin_tools().call_list(s).await,
        }
    }

    /// `call(name, args-json)`.
    pub async fn call(&self, s: &mut Store<PluginCtx>, name: &str, args_json: &str) -> wasmtime::Result<Result<String, latest::ToolError>> {
        match self {
            Self::V0_1_0(b) => Ok(b.kata_plugin_tools().call_call(s, name, args_json).await?.map_err(Into::into)),
            Self::V0_1_1(b) => Ok(b.kata_plugin_tools().call_call(s, name, args_json).await?.map_err(Into::into)),
            Self::V0_1_2(b) => b.kata_plugin_tools().call_call(s, name, args_json).await,
        }
    }
}
