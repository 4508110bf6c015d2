//! Core module → component: the module's imports are checked, `wit-component` wraps
//! it using the world wit-bindgen embedded in it, and the result is validated.

use wasmparser::{Encoding, Parser, Payload, Validator, WasmFeatures};
use wit_component::{ComponentEncoder, DecodedWasm};

use crate::BuildError;

/// The only import namespace a function may use (the world's `host` interface).
const WORLD_PACKAGE: &str = "tern:function/";
/// The export every function has; the version follows the `@`.
const HANDLER_EXPORT: &str = "tern:function/handler@";
/// Custom sections wit-bindgen embeds start with this name.
const COMPONENT_TYPE_SECTION: &str = "component-type";

/// Turns a core module carrying wit-bindgen's embedded `component-type` section into
/// a component, validated and exporting `tern:function/handler`.
///
/// No WASI adapter is used: the `tern:function` worlds import nothing from WASI, so a
/// module importing anything outside `tern:function/*` is refused (it would need a
/// host the edge is not).
pub fn componentize(core_wasm: &[u8]) -> Result<Vec<u8>, BuildError> {
    check_module(core_wasm)?;
    let component = ComponentEncoder::default()
        .module(core_wasm)
        .and_then(|encoder| encoder.encode())
        .map_err(|error| BuildError::Componentize(format!("{error:#}")))?;
    Validator::new_with_features(WasmFeatures::default())
        .validate_all(&component)
        .map_err(|error| BuildError::Invalid(error.to_string()))?;
    let exports = component_exports(&component)?;
    if !exports.iter().any(|name| name.starts_with(HANDLER_EXPORT)) {
        return Err(BuildError::Invalid(format!(
            "it does not export {HANDLER_EXPORT}<version> (exports: {})",
            if exports.is_empty() {
                "none".to_owned()
            } else {
                exports.join(", ")
            }
        )));
    }
    Ok(component)
}

/// The interfaces (and functions) a component exports, by their full names, e.g.
/// `tern:function/handler@0.1.0`.
pub fn component_exports(component: &[u8]) -> Result<Vec<String>, BuildError> {
    match wit_component::decode(component) {
        Ok(DecodedWasm::Component(resolve, world)) => Ok(resolve.worlds[world]
            .exports
            .keys()
            .map(|key| resolve.name_world_key(key))
            .collect()),
        Ok(DecodedWasm::WitPackage(..)) => Err(BuildError::Invalid(
            "it is a WIT package, not a component".to_owned(),
        )),
        Err(error) => Err(BuildError::Invalid(format!("{error:#}"))),
    }
}

/// Refuses what is not a core module, imports outside the world, and a module
/// without an embedded world (not built with `tern_function::function!`).
fn check_module(wasm: &[u8]) -> Result<(), BuildError> {
    let mut has_world = false;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|error| {
            BuildError::Componentize(format!("not a WebAssembly module: {error}"))
        })?;
        match payload {
            Payload::Version {
                encoding: Encoding::Component,
                ..
            } => {
                return Err(BuildError::Componentize(
                    "this is a component already, not a core module".to_owned(),
                ));
            }
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    let import = import.map_err(|error| {
                        BuildError::Componentize(format!("unreadable import section: {error}"))
                    })?;
                    // wit-bindgen names host imports `tern:function/host@0.1.0` and
                    // imports about exports (e.g. resource drops) `[export]tern:function/…`.
                    let namespace = import
                        .module
                        .strip_prefix("[export]")
                        .unwrap_or(import.module);
                    if !namespace.starts_with(WORLD_PACKAGE) {
                        return Err(BuildError::Componentize(format!(
                            "the module imports `{}` `{}`, which is outside {WORLD_PACKAGE}*: \
                             a function may import only what the tern:function world grants \
                             (no WASI, no `env`); remove the dependency that needs it",
                            import.module, import.name
                        )));
                    }
                }
            }
            Payload::CustomSection(section)
                if section.name().starts_with(COMPONENT_TYPE_SECTION) =>
            {
                has_world = true;
            }
            _ => {}
        }
    }
    if has_world {
        Ok(())
    } else {
        Err(BuildError::Componentize(
            "the module embeds no component type (no `component-type` custom section): \
             build it from a crate that calls `tern_function::function!`"
                .to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid core module: `(type (func)) (import "env" "foo" (func (type 0)))`.
    const IMPORTS_ENV_FOO: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: one func type () -> ()
        0x02, 0x0b, 0x01, // import section, 11 bytes, 1 import
        0x03, b'e', b'n', b'v', 0x03, b'f', b'o', b'o', 0x00, 0x00, // "env" "foo" func 0
    ];

    /// The smallest valid core module: no sections at all.
    const EMPTY_MODULE: &[u8] = &[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

    fn componentize_error(bytes: &[u8]) -> String {
        match componentize(bytes) {
            Err(BuildError::Componentize(message)) => message,
            other => panic!("expected a Componentize error, got {other:?}"),
        }
    }

    #[test]
    fn garbage_is_not_a_module() {
        let message = componentize_error(b"this is not WebAssembly at all");
        assert!(message.starts_with("not a WebAssembly module"), "{message}");
    }

    #[test]
    fn foreign_import_is_refused_by_name() {
        Validator::new()
            .validate_all(IMPORTS_ENV_FOO)
            .expect("the test module itself is valid");
        let message = componentize_error(IMPORTS_ENV_FOO);
        assert!(message.contains("imports `env` `foo`"), "{message}");
        assert!(message.contains("outside tern:function/*"), "{message}");
    }

    #[test]
    fn module_without_a_world_is_refused() {
        let message = componentize_error(EMPTY_MODULE);
        assert!(
            message.contains("no `component-type` custom section"),
            "{message}"
        );
    }

    #[test]
    fn component_is_not_a_core_module() {
        // A component preamble: magic, version 0x0d, layer 1.
        let component = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
        let message = componentize_error(&component);
        assert!(message.contains("component already"), "{message}");
    }
}
