//! `panoptes graph`: draws a topology (cameras → frames subjects → stages → result subjects) as
//! Graphviz DOT or a Mermaid flowchart on stdout.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;

use anyhow::Context as _;
use panoptes_topology::{TopologyFile, graph};

#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// The topology to draw.
    #[arg(env = "PANOPTES_TOPOLOGY")]
    pub topology: PathBuf,
    /// `dot` for Graphviz (`panoptes graph t.yaml | dot -Tsvg > t.svg`), `mermaid` for Markdown,
    /// `json` for programs (the drawing as data: groups of nodes, then edges).
    #[arg(long, env = "PANOPTES_GRAPH_FORMAT", default_value = "dot")]
    pub format: GraphFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
    Json,
}

impl From<GraphFormat> for graph::Format {
    fn from(f: GraphFormat) -> Self {
        match f {
            GraphFormat::Dot => graph::Format::Dot,
            GraphFormat::Mermaid => graph::Format::Mermaid,
            GraphFormat::Json => graph::Format::Json,
        }
    }
}

/// The diagram of the topology at `args.topology`; `Err` holds its diagnostics rendered for
/// stderr (`color`: with ANSI styles).
pub fn draw(args: &GraphArgs, color: bool) -> Result<String, String> {
    let topology = TopologyFile::load(&args.topology).map_err(|d| d.render(color))?;
    Ok(graph::render(&topology, args.format.into()))
}

/// Prints the diagram. A topology that does not load is reported as diagnostics on stderr and
/// the process exits with status 1.
pub fn run(args: &GraphArgs) -> anyhow::Result<()> {
    let text = match draw(args, std::io::stderr().is_terminal()) {
        Ok(text) => text,
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // `panoptes graph t.yaml | head` closing the pipe early is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write the graph to stdout")
        }
        _ => Ok(()),
    }
}
