//! Reading what a component imports and exports, without compiling it.
use wasmparser::{Parser, Payload};

/// Top-level import and export names of a component, in file order
/// (`wasi:cli/run@0.2.0`, ...).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct World {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

/// Reads the top-level imports and exports of a binary component. Nested
/// modules and components are skipped.
pub fn component_world(wasm: &[u8]) -> Result<World, wasmparser::BinaryReaderError> {
    let mut world = World::default();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload? {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(r) if depth == 1 => {
                for i in r {
                    world.imports.push(i?.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(r) if depth == 1 => {
                for e in r {
                    world.exports.push(e?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(world)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_top_level_names_only() {
        let wasm = wat::parse_str(
            r#"(component
                (import "wasi:cli/stdout@0.2.0" (instance))
                (component $inner (import "nested-import" (instance)))
                (core module $m (func (export "f")))
                (core instance $i (instantiate $m))
                (func $f (canon lift (core func $i "f")))
                (export "run" (func $f)))"#,
        )
        .unwrap();
        let w = component_world(&wasm).unwrap();
        assert_eq!(w.imports, vec!["wasi:cli/stdout@0.2.0"]);
        assert_eq!(w.exports, vec!["run"]);
    }
}
