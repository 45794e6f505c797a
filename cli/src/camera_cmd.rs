//! `panoptes camera`: add, remove and list the cameras of running ingest processes, and make
//! them reload their topology files, through the camera control subjects (see [`panoptes_ingest::cameras`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use panoptes_contracts::Subjects;
use panoptes_topology::{Diagnostics, SourceFile};

use crate::control_args::ControlArgs;
use crate::nats_args::NatsArgs;
use panoptes_client::control::auth::Signer;
use panoptes_client::control::cameras::{AddRequest, ControlReply, RemoveRequest};

/// How long `camera` commands wait for replies unless `--wait-ms` says (starting a camera may
/// take seconds).
const WAIT_MS: u64 = 10_000;

#[derive(Subcommand)]
pub enum CameraCommand {
    /// Start a camera in one running ingest process (`panoptes run` or `panoptes ingest`),
    /// given as a topology's `cameras:` entry in a YAML or JSON file (`-`: standard input).
    /// Relative file paths resolve against that process's topology directory.
    Add {
        file: PathBuf,
        #[command(flatten)]
        target: ControlArgs,
    },
    /// Stop a camera, in whichever ingest process runs it.
    Remove {
        id: String,
        #[command(flatten)]
        target: ControlArgs,
    },
    /// Print every ingest process's cameras, their state and counters (one JSON line each).
    List {
        #[command(flatten)]
        target: ControlArgs,
    },
    /// Make every ingest process re-read its topology file and start, restart or stop cameras
    /// to match it (as SIGHUP does).
    Reload {
        #[command(flatten)]
        target: ControlArgs,
    },
}

/// Runs one `camera` subcommand: prints each process's reply as a JSON line; fails if none
/// answers or any refuses.
pub async fn run(command: CameraCommand) -> anyhow::Result<()> {
    let (op, body, target, expect) = match command {
        CameraCommand::Add { file, target } => {
            let camera = read_camera(&file)?;
            let body = serde_json::to_vec(&AddRequest { camera })?;
            ("add", body, target, Some(1))
        }
        CameraCommand::Remove { id, target } => {
            let body = serde_json::to_vec(&RemoveRequest { camera: id })?;
            ("remove", body, target, Some(1))
        }
        CameraCommand::List { target } => {
            let expect = target.expect;
            ("list", b"{}".to_vec(), target, expect)
        }
        CameraCommand::Reload { target } => {
            let expect = target.expect;
            ("reload", b"{}".to_vec(), target, expect)
        }
    };
    let subjects = Subjects::new(target.namespace.clone());
    let wait = target.wait(WAIT_MS);
    let signer = target.signer()?;
    let replies = request(
        &target.nats,
        signer.as_ref(),
        &subjects,
        op,
        body,
        wait,
        expect,
    )
    .await?;
    let mut refused = 0;
    for reply in &replies {
        println!("{}", serde_json::to_string(reply)?);
        if let Some(error) = reply.error.as_deref().filter(|_| !reply.ok) {
            eprintln!("panoptes: {}: {error}", reply.process);
        }
        refused += usize::from(!reply.ok);
    }
    let subject = subjects.camera_control(op);
    anyhow::ensure!(
        !replies.is_empty(),
        "no ingest process answered on {subject} within {} ms{}",
        wait.as_millis(),
        if op == "remove" {
            " (no process runs that camera)"
        } else {
            " (is control enabled in the topology, and may this NATS user publish there?)"
        }
    );
    anyhow::ensure!(
        refused == 0,
        "{refused} of {} ingest processes refused the request",
        replies.len()
    );
    Ok(())
}

/// The camera in `file` (YAML or JSON) as JSON; the ingest process validates it.
fn read_camera(file: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    // One camera is a few lines; the same bound as a model manifest, from a file or a pipe.
    let max = panoptes_files::MANIFEST_MAX;
    let text = if file.as_os_str() == "-" {
        use std::io::Read as _;
        let text = std::io::read_to_string(std::io::stdin().take(max + 1))
            .context("cannot read the camera from stdin")?;
        anyhow::ensure!(
            text.len() as u64 <= max,
            "the camera on stdin is larger than the limit of {max} bytes"
        );
        text
    } else {
        panoptes_files::read_to_string_bounded(file, max)
            .map_err(|e| anyhow::anyhow!("cannot read camera file {e}"))?
    };
    match panoptes_topology::yaml::parse(&text, &panoptes_topology::process_env) {
        Ok((node, problems)) if problems.is_empty() => Ok(node.to_json()),
        Ok((_, problems)) => {
            let source = SourceFile::new(file.display().to_string(), text);
            anyhow::bail!(
                "{}",
                Diagnostics::new(source.into(), problems).render(false)
            )
        }
        Err(d) => {
            let source = SourceFile::new(file.display().to_string(), text);
            anyhow::bail!("{}", Diagnostics::single(source, *d).render(false))
        }
    }
}

/// Sends a camera control request (signed by `signer`) and collects replies for up to `wait`
/// (or until `expect` replies arrived).
pub async fn request(
    nats: &NatsArgs,
    signer: Option<&Signer>,
    subjects: &Subjects,
    op: &str,
    body: Vec<u8>,
    wait: Duration,
    expect: Option<usize>,
) -> anyhow::Result<Vec<ControlReply>> {
    panoptes_client::control::collect_replies(
        &nats.connect().await?,
        signer,
        subjects.camera_control(op),
        body,
        wait,
        expect,
        "an ingest process",
    )
    .await
}
