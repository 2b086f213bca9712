//! The host side of the WIT contract, one module per published version.
//!
//! Every version of `kata:plugin` ever released keeps its module here (and its
//! WIT under `wit/vX.Y.Z/`, never edited), so a component built against an old
//! version keeps loading when the host moves on — the scheme Zed's extension
//! host uses. The newest is aliased as [`latest`]; older modules convert their
//! types to the latest ones.

pub mod v0_1_0;

pub use v0_1_0 as latest;

/// The WIT package every version lives in.
pub const PACKAGE: &str = "kata:plugin";

/// The custom section in which the SDKs record the WIT version a component targets.
pub const VERSION_SECTION: &str = "kata:wit-version";

/// WIT versions this host can run, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &[v0_1_0::VERSION];

/// Add every supported version's host interfaces, and WASI 0.2 with wasi:http,
/// to a linker.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<crate::engine::PluginCtx>) -> anyhow::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    v0_1_0::add_to_linker(linker)?;
    Ok(())
}
