//! ed25519 signatures of operator modules, so a topology can require that the `.wasm` a worker
//! runs is the one a key holder signed (`signed_by` in the topology).
//!
//! What is signed is `b"panoptes-operator-v1\0" || sha256(module bytes)`: the prefix keeps these
//! signatures from being valid for anything else the same key might sign. Keys and signatures are
//! one-line text files:
//!
//! - public key: `ed25519-public:<base64 of 32 bytes>`
//! - secret key: `ed25519-secret:<base64 of the 32-byte seed>` (written with mode 0600)
//! - signature, next to the module as `<module>.sig`: `ed25519-signature:<base64 of 64 bytes>`

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

/// Prefix of every signed message; bump the version if what is signed ever changes.
const DOMAIN: &[u8] = b"panoptes-operator-v1\0";
const PUBLIC_TAG: &str = "ed25519-public:";
const SECRET_TAG: &str = "ed25519-secret:";
const SIGNATURE_TAG: &str = "ed25519-signature:";

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("cannot generate a key: the system random source failed: {0}")]
    Random(String),

    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{} already exists; refusing to overwrite it", path.display())]
    Exists { path: PathBuf },

    #[error("operator {} is not signed: {} does not exist", module.display(), signature.display())]
    NotSigned { module: PathBuf, signature: PathBuf },

    #[error("{} is not a valid {what} file: {reason}", path.display())]
    Malformed {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },

    #[error(
        "signature of {} does not verify against {}: the module was changed after signing or signed with another key",
        module.display(),
        key.display()
    )]
    Mismatch { module: PathBuf, key: PathBuf },
}

/// A signing key (the secret half).
pub struct SecretKey(SigningKey);

/// A verification key (the public half), what `signed_by` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

/// Where the signature of `module` lives: the module's file name with `.sig` appended.
pub fn signature_path(module: &Path) -> PathBuf {
    let mut name = module.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// What is signed for a module: the domain prefix followed by the module's sha256.
fn message(module_bytes: &[u8]) -> Vec<u8> {
    let digest = Sha256::digest(module_bytes);
    let mut m = Vec::with_capacity(DOMAIN.len() + digest.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(&digest);
    m
}

/// A `SignatureError::Read` from a bounded read: the reason without the path (the variant's
/// message names it), kind `NotFound` kept so a missing signature still reads as "not signed".
fn read_error(e: panoptes_files::FileError) -> SignatureError {
    let kind = match e {
        panoptes_files::FileError::NotFound { .. } => std::io::ErrorKind::NotFound,
        _ => std::io::ErrorKind::InvalidInput,
    };
    SignatureError::Read {
        path: e.path().to_owned(),
        source: std::io::Error::new(kind, e.reason()),
    }
}

/// A key or signature file: one short line, read bounded and without blocking.
fn read_text(path: &Path) -> Result<String, SignatureError> {
    panoptes_files::read_to_string_bounded(path, panoptes_files::KEY_MAX).map_err(read_error)
}

/// A module, read bounded and without blocking (a FIFO or `/dev/zero` is refused, not read).
fn read_module(path: &Path) -> Result<Vec<u8>, SignatureError> {
    panoptes_files::read_bounded(path, panoptes_files::MODULE_MAX).map_err(read_error)
}

/// Decodes the one line `<tag><base64 of N bytes>` of `text`.
fn decode_line<const N: usize>(
    path: &Path,
    what: &'static str,
    tag: &str,
    text: &str,
) -> Result<[u8; N], SignatureError> {
    let malformed = |reason: String| SignatureError::Malformed {
        path: path.to_owned(),
        what,
        reason,
    };
    let line = text.trim_end_matches(['\n', '\r']);
    if line.contains('\n') {
        return Err(malformed("expected exactly one line".into()));
    }
    let Some(encoded) = line.strip_prefix(tag) else {
        return Err(malformed(format!("expected a line `{tag}<base64>`")));
    };
    let bytes = BASE64
        .decode(encoded.trim())
        .map_err(|e| malformed(format!("bad base64 after `{tag}`: {e}")))?;
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| malformed(format!("expected {N} bytes after `{tag}`, found {len}")))
}

/// Creates `path` with `text`, failing if it exists; `secret` files are readable by the owner only.
fn write_new(path: &Path, text: &str, secret: bool) -> Result<(), SignatureError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            SignatureError::Exists {
                path: path.to_owned(),
            }
        } else {
            SignatureError::Write {
                path: path.to_owned(),
                source,
            }
        }
    })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| SignatureError::Write {
            path: path.to_owned(),
            source,
        })
}

impl SecretKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<Self, SignatureError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| SignatureError::Random(e.to_string()))?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub fn read(path: &Path) -> Result<Self, SignatureError> {
        let seed = decode_line::<32>(path, "secret key", SECRET_TAG, &read_text(path)?)?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// Writes the key to a new file with mode 0600; an existing file is never overwritten.
    pub fn write_new(&self, path: &Path) -> Result<(), SignatureError> {
        let text = format!("{SECRET_TAG}{}\n", BASE64.encode(self.0.to_bytes()));
        write_new(path, &text, true)
    }

    /// Signs the module at `module`, writing [`signature_path`] (replacing an older signature).
    /// Returns where the signature went.
    pub fn sign_file(&self, module: &Path) -> Result<PathBuf, SignatureError> {
        let bytes = read_module(module)?;
        let signature = self.sign(&bytes);
        let sig_path = signature_path(module);
        let text = format!("{SIGNATURE_TAG}{}\n", BASE64.encode(signature.to_bytes()));
        std::fs::write(&sig_path, text).map_err(|source| SignatureError::Write {
            path: sig_path.clone(),
            source,
        })?;
        Ok(sig_path)
    }

