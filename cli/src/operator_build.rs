//! `panoptes operator build op.py|op.js`: a Python or JavaScript operator into a Wasm component
//! of the `panoptes:operator` world, through componentize-py (PyPI) or componentize-js (npm).
//! The WIT files and both SDKs are part of this binary, so a build needs only the tool and the
//! operator's own files.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail, ensure};

/// The versions `scripts/setup.sh` installs and the SDKs were written against.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
pub const COMPONENTIZE_JS_VERSION: &str = "0.23.0";

/// The largest operator source read to decide which world it is built for.
const OPERATOR_SOURCE_MAX_BYTES: u64 = 16 << 20;

/// The files a build writes beside the operator: the world, its `wasi:nn` dependency, the SDKs.
const FILES: &[(&str, &str)] = &[
    (
        "wit/operator.wit",
        include_str!("../../operators/wit/operator.wit"),
    ),
    (
        "wit/deps/wasi-nn/wasi-nn.wit",
        include_str!("../../operators/wit/deps/wasi-nn/wasi-nn.wit"),
    ),
    // The stateful world (0.2.0) with the 0.1.0 package it includes as a dependency.
    (
        "wit-stateful/operator.wit",
        include_str!("../../operators/wit-stateful/operator.wit"),
    ),
    (
        "wit-stateful/deps/panoptes-operator/operator.wit",
        include_str!("../../operators/wit/operator.wit"),
    ),
    (
        "wit-stateful/deps/wasi-nn/wasi-nn.wit",
        include_str!("../../operators/wit/deps/wasi-nn/wasi-nn.wit"),
    ),
    (
        "sdk/panoptes_operator/__init__.py",
        include_str!("../../operators/python/panoptes_operator/__init__.py"),
    ),
    (
        "sdk/panoptes_operator/_world.py",
        include_str!("../../operators/python/panoptes_operator/_world.py"),
    ),
    (
        "js/panoptes_operator.js",
        include_str!("../../operators/js/panoptes_operator.js"),
    ),
    (
        "js/bundle.mjs",
        include_str!("../../operators/js/bundle.mjs"),
    ),
];

/// The module componentize-py exports: the operator module's one `Operator` subclass, wrapped.
fn python_entry(module: &str) -> String {
    format!(
        "import panoptes_operator._world as _world\nimport {module} as _operator\n\n\
         WitWorld = _world.world_for(_operator)\n"
    )
}

/// Whether a Python operator keeps per-camera state: its class defines `snapshot` (the SDK's
/// `_world.py` then insists on `restore` and `forget` too), so it is built for the world
/// `stateful-operator@0.2.0`.
fn python_is_stateful(source: &str) -> bool {
    source
        .lines()
        .any(|line| line.trim_start().starts_with("def snapshot("))
}

/// A build tool: `$<env>`, the one `scripts/setup.sh` installs under `$PANOPTES_HOME`, or the
/// one on `PATH`.
fn tool(env: &str, installed: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("PANOPTES_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/panoptes")));
    if let Some(path) = home.map(|h| h.join(installed))
        && path.is_file()
    {
        return path;
    }
    PathBuf::from(name)
}

/// Runs a build step; a tool that is not there is named with how to install it.
fn run_tool(cmd: &mut Command, install: &str) -> anyhow::Result<std::process::ExitStatus> {
    let program = PathBuf::from(cmd.get_program());
    match cmd.status() {
        Ok(status) => Ok(status),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} is not installed: run scripts/setup.sh, or {install}",
            program.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot run {}", program.display())),
    }
}

/// A scratch directory holding the embedded files.
fn workdir() -> anyhow::Result<tempfile::TempDir> {
    let work = tempfile::tempdir().context("cannot make a build directory")?;
    for (name, text) in FILES {
        let path = work.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text)?;
    }
    Ok(work)
}

/// Moves the finished component over `out`, or removes what a failed build left.
fn finish(
    status: std::process::ExitStatus,
    tmp: &Path,
    out: &Path,
    what: &str,
) -> anyhow::Result<()> {
    if !status.success() {
        let _ = std::fs::remove_file(tmp);
        bail!("{what} failed ({status}); its messages are above");
    }
    std::fs::rename(tmp, out).with_context(|| format!("cannot write {}", out.display()))
}

