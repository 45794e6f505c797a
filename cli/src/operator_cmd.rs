//! `panoptes operator`: make signing keys, sign operator modules and check signatures (the
//! counterpart of an operator stage's `signed_by` in a topology), and reload a running
//! operator stage's module.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use panoptes_contracts::Subjects;

use crate::nats_args::NatsArgs;
use panoptes_client::control::auth::Signer;
use panoptes_client::control::{ReloadReply, ReloadRequest};
use panoptes_client::keys::{self, SecretKey};

// `Reload` carries the NATS flags; the enum is parsed once per process, so its size is moot.
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
        nats: NatsArgs,
        /// Secret key that signs the request (`panoptes operator keygen`); its public half must
        /// be in the topology's `control.keys`.
        #[arg(long, env = "PANOPTES_CONTROL_KEY", value_name = "FILE")]
        key: Option<PathBuf>,
        #[arg(long, env = "PANOPTES_NAMESPACE", default_value = Subjects::DEFAULT_NAMESPACE)]
        namespace: String,
        /// How long to collect replies, in milliseconds.
        #[arg(long, env = "PANOPTES_WAIT_MS", default_value_t = 3000)]
        wait_ms: u64,
        /// Stop as soon as this many workers answered.
        #[arg(long, env = "PANOPTES_EXPECT")]
        expect: Option<usize>,
    },
}

/// Runs one `operator` subcommand; a failed verification is an error like any other, so the
/// process exits with status 1 and the reason on stderr.
pub async fn run(command: OperatorCommand) -> anyhow::Result<()> {
    match command {
        OperatorCommand::Reload {
            stage,
            wasm,
            nats,
            key,
            namespace,
            wait_ms,
            expect,
        } => {
            let request = ReloadRequest { stage, wasm };
            let subjects = Subjects::new(namespace);
            let wait = Duration::from_millis(wait_ms);
            let signer = key.as_deref().map(Signer::read).transpose()?;
            let replies = reload(&nats, signer.as_ref(), &subjects, &request, wait, expect).await?;
            let mut refused = 0;
            for reply in &replies {
                println!("{}", serde_json::to_string(reply)?);
                refused += usize::from(!reply.ok);
            }
            anyhow::ensure!(
                !replies.is_empty(),
                "no worker answered on {} within {wait_ms} ms",
                subjects.operator_reload()
            );
            anyhow::ensure!(
                refused == 0,
                "{refused} of {} workers refused the reload",
                replies.len()
            );
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