    fn sign(&self, module_bytes: &[u8]) -> Signature {
        use ed25519_dalek::Signer as _;
        self.0.sign(&message(module_bytes))
    }
}

impl PublicKey {
    pub fn read(path: &Path) -> Result<Self, SignatureError> {
        let bytes = decode_line::<32>(path, "public key", PUBLIC_TAG, &read_text(path)?)?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|e| SignatureError::Malformed {
                path: path.to_owned(),
                what: "public key",
                reason: format!("not an ed25519 public key: {e}"),
            })
    }

    /// Writes the key to a new file; an existing file is never overwritten.
    pub fn write_new(&self, path: &Path) -> Result<(), SignatureError> {
        let text = format!("{PUBLIC_TAG}{}\n", BASE64.encode(self.0.to_bytes()));
        write_new(path, &text, false)
    }
}

/// Generates a key pair: the secret key at `secret` (mode 0600) and the public key at
/// `<secret>.pub`. Refuses if either file exists. Returns the public key's path.
pub fn generate_key_files(secret: &Path) -> Result<PathBuf, SignatureError> {
    let mut public = secret.as_os_str().to_owned();
    public.push(".pub");
    let public = PathBuf::from(public);
    // Checked up front so a half-written pair is not left behind when only the second exists.
    for path in [secret, public.as_path()] {
        if path.exists() {
            return Err(SignatureError::Exists {
                path: path.to_owned(),
            });
        }
    }
    let key = SecretKey::generate()?;
    key.write_new(secret)?;
    key.public_key().write_new(&public)?;
    Ok(public)
}

/// Reads the module at `module` and checks `<module>.sig` against the public key file
/// `public_key`. Returns the bytes that were verified, so the caller can compile exactly those
/// rather than reading the file again (which could have been swapped in between).
pub fn verify_file(module: &Path, public_key: &Path) -> Result<Vec<u8>, SignatureError> {
    let key = PublicKey::read(public_key)?;
    let sig_path = signature_path(module);
    let sig_text = match read_text(&sig_path) {
        Ok(text) => text,
        Err(SignatureError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Err(SignatureError::NotSigned {
                module: module.to_owned(),
                signature: sig_path,
            });
        }
        Err(e) => return Err(e),
    };
    let signature = Signature::from_bytes(&decode_line::<64>(
        &sig_path,
        "signature",
        SIGNATURE_TAG,
        &sig_text,
    )?);
    let bytes = read_module(module)?;
    // Strict verification rejects the malleable and small-order encodings plain `verify` allows.
    key.0
        .verify_strict(&message(&bytes), &signature)
        .map_err(|_| SignatureError::Mismatch {
            module: module.to_owned(),
            key: public_key.to_owned(),
        })?;
    Ok(bytes)
}

/// Signatures over messages other than modules (control requests). The caller's `domain` is
/// prefixed like [`DOMAIN`] is for modules, so a signature made for one purpose never verifies
/// for another, even under the same key.
impl SecretKey {
    /// Signs `domain || message`; the signature as base64 (what travels in a header).
    pub fn sign_message(&self, domain: &[u8], message: &[u8]) -> String {
        use ed25519_dalek::Signer as _;
        let mut m = Vec::with_capacity(domain.len() + message.len());
        m.extend_from_slice(domain);
        m.extend_from_slice(message);
        BASE64.encode(self.0.sign(&m).to_bytes())
    }
}

impl PublicKey {
    /// Whether `signature` (base64, as [`SecretKey::sign_message`] makes it) signs
    /// `domain || message` under this key. Malformed signatures simply do not verify.
    pub fn verify_message(&self, domain: &[u8], message: &[u8], signature: &str) -> bool {
        let Ok(bytes) = BASE64.decode(signature.trim()) else {
            return false;
        };
        let Ok(bytes) = <[u8; 64]>::try_from(bytes.as_slice()) else {
            return false;
        };
        let mut m = Vec::with_capacity(domain.len() + message.len());
        m.extend_from_slice(domain);
        m.extend_from_slice(message);
        self.0
            .verify_strict(&m, &Signature::from_bytes(&bytes))
            .is_ok()
    }

    /// The key as base64 of its 32 bytes: how a request names the key that signed it.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_path_appends_to_the_whole_name() {
        assert_eq!(
            signature_path(Path::new("dir/letterbox.wasm")),
            PathBuf::from("dir/letterbox.wasm.sig")
        );
    }

    #[test]
    fn the_domain_prefix_is_part_of_what_is_signed() {
        let key = SecretKey::generate().expect("key");
        let module = b"not really wasm";
        let sig = key.sign(module);
        // A signature over the bare digest (no prefix) must not pass as an operator signature.
        use ed25519_dalek::Signer as _;
        let bare = key.0.sign(&Sha256::digest(module));
        let public = key.public_key();
        assert!(public.0.verify_strict(&message(module), &sig).is_ok());
        assert!(public.0.verify_strict(&message(module), &bare).is_err());
    }

    #[test]
    fn key_files_round_trip_and_reject_trailing_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("k");
        let public = generate_key_files(&secret).expect("keygen");
        let sk = SecretKey::read(&secret).expect("read secret");
        assert_eq!(
            PublicKey::read(&public).expect("read public"),
            sk.public_key()
        );
        let text = std::fs::read_to_string(&public).expect("read");
        std::fs::write(&public, format!("{text}extra\n")).expect("write");
        let err = PublicKey::read(&public).expect_err("two lines");
        assert!(err.to_string().contains("exactly one line"), "{err}");
    }
}