/// Builds a Python (`.py`) or JavaScript (`.js`, `.mjs`) operator into `out`. The component
/// is written next to `out` and renamed over it, so a failed build leaves an older `out` as it
/// was. `paths`: more directories Python imports from.
pub fn build(source: &Path, out: &Path, paths: &[PathBuf]) -> anyhow::Result<()> {
    let meta =
        std::fs::metadata(source).with_context(|| format!("cannot read {}", source.display()))?;
    ensure!(
        meta.is_file(),
        "{} is not a file: name the operator's .py or .js file",
        source.display()
    );
    match source.extension().and_then(|e| e.to_str()) {
        Some("py") => build_python(source, out, paths),
        Some("js" | "mjs") => {
            ensure!(
                paths.is_empty(),
                "--path is for Python operators; a JavaScript operator is one module"
            );
            build_javascript(source, out)
        }
        _ => bail!(
            "{} is neither a .py nor a .js file (Rust operators build with cargo, see \
             docs/operators.md)",
            source.display()
        ),
    }
}

/// A `.py` file defining one `panoptes_operator.Operator` subclass, through componentize-py,
/// with the operator's directory and `paths` on the import path.
pub fn build_python(source: &Path, out: &Path, paths: &[PathBuf]) -> anyhow::Result<()> {
    let module = source
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| {
            let mut chars = s.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
                && *s != "panoptes_entry"
                && *s != "panoptes_operator"
        })
        .with_context(|| {
            format!(
                "{} cannot be imported as a Python module: name it with letters, digits and `_`",
                source.display()
            )
        })?;
    let dir = source
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let work = workdir()?;
    std::fs::write(work.path().join("panoptes_entry.py"), python_entry(module))?;

    let componentize = tool(
        "PANOPTES_COMPONENTIZE_PY",
        "venv/bin/componentize-py",
        "componentize-py",
    );
    let text = panoptes_files::read_bounded(source, OPERATOR_SOURCE_MAX_BYTES)
        .with_context(|| format!("cannot read {}", source.display()))?;
    let (wit, world) = if python_is_stateful(&String::from_utf8_lossy(&text)) {
        ("wit-stateful", "stateful-operator")
    } else {
        ("wit", "operator")
    };
    let tmp = out.with_extension("wasm.partial");
    let mut cmd = Command::new(&componentize);
    cmd.arg("-d")
        .arg(work.path().join(wit))
        .args(["-w", world, "componentize"])
        .arg("-p")
        .arg(work.path().join("sdk"))
        .arg("-p")
        .arg(dir);
    for p in paths {
        cmd.arg("-p").arg(p);
    }
    cmd.arg("-p")
        .arg(work.path())
        .arg("panoptes_entry")
        .arg("-o")
        .arg(&tmp);
    let status = run_tool(
        &mut cmd,
        &format!("`pip install componentize-py=={COMPONENTIZE_PY_VERSION}`"),
    )?;
    finish(
        status,
        &tmp,
        out,
        &format!("componentize-py on {}", source.display()),
    )
}

/// A JavaScript module (`export default class <Name> extends Operator`): the SDK, the module
/// and an entry joined by `bundle.mjs` (node), then componentize-js without the HTTP
/// interfaces the host does not offer.
pub fn build_javascript(source: &Path, out: &Path) -> anyhow::Result<()> {
    let work = workdir()?;
    let js = work.path().join("js");
    let bundle = work.path().join("bundle.js");
    let node = tool("PANOPTES_NODE", "node/bin/node", "node");
    let status = run_tool(
        Command::new(&node)
            .arg(js.join("bundle.mjs"))
            .arg(js.join("panoptes_operator.js"))
            .arg(source)
            .arg(&bundle),
        "install Node.js (Debian's nodejs)",
    )?;
    ensure!(
        status.success(),
        "{} is not an operator module; the reason is above",
        source.display()
    );
    let componentize = tool(
        "PANOPTES_COMPONENTIZE_JS",
        "node/node_modules/.bin/componentize-js",
        "componentize-js",
    );
    let tmp = out.with_extension("wasm.partial");
    let status = run_tool(
        Command::new(&componentize)
            .arg(&bundle)
            .arg("--wit")
            .arg(work.path().join("wit"))
            .args(["-n", "operator", "-d", "http", "-d", "fetch-event", "-o"])
            .arg(&tmp),
        &format!("`npm install @bytecodealliance/componentize-js@{COMPONENTIZE_JS_VERSION}`"),
    )?;
    finish(
        status,
        &tmp,
        out,
        &format!("componentize-js on {}", source.display()),
    )
}
