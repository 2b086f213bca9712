//! Test guest `guest-tools-only`: a component of world `tools-plugin` (not a
//! channel), built with wit-bindgen directly. It offers one tool, `hello`.
//! The host must refuse it where a channel plugin is expected.

#[allow(missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit/v0.1.0",
        world: "kata:plugin/tools-plugin",
    });
}

use bindings::exports::kata::plugin::tools::{Guest, ToolError, ToolSpec};

/// The tools implementation.
struct ToolsOnly;

impl Guest for ToolsOnly {
    fn list() -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "hello".into(),
            description: "Say hello. Returns a greeting that echoes the arguments.".into(),
            args_schema: r#"{"type":"object","properties":{"name":{"type":"string"}}}"#.into(),
        }]
    }

    fn call(name: String, args_json: String) -> Result<String, ToolError> {
        match name.as_str() {
            "hello" => Ok(format!("hello {args_json}")),
            _ => Err(ToolError::UnknownTool(name)),
        }
    }
}

bindings::export!(ToolsOnly with_types_in bindings);

/// The WIT version, in the same custom section the kata SDK writes, so the
/// host's refusal is about the world and not a missing version.
#[cfg(target_family = "wasm")]
#[used]
#[unsafe(link_section = "kata:wit-version")]
static KATA_WIT_VERSION: [u8; 5] = *b"0.1.0";
