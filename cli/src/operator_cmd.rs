//! `panoptes operator`: make signing keys, sign operator modules and check signatures (the
//! counterpart of an operator stage's `signed_by` in a topology), reload a running operator
//! stage's module, and promote a stage's shadow candidate to live.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use panoptes_contracts::Subjects;

use crate::control_args::ControlArgs;
use crate::nats_args::NatsArgs;
use panoptes_client::control::auth::Signer;
use panoptes_client::control::{ReloadReply, ReloadRequest};
use panoptes_client::keys::{self, SecretKey};

// `Reload` and `Promote` carry the NATS flags; the enum is parsed once per process, so its size
// is moot.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum OperatorCommand {
    /// Generate an ed25519 key pair: the secret key at PATH (mode 0600) and the public key at
    /// PATH.pub (what a topology's `signed_by` names). Refuses to overwrite either.
    Keygen {
        #[arg(long, env = "PANOPTES_KEYGEN_OUT")]
        out: PathBuf,
    },
    /// Build a Python operator (a .py file defining one `panoptes_operator.Operator`
    /// subclass) or a JavaScript one (a .js module whose default export is a class extending
    /// `Operator`) into a Wasm component, through componentize-py or componentize-js. Sign
    /// it and name it in a topology like any operator.
    Build {
        /// The operator's .py or .js file.
        source: PathBuf,
        /// The component to write (default: SOURCE with a .wasm extension).
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// More directories a Python operator imports modules from (repeatable).
        #[arg(long = "path", value_name = "DIR")]
        paths: Vec<PathBuf>,
    },
    /// Sign an operator module, writing MODULE.wasm.sig next to it.
    Sign {
        /// Secret key file from `panoptes operator keygen`.
        #[arg(long, env = "PANOPTES_SIGNING_KEY")]
        key: PathBuf,
        #[arg(env = "PANOPTES_OPERATOR_MODULE")]
        module: PathBuf,
    },
    /// Check MODULE.wasm.sig against a public key (exit status 1 if it does not verify).
    Verify {
        #[arg(long, env = "PANOPTES_PUBLIC_KEY")]
        public_key: PathBuf,
        #[arg(env = "PANOPTES_OPERATOR_MODULE")]
        module: PathBuf,
    },
    /// Swap a running operator stage's module in every worker, without restarting them: the
    /// stage's file is re-read (or --wasm names a new one), checked like at start (signature,
    /// digest), compiled and initialised; frames switch over between two frames. Prints each
    /// worker's reply; exit status 1 if none answers or any refuses.
    Reload {
        /// The operator stage's ID.
        #[arg(long, env = "PANOPTES_STAGE")]
        stage: String,
        /// A new module file, as a path on the workers' machines (relative: to the workers'
        /// topology directory); it must lie beside the stage's module or in `control.allow_dirs`.
        #[arg(long, env = "PANOPTES_OPERATOR_MODULE")]
        wasm: Option<PathBuf>,
        #[command(flatten)]
        control: ControlArgs,
    },
    /// Make a stage's shadow candidate (its `shadow:` module, with the candidate's config and
    /// limits) live in every worker, through the same swap as `reload`: checked, compiled and
    /// initialised first, then frames switch over between two frames. The topology file is not
    /// changed: set the stage's `wasm` (and `config`) to the candidate's there, or a restarted
    /// worker runs the old module again.
    Promote {
        /// The operator stage's ID.
        #[arg(long, env = "PANOPTES_STAGE")]
        stage: String,
        #[command(flatten)]
        control: ControlArgs,
    },
}

/// How long `reload` and `promote` wait for the workers' replies unless `--wait-ms` says.
const WAIT_MS: u64 = 3000;

/// Runs one `operator` subcommand; a failed verification is an error like any other, so the
/// process exits with status 1 and the reason on stderr.
pub async fn run(command: OperatorCommand) -> anyhow::Result<()> {
    match command {
        OperatorCommand::Reload {
            stage,
            wasm,
            control,
        } => {
            let request = ReloadRequest {
                stage,
                wasm,
                promote: false,
            };
            send(&control, &request, "reload").await?;
        }
        OperatorCommand::Promote { stage, control } => {
            let request = ReloadRequest {
                stage,
                wasm: None,
                promote: true,
            };
            send(&control, &request, "promotion").await?;
        }
        OperatorCommand::Build { source, out, paths } => {
            let out = out.unwrap_or_else(|| source.with_extension("wasm"));
            crate::operator_build::build(&source, &out, &paths)?;
            let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            println!(
                "built {} ({:.1} MiB) from {}",
                out.display(),
                size as f64 / (1 << 20) as f64,
                source.display()
            );
        }
        OperatorCommand::Keygen { out } => {
            let public = keys::generate_key_files(&out)?;
            println!(
                "wrote secret key {} (keep it private) and public key {}",
                out.display(),
                public.display()
            );
        }
        OperatorCommand::Sign { key, module } => {
            let sig = SecretKey::read(&key)?.sign_file(&module)?;
            println!("signed {}: {}", module.display(), sig.display());
        }
        OperatorCommand::Verify { public_key, module } => {
            keys::verify_file(&module, &public_key)?;
            println!(
                "ok: {} is signed by {}",
                module.display(),
                public_key.display()
            );
        }
    }
    Ok(())
}

/// Sends `request` and prints each worker's reply; fails when none answers or any refuses
/// (`what`: the request, as the error names it).
async fn send(control: &ControlArgs, request: &ReloadRequest, what: &str) -> anyhow::Result<()> {
    let subjects = Subjects::new(control.namespace.clone());
    let wait = control.wait(WAIT_MS);
    let signer = control.signer()?;
    let replies = reload(
        &control.nats,
        signer.as_ref(),
        &subjects,
        request,
        wait,
        control.expect,
    )
    .await?;
    let mut refused = 0;
    for reply in &replies {
        println!("{}", serde_json::to_string(reply)?);
        refused += usize::from(!reply.ok);
    }
    anyhow::ensure!(
        !replies.is_empty(),
        "no worker answered on {} within {} ms",
        subjects.operator_reload(),
        wait.as_millis()
    );
    anyhow::ensure!(
        refused == 0,
        "{refused} of {} workers refused the {what}",
        replies.len()
    );
    Ok(())
}

/// Sends a reload request (signed by `signer`) and collects the workers' replies for up to
/// `wait` (or until `expect` replies arrived).
pub async fn reload(
    nats: &NatsArgs,
    signer: Option<&Signer>,
    subjects: &Subjects,
    request: &ReloadRequest,
    wait: Duration,
    expect: Option<usize>,
) -> anyhow::Result<Vec<ReloadReply>> {
    panoptes_client::control::collect_replies(
        &nats.connect().await?,
        signer,
        subjects.operator_reload(),
        serde_json::to_vec(request)?,
        wait,
        expect,
        "a worker",
    )
    .await
}
