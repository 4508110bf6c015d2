//! Checks a compiled component against the `tern:function@0.1.0` world before the
//! host uses it: the right version, the handler export, the exact signatures, and no
//! import but the `host` interface and the getters of the `types` resources. Each
//! refusal names what the component has. (Resources render as `borrow<resource>`;
//! which resource a handle is of is checked when the host types the exports.)
//!
//! Types are compared as WIT-like text (records, variants, ... rendered structurally,
//! with the world's named types abbreviated), so a mismatch prints both sides.

use std::fmt::Write as _;

use wasmtime::Engine;
use wasmtime::component::types::{ComponentFunc, ComponentItem, Type};
use wasmtime::component::{Component, ComponentExportIndex};

use crate::error::LoadError;
use crate::lent::{TYPES, getter_signature};

/// Export and import names of the world this host runs.
pub(crate) const HANDLER: &str = "tern:function/handler@0.1.0";
pub(crate) const BATCH_HANDLER: &str = "tern:function/batch-handler@0.1.0";
pub(crate) const HOST: &str = "tern:function/host@0.1.0";
const PACKAGE: &str = "tern:function/";

/// The world's named types, as the renderer prints them structurally. A rendered type
/// equal to one of these is abbreviated to its name.
const NAMED: &[(&str, &str)] = &[
    (
        "variant { pass, replace(outgoing), drop(string), reject(string) }",
        "action",
    ),
    (
        "record { name: option<string>, data: list<u8>, content-type: option<string>, headers: list<tuple<string, string>> }",
        "outgoing",
    ),
    ("record { name: string, region: string }", "edge-info"),
    ("enum { debug, info, warn, error }", "level"),
];

/// The signatures this host calls and grants.
const HANDLE: &str = "func(borrow<resource>) -> action";
const HANDLE_BATCH: &str = "func(borrow<resource>) -> list<action>";
const HOST_FUNCS: &[(&str, &str)] = &[
    ("publish", "func(string, outgoing) -> result<_, string>"),
    ("log", "func(level, string)"),
    ("now-ms", "func() -> u64"),
    ("edge", "func() -> edge-info"),
];

/// Longest rendering of one type; a larger type cannot match the world anyway, and
/// the cap keeps a hostile type graph (deeply shared tuples) from blowing up.
const RENDER_BUDGET: usize = 4096;

/// Where the host finds a checked component's exports, without name lookups per call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Exports {
    pub(crate) handle: ComponentExportIndex,
    pub(crate) handle_batch: Option<ComponentExportIndex>,
}

/// Refuses bytes that are not a component before compiling anything.
pub(crate) fn header(bytes: &[u8]) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    // A core module is version 1 layer 0; a component is version 0x0d layer 1.
    const CORE: &[u8] = &[1, 0, 0, 0];
    match (bytes.get(..4), bytes.get(4..8)) {
        (Some(MAGIC), Some(CORE)) => Err(LoadError::CoreModule),
        (Some(MAGIC), _) => Ok(()),
        _ => Err(LoadError::NotWasm),
    }
}

/// Checks `component` against the world; answers where its exports are.
pub(crate) fn check(engine: &Engine, component: &Component) -> Result<Exports, LoadError> {
    let ty = component.component_type();

    // Version first: a component for another version fails every other check too,
    // and the version is what its author needs to hear.
    let names = ty
        .exports(engine)
        .map(|(name, _)| name)
        .chain(ty.imports(engine).map(|(name, _)| name));
    for name in names {
        if let Some(rest) = name.strip_prefix(PACKAGE) {
            let found = match rest.split_once('@') {
                Some((_, version)) if version == crate::WORLD_VERSION => continue,
                Some((_, version)) => version.to_string(),
                None => "(no version)".to_string(),
            };
            return Err(LoadError::WrongVersion { found });
        }
    }

    let handler = ty
        .get_export(engine, HANDLER)
        .ok_or_else(|| LoadError::MissingExport {
            exports: list_or_nothing(ty.exports(engine).map(|(name, _)| name.to_string())),
        })?;
    check_func(engine, HANDLER, &handler.ty, "handle", HANDLE)?;
    let has_batch = match ty.get_export(engine, BATCH_HANDLER) {
        Some(batch) => {
            check_func(
                engine,
                BATCH_HANDLER,
                &batch.ty,
                "handle-batch",
                HANDLE_BATCH,
            )?;
            true
        }
        None => false,
    };

    check_imports(engine, &ty)?;

    let missing =
        |what: &str| LoadError::Invalid(format!("export {what} not found after type check"));
    let handler_index = component
        .get_export_index(None, HANDLER)
        .ok_or_else(|| missing(HANDLER))?;
    let handle = component
        .get_export_index(Some(&handler_index), "handle")
        .ok_or_else(|| missing("handle"))?;
    let handle_batch = if has_batch {
        let batch_index = component
            .get_export_index(None, BATCH_HANDLER)
            .ok_or_else(|| missing(BATCH_HANDLER))?;
        Some(
            component
                .get_export_index(Some(&batch_index), "handle-batch")
                .ok_or_else(|| missing("handle-batch"))?,
        )
    } else {
        None
    };
    Ok(Exports {
        handle,
        handle_batch,
    })
}

