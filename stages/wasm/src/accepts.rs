//! What an operator component declares it accepts: the frame pixel formats in its
//! `panoptes:accepts` custom section (written by the SDK's `export_operator!(Ty, accepts: [..])`),
//! read from the file's bytes without compiling or instantiating it, so `validate` can check a
//! topology's edges before anything runs.
//!
//! Encoding, version 1 (documented for authors in the SDK's crate docs): ASCII text `v1`, then,
//! for a non-empty list, one space and frame/v1 format names joined by commas, each at most once
//! (`v1 rgb8,jpeg`; `v1` alone: no frames). One such section per component, in any of its
//! core modules or nested components.

use std::path::Path;

use panoptes_contracts::PixelFormat;
use wasmparser::{Parser, Payload};

use crate::error::WasmError;
use crate::stage::read_module;

/// The custom section's name; the SDK writes the same one (`ACCEPTS_SECTION` there).
pub const ACCEPTS_SECTION: &str = "panoptes:accepts";

/// The one version of the encoding this build reads.
const VERSION: &str = "v1";

/// The most of a malformed section quoted in an error: enough to recognise it, never a page.
const QUOTE_MAX: usize = 40;

/// Why a component's declaration could not be read. The caller names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcceptsError {
    #[error("it is not a Wasm component or module: {0}")]
    NotWasm(String),

    #[error("it has more than one `{ACCEPTS_SECTION}` section")]
    Repeated,

    #[error("its `{ACCEPTS_SECTION}` section {0}")]
    Malformed(String),
}

/// The pixel formats the operator in `bytes` declares it accepts: `None` when it declares
/// nothing (give it the benefit of the doubt), `Some(vec![])` when it reads no frame, in the
/// declared order otherwise.
pub fn declared_accepts(bytes: &[u8]) -> Result<Option<Vec<PixelFormat>>, AcceptsError> {
    let mut found = None;
    // `parse_all` descends into nested core modules and components by itself.
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| AcceptsError::NotWasm(e.to_string()))?;
        if let Payload::CustomSection(section) = payload
            && section.name() == ACCEPTS_SECTION
        {
            if found.is_some() {
                return Err(AcceptsError::Repeated);
            }
            found = Some(parse(section.data())?);
        }
    }
    Ok(found)
}

/// [`declared_accepts`] of the operator file at `path`, read as modules are read for loading
/// (bounded, regular files only). Errors name the file.
pub fn read_accepts(path: &Path) -> Result<Option<Vec<PixelFormat>>, WasmError> {
    let bytes = read_module(path)?;
    declared_accepts(&bytes).map_err(|source| WasmError::Accepts {
        path: path.to_owned(),
        source,
    })
}

