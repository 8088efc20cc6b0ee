//! A component's top-level imports and exports, read with wasmparser: no
//! compilation. `outpost inspect` reads files nobody has verified, and only
//! verified modules may reach Cranelift (ARCHITECTURE.md, first invariant).

use wasmparser::{Encoding, Parser, Payload, Validator, WasmFeatures};

/// Names of a component's imports and exports, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interfaces {
    /// Top-level import names, e.g. `wasi:cli/environment@0.2.12`.
    pub imports: Vec<String>,
    /// Top-level export names, e.g. `outpost:agent/collect@0.3.0`.
    pub exports: Vec<String>,
}

/// Why a file's interfaces cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum InterfaceError {
    /// A core module or something else, not a component.
    #[error("not a WebAssembly component (a core module or another format)")]
    NotAComponent,
    /// The validator refused the bytes.
    #[error("not a valid component: {0}")]
    Invalid(String),
}

/// Validate `bytes` as a component and read its top-level imports and
/// exports (not those of components or modules nested in it).
pub fn read(bytes: &[u8]) -> Result<Interfaces, InterfaceError> {
    let invalid = |e: wasmparser::BinaryReaderError| InterfaceError::Invalid(e.to_string());
    Validator::new_with_features(WasmFeatures::default())
        .validate_all(bytes)
        .map_err(invalid)?;
    let mut out = Interfaces::default();
    // Depth of nesting: payloads of nested modules and components follow
    // their section and end with their own `End`.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(invalid)? {
            Payload::Version { encoding, .. } if depth == 0 && encoding != Encoding::Component => {
                return Err(InterfaceError::NotAComponent);
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(r) if depth == 0 => {
                for import in r {
                    out.imports
                        .push(import.map_err(invalid)?.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(r) if depth == 0 => {
                for export in r {
                    out.exports
                        .push(export.map_err(invalid)?.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok(out)
}