/// Checks that the exported instance `interface` has function `func` typed `expected`.
fn check_func(
    engine: &Engine,
    interface: &str,
    item: &ComponentItem,
    func: &str,
    expected: &str,
) -> Result<(), LoadError> {
    let name = format!("{interface}#{func}");
    let ComponentItem::ComponentInstance(instance) = item else {
        return Err(LoadError::Signature {
            name: interface.to_string(),
            found: item_kind(item).to_string(),
            expected: "an instance".to_string(),
        });
    };
    match instance.get_export(engine, func).map(|e| e.ty) {
        Some(ComponentItem::ComponentFunc(f)) => {
            let found = render_func(&f);
            if found == expected {
                Ok(())
            } else {
                Err(LoadError::Signature {
                    name,
                    found,
                    expected: expected.to_string(),
                })
            }
        }
        Some(other) => Err(LoadError::Signature {
            name,
            found: item_kind(&other).to_string(),
            expected: expected.to_string(),
        }),
        None => Err(LoadError::Signature {
            name,
            found: "nothing (the function is missing)".to_string(),
            expected: expected.to_string(),
        }),
    }
}

/// Imports: only `host` (any subset of its functions, each with the world's type) and
/// `types` (its types, resources and resource getters, each with the world's type).
fn check_imports(
    engine: &Engine,
    ty: &wasmtime::component::types::Component,
) -> Result<(), LoadError> {
    let mut forbidden = Vec::new();
    for (name, import) in ty.imports(engine) {
        match (name, &import.ty) {
            (TYPES, ComponentItem::ComponentInstance(types)) => {
                for (export, item) in types.exports(engine) {
                    match (&item.ty, getter_signature(export)) {
                        (ComponentItem::Type(_) | ComponentItem::Resource(_), _) => {}
                        (ComponentItem::ComponentFunc(_), Some(expected)) => {
                            check_func(engine, TYPES, &import.ty, export, &expected)?;
                        }
                        _ => forbidden.push(format!("{TYPES}#{export}")),
                    }
                }
            }
            (HOST, ComponentItem::ComponentInstance(host)) => {
                for (export, item) in host.exports(engine) {
                    let Some((_, expected)) = HOST_FUNCS.iter().find(|(f, _)| *f == export) else {
                        if !matches!(item.ty, ComponentItem::Type(_)) {
                            forbidden.push(format!("{HOST}#{export}"));
                        }
                        continue;
                    };
                    check_func(engine, HOST, &import.ty, export, expected)?;
                }
            }
            _ => forbidden.push(name.to_string()),
        }
    }
    if forbidden.is_empty() {
        Ok(())
    } else {
        Err(LoadError::ForbiddenImports(forbidden))
    }
}

fn list_or_nothing(names: impl Iterator<Item = String>) -> String {
    let list: Vec<String> = names.collect();
    if list.is_empty() {
        "nothing".to_string()
    } else {
        list.join(", ")
    }
}

fn item_kind(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) => "a function",
        ComponentItem::CoreFunc(_) => "a core function",
        ComponentItem::Module(_) => "a core module",
        ComponentItem::Component(_) => "a component",
        ComponentItem::ComponentInstance(_) => "an instance",
        ComponentItem::Type(_) => "a type",
        ComponentItem::Resource(_) => "a resource",
    }
}