/// Parses one section's content (version 1).
fn parse(data: &[u8]) -> Result<Vec<PixelFormat>, AcceptsError> {
    let malformed = |what: &str| {
        let shown = String::from_utf8_lossy(&data[..data.len().min(QUOTE_MAX)]).into_owned();
        let more = if data.len() > QUOTE_MAX { "…" } else { "" };
        AcceptsError::Malformed(format!("{what} (it reads {shown:?}{more})"))
    };
    let text = std::str::from_utf8(data).map_err(|_| malformed("is not text"))?;
    let (version, list) = match text.split_once(' ') {
        Some((version, list)) => (version, Some(list)),
        None => (text, None),
    };
    if version != VERSION {
        return Err(malformed(&format!(
            "does not start with `{VERSION}`, the only version this build reads"
        )));
    }
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    let mut formats = Vec::new();
    for name in list.split(',') {
        let format = PixelFormat::parse(name).ok_or_else(|| {
            malformed(&format!(
                "names `{name}`, not one of the pixel formats rgb8, nv12, i420, jpeg"
            ))
        })?;
        if formats.contains(&format) {
            return Err(malformed(&format!("names `{name}` twice")));
        }
        formats.push(format);
    }
    Ok(formats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dist(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../operators/dist")
            .join(format!("{name}.wasm"))
    }

    fn built(name: &str) -> Option<Vec<PixelFormat>> {
        read_accepts(&dist(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn built_in_operators_declare_what_they_read() {
        use PixelFormat::*;
        assert_eq!(built("jpeg"), Some(vec![Rgb8, Jpeg]));
        for name in ["letterbox", "resize", "normalize", "crop"] {
            assert_eq!(built(name), Some(vec![Rgb8]), "{name}");
        }
        assert_eq!(built("colorconvert"), Some(vec![Nv12, I420]));
        assert_eq!(built("onnx"), Some(vec![]));
        assert_eq!(built("misbehave"), None);
    }

    /// A core module: the header, then one custom section per `(name, data)`.
    fn module(sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = b"\0asm\x01\0\0\0".to_vec();
        for (name, data) in sections {
            let mut body = vec![u8::try_from(name.len()).expect("short name")];
            body.extend_from_slice(name.as_bytes());
            body.extend_from_slice(data);
            out.push(0);
            // Both lengths stay under 128 here, so each LEB128 is one byte.
            out.push(u8::try_from(body.len()).expect("short section"));
            out.extend(body);
        }
        out
    }

    /// A component holding `inner` as its one core module.
    fn component(inner: &[u8]) -> Vec<u8> {
        let mut out = b"\0asm\x0d\0\x01\0".to_vec();
        out.push(1); // core module section
        out.push(u8::try_from(inner.len()).expect("short module"));
        out.extend_from_slice(inner);
        out
    }

    #[test]
    fn sections_are_found_in_modules_and_nested_modules() {
        let m = module(&[("other", b"x"), (ACCEPTS_SECTION, b"v1 i420,rgb8")]);
        let want = Some(vec![PixelFormat::I420, PixelFormat::Rgb8]);
        assert_eq!(declared_accepts(&m), Ok(want.clone()));
        assert_eq!(declared_accepts(&component(&m)), Ok(want));
        assert_eq!(
            declared_accepts(&component(&module(&[(ACCEPTS_SECTION, b"v1")]))),
            Ok(Some(vec![]))
        );
        assert_eq!(declared_accepts(&component(&module(&[]))), Ok(None));
    }

    #[test]
    fn malformed_sections_are_errors() {
        for (data, says) in [
            (&b"v2 rgb8"[..], "does not start with `v1`"),
            (b"rgb8", "does not start with `v1`"),
            (b"v1 ", "names ``"),
            (b"v1 rgb8,", "names ``"),
            (b"v1 rgb8, jpeg", "names ` jpeg`"),
            (b"v1 RGB8", "names `RGB8`"),
            (b"v1 rgb8,rgb8", "names `rgb8` twice"),
            (b"v1 \xff", "is not text"),
        ] {
            let e = declared_accepts(&component(&module(&[(ACCEPTS_SECTION, data)])))
                .expect_err("malformed");
            let text = e.to_string();
            assert!(
                matches!(e, AcceptsError::Malformed(_)) && text.contains(says),
                "{data:?}: {text}"
            );
        }
        let twice = module(&[(ACCEPTS_SECTION, b"v1"), (ACCEPTS_SECTION, b"v1")]);
        assert_eq!(declared_accepts(&twice), Err(AcceptsError::Repeated));
        assert!(matches!(
            declared_accepts(b"not wasm"),
            Err(AcceptsError::NotWasm(_))
        ));
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.wasm");
        std::fs::write(&path, module(&[(ACCEPTS_SECTION, b"v1 png")])).expect("write");
        let e = read_accepts(&path).expect_err("malformed").to_string();
        assert!(e.contains("bad.wasm") && e.contains("names `png`"), "{e}");
        let missing = read_accepts(&dir.path().join("gone.wasm")).expect_err("missing");
        assert!(matches!(missing, WasmError::Io { .. }), "{missing}");
    }
}
