//! `panoptes operator`: make signing keys, sign operator modules and check signatures, the
//! counterpart of an operator stage's `signed_by` in a topology.

use std::path::PathBuf;

use clap::Subcommand;
use panoptes_wasm::signature::{self, SecretKey};

#[derive(Subcommand)]
pub enum OperatorCommand {
    /// Generate an ed25519 key pair: the secret key at PATH (mode 0600) and the public key at
    /// PATH.pub (what a topology's `signed_by` names). Refuses to overwrite either.
    Keygen {
        #[arg(long, env = "PANOPTES_KEYGEN_OUT")]
        out: PathBuf,
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
}

/// Runs one `operator` subcommand; a failed verification is an error like any other, so the
/// process exits with status 1 and the reason on stderr.
pub fn run(command: OperatorCommand) -> anyhow::Result<()> {
    match command {
        OperatorCommand::Keygen { out } => {
            let public = signature::generate_key_files(&out)?;
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
            signature::verify_file(&module, &public_key)?;
            println!(
                "ok: {} is signed by {}",
                module.display(),
                public_key.display()
            );
        }
    }
    Ok(())
}