/// `func(a, b) -> r`, parameters unnamed (names do not matter for calls).
fn render_func(func: &ComponentFunc) -> String {
    let mut renderer = Renderer {
        budget: RENDER_BUDGET,
    };
    let params: Option<Vec<String>> = func.params().map(|(_, t)| renderer.render(&t)).collect();
    let results: Option<Vec<String>> = func.results().map(|t| renderer.render(&t)).collect();
    let (Some(params), Some(results)) = (params, results) else {
        return "a type too large to show".to_string();
    };
    let mut text = format!("func({})", params.join(", "));
    if !results.is_empty() {
        let _ = write!(text, " -> {}", results.join(", "));
    }
    if func.async_() {
        text.insert_str(0, "async ");
    }
    text
}

/// Renders types as WIT-like text within a budget of characters (`None` past it).
struct Renderer {
    budget: usize,
}

impl Renderer {
    fn render(&mut self, ty: &Type) -> Option<String> {
        let text = match ty {
            Type::Bool => "bool".to_string(),
            Type::S8 => "s8".to_string(),
            Type::U8 => "u8".to_string(),
            Type::S16 => "s16".to_string(),
            Type::U16 => "u16".to_string(),
            Type::S32 => "s32".to_string(),
            Type::U32 => "u32".to_string(),
            Type::S64 => "s64".to_string(),
            Type::U64 => "u64".to_string(),
            Type::Float32 => "f32".to_string(),
            Type::Float64 => "f64".to_string(),
            Type::Char => "char".to_string(),
            Type::String => "string".to_string(),
            Type::List(list) => format!("list<{}>", self.render(&list.ty())?),
            Type::Map(map) => format!(
                "map<{}, {}>",
                self.render(&map.key())?,
                self.render(&map.value())?
            ),
            Type::FixedLengthList(list) => {
                format!("list<{}, {}>", self.render(&list.ty())?, list.len())
            }
            Type::Record(record) => {
                let fields: Option<Vec<String>> = record
                    .fields()
                    .map(|f| Some(format!("{}: {}", f.name, self.render(&f.ty)?)))
                    .collect();
                format!("record {{ {} }}", fields?.join(", "))
            }
            Type::Tuple(tuple) => {
                let types: Option<Vec<String>> = tuple.types().map(|t| self.render(&t)).collect();
                format!("tuple<{}>", types?.join(", "))
            }
            Type::Variant(variant) => {
                let cases: Option<Vec<String>> = variant
                    .cases()
                    .map(|c| match &c.ty {
                        Some(t) => Some(format!("{}({})", c.name, self.render(t)?)),
                        None => Some(c.name.to_string()),
                    })
                    .collect();
                format!("variant {{ {} }}", cases?.join(", "))
            }
            Type::Enum(e) => format!("enum {{ {} }}", e.names().collect::<Vec<_>>().join(", ")),
            Type::Flags(f) => format!("flags {{ {} }}", f.names().collect::<Vec<_>>().join(", ")),
            Type::Option(option) => format!("option<{}>", self.render(&option.ty())?),
            Type::Result(result) => {
                let ok = match result.ok() {
                    Some(t) => self.render(&t)?,
                    None => "_".to_string(),
                };
                match result.err() {
                    Some(t) => format!("result<{ok}, {}>", self.render(&t)?),
                    None => format!("result<{ok}>"),
                }
            }
            Type::Own(_) => "own<resource>".to_string(),
            Type::Borrow(_) => "borrow<resource>".to_string(),
            Type::Future(_) => "future".to_string(),
            Type::Stream(_) => "stream".to_string(),
            Type::ErrorContext => "error-context".to_string(),
        };
        self.budget = self.budget.checked_sub(text.len())?;
        Some(
            NAMED
                .iter()
                .find(|(shape, _)| *shape == text)
                .map_or(text, |(_, name)| name.to_string()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_tells_core_modules_components_and_junk_apart() {
        assert!(matches!(
            header(b"\0asm\x01\0\0\0"),
            Err(LoadError::CoreModule)
        ));
        assert!(header(b"\0asm\x0d\0\x01\0").is_ok());
        assert!(matches!(header(b"hello world"), Err(LoadError::NotWasm)));
        assert!(matches!(header(b""), Err(LoadError::NotWasm)));
    }
}
