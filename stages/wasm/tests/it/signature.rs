//! Signing and verifying a real operator component on disk: what passes, and how each way of
//! failing is reported.
//!
//! Needs `operators/dist/letterbox.wasm`: run `scripts/setup.sh` first.

use std::path::{Path, PathBuf};

use panoptes_client::keys::{self, SecretKey, SignatureError};
use panoptes_wasm::{EngineOptions, OperatorEngine};

/// A copy of the letterbox operator in a fresh directory, so tests can tamper with it.
fn module_copy() -> (tempfile::TempDir, PathBuf) {
    let original =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../operators/dist/letterbox.wasm");
    assert!(
        original.is_file(),
        "{} is missing: run scripts/setup.sh",
        original.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let module = dir.path().join("letterbox.wasm");
    std::fs::copy(&original, &module).expect("copy letterbox.wasm");
    (dir, module)
}

/// A key pair in `dir` named `name`: (secret key file, public key file).
fn keys(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let secret = dir.join(name);
    let public = keys::generate_key_files(&secret).expect("keygen");
    (secret, public)
}

fn sign(secret: &Path, module: &Path) -> PathBuf {
    SecretKey::read(secret)
        .expect("read secret key")
        .sign_file(module)
        .expect("sign")
}

#[test]
fn signed_module_verifies_and_the_verified_bytes_load() {
    let (dir, module) = module_copy();
    let (secret, public) = keys(dir.path(), "op-key");
    let sig = sign(&secret, &module);
    assert_eq!(sig, dir.path().join("letterbox.wasm.sig"));
    let text = std::fs::read_to_string(&sig).expect("read .sig");
    assert!(text.starts_with("ed25519-signature:"), "{text}");

    let bytes = keys::verify_file(&module, &public).expect("verify");
    assert_eq!(bytes, std::fs::read(&module).expect("read module"));
    let engine = OperatorEngine::new(EngineOptions {
        max_instances: 2,
        ..EngineOptions::default()
    })
    .expect("engine");
    engine
        .load_bytes(&module, &bytes)
        .expect("the verified bytes compile");
}

#[cfg(unix)]
#[test]
fn keygen_writes_a_private_secret_and_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let (secret, public) = keys(dir.path(), "k");
    assert_eq!(public, dir.path().join("k.pub"));
    let mode = std::fs::metadata(&secret)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "secret key mode {mode:o}");
    assert!(
        std::fs::read_to_string(&public)
            .expect("read pub")
            .starts_with("ed25519-public:")
    );
    let before = std::fs::read(&secret).expect("read secret");
    let err = keys::generate_key_files(&secret).expect_err("second keygen");
    assert!(matches!(err, SignatureError::Exists { .. }), "{err}");
    assert_eq!(std::fs::read(&secret).expect("read secret"), before);
}

#[test]
fn one_flipped_byte_is_refused_naming_the_module_and_key() {
    let (dir, module) = module_copy();
    let (secret, public) = keys(dir.path(), "op-key");
    sign(&secret, &module);
    let mut bytes = std::fs::read(&module).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&module, &bytes).expect("write");

    let err = keys::verify_file(&module, &public).expect_err("tampered module");
    assert!(matches!(err, SignatureError::Mismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&module.display().to_string()), "{msg}");
    assert!(msg.contains(&public.display().to_string()), "{msg}");
    assert!(msg.contains("changed after signing"), "{msg}");
}

#[test]
fn a_missing_signature_file_means_not_signed() {
    let (dir, module) = module_copy();
    let (secret, public) = keys(dir.path(), "op-key");
    let sig = sign(&secret, &module);
    std::fs::remove_file(&sig).expect("delete .sig");

    let err = keys::verify_file(&module, &public).expect_err("unsigned");
    assert_eq!(
        err.to_string(),
        format!(
            "operator {} is not signed: {} does not exist",
            module.display(),
            sig.display()
        )
    );
}

#[test]
fn another_key_does_not_verify() {
    let (dir, module) = module_copy();
    let (secret, _) = keys(dir.path(), "signer");
    let (_, other_public) = keys(dir.path(), "someone-else");
    sign(&secret, &module);

    let err = keys::verify_file(&module, &other_public).expect_err("wrong key");
    assert!(matches!(err, SignatureError::Mismatch { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&other_public.display().to_string())
    );
}

#[test]
fn malformed_signature_files_are_named_with_the_cause() {
    let (dir, module) = module_copy();
    let (secret, public) = keys(dir.path(), "op-key");
    let sig = sign(&secret, &module);

    let cases = [
        ("garbage\n", "expected a line `ed25519-signature:<base64>`"),
        ("ed25519-signature:!!!not base64!!!\n", "bad base64"),
        ("ed25519-signature:AAAA\n", "expected 64 bytes"),
    ];
    for (text, want) in cases {
        std::fs::write(&sig, text).expect("write .sig");
        let err = keys::verify_file(&module, &public).expect_err(text);
        assert!(matches!(err, SignatureError::Malformed { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("{} is not a valid signature file", sig.display())),
            "{msg}"
        );
        assert!(msg.contains(want), "{text:?}: {msg}");
    }
}
