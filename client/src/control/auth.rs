//! Who may change a running deployment: control requests are signed (ed25519) by a key the
//! topology lists under `control.keys`, and carry a timestamp and a nonce so a captured request
//! cannot be sent again. The signature travels in NATS headers; the body is the request's JSON.
//!
//! What is signed: `panoptes-control-v1\0` || subject || `\0` || timestamp || `\0` || nonce ||
//! `\0` || body. The subject is part of it, so a signed `list` cannot be replayed as a `remove`,
//! nor a request for one namespace against another.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::keys::{PublicKey, SecretKey};
use anyhow::Context as _;
use async_nats::HeaderMap;
use panoptes_topology::ControlConfig;

/// Header naming the signing key (base64 of its 32 bytes).
pub const KEY_HEADER: &str = "Panoptes-Control-Key";
/// Header with the request's time, milliseconds since the Unix epoch.
pub const TIME_HEADER: &str = "Panoptes-Control-Time";
/// Header with a random token used once (16 to 64 characters of `[A-Za-z0-9_-]`).
pub const NONCE_HEADER: &str = "Panoptes-Control-Nonce";
/// Header with the signature (base64 of 64 bytes).
pub const SIGNATURE_HEADER: &str = "Panoptes-Control-Signature";

const DOMAIN: &[u8] = b"panoptes-control-v1\0";

/// Nonces remembered at once; past it requests are refused until old ones age out, so a flood
/// of validly signed requests cannot grow memory (only a key holder can send those).
const MAX_NONCES: usize = 100_000;

/// The bytes a control request's signature covers.
pub fn signed_message(subject: &str, time_ms: u64, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(subject.len() + nonce.len() + body.len() + 24);
    m.extend_from_slice(subject.as_bytes());
    m.push(0);
    m.extend_from_slice(time_ms.to_string().as_bytes());
    m.push(0);
    m.extend_from_slice(nonce.as_bytes());
    m.push(0);
    m.extend_from_slice(body);
    m
}

/// Milliseconds since the Unix epoch by this machine's clock (requests come from other
/// machines, so this is wall time, not a monotonic clock).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Signs control requests with a secret key (the sending side: `panoptes camera`,
/// `panoptes operator reload`, or anyone embedding Panoptes).
pub struct Signer {
    key: SecretKey,
    public: String,
}

impl Signer {
    pub fn new(key: SecretKey) -> Self {
        let public = key.public_key().to_base64();
        Self { key, public }
    }

    /// Reads a secret key file written by `panoptes operator keygen`.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let key = SecretKey::read(path)
            .with_context(|| format!("cannot use control key {}", path.display()))?;
        Ok(Self::new(key))
    }

    /// The headers that authenticate `body` sent on `subject` at `time_ms`.
    pub fn headers(&self, subject: &str, body: &[u8], time_ms: u64) -> HeaderMap {
        let nonce = format!("{:032x}", rand::random::<u128>());
        let signature = self
            .key
            .sign_message(DOMAIN, &signed_message(subject, time_ms, &nonce, body));
        let mut headers = HeaderMap::new();
        headers.insert(KEY_HEADER, self.public.as_str());
        headers.insert(TIME_HEADER, time_ms.to_string().as_str());
        headers.insert(NONCE_HEADER, nonce.as_str());
        headers.insert(SIGNATURE_HEADER, signature.as_str());
        headers
    }
}

/// Why a control request was refused. The reasons name what was wrong with the request, never
/// anything of the process's environment or files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "unsigned control request: sign it with a key listed in the topology's control.keys (panoptes camera/operator --key FILE)"
    )]
    Unsigned,
    #[error("malformed control header {0}")]
    Malformed(&'static str),
    #[error("the signing key is not one of the topology's control.keys")]
    UnknownKey,
    #[error("the signature does not verify (wrong key, or the request was changed)")]
    BadSignature,
    #[error(
        "the request's time is {skew_ms} ms away from this process's clock (at most {max_ms} ms allowed): too old, or the clocks disagree"
    )]
    Stale { skew_ms: u64, max_ms: u64 },
    #[error("this request was already received (a nonce is accepted once)")]
    Replayed,
    #[error("too many control requests in the last {window_ms} ms; try again later")]
    Busy { window_ms: u64 },
}

/// Checks control requests against the topology's keys, remembering nonces for `max_age`.
pub struct Verifier {
    keys: Vec<PublicKey>,
    max_age_ms: u64,
    /// Nonce → the time (ms) after which it may be forgotten.
    seen: Mutex<HashMap<String, u64>>,
}

impl Verifier {
    /// The verifier `control` asks for; `None` when control is off. Key files resolve against
    /// `base_dir` (the topology's directory).
    pub fn from_config(control: &ControlConfig, base_dir: &Path) -> anyhow::Result<Option<Self>> {
        if !control.enabled {
            return Ok(None);
        }
        anyhow::ensure!(
            !control.keys.is_empty(),
            "control.enabled needs at least one key in control.keys"
        );
        let keys = control
            .keys
            .iter()
            .map(|p| {
                let path = resolve(base_dir, p);
                PublicKey::read(&path)
                    .with_context(|| format!("cannot use control key {}", path.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Some(Self::new(
            keys,
            Duration::from_millis(control.max_age_ms),
        )))
    }

    pub fn new(keys: Vec<PublicKey>, max_age: Duration) -> Self {
        Self {
            keys,
            max_age_ms: u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Accepts a request received on `subject` at `now_ms`, or says why not. A request is
    /// accepted at most once: its nonce is remembered only after its signature verified, so
    /// forged requests cannot fill the memory.
    pub fn check(
        &self,
        subject: &str,
        headers: Option<&HeaderMap>,
        body: &[u8],
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let headers = headers.ok_or(Refusal::Unsigned)?;
        let get = |name: &'static str| headers.get(name).map(|v| v.as_str());
        let (Some(key), Some(time), Some(nonce), Some(signature)) = (
            get(KEY_HEADER),
            get(TIME_HEADER),
            get(NONCE_HEADER),
            get(SIGNATURE_HEADER),
        ) else {
            return Err(Refusal::Unsigned);
        };
        let time_ms: u64 = time
            .trim()
            .parse()
            .map_err(|_| Refusal::Malformed(TIME_HEADER))?;
        if !(16..=64).contains(&nonce.len())
            || !nonce
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Refusal::Malformed(NONCE_HEADER));
        }
        let key = self
            .keys
            .iter()
            .find(|k| k.to_base64() == key.trim())
            .ok_or(Refusal::UnknownKey)?;
        let message = signed_message(subject, time_ms, nonce, body);
        if !key.verify_message(DOMAIN, &message, signature) {
            return Err(Refusal::BadSignature);
        }
        let skew_ms = now_ms.abs_diff(time_ms);
        if skew_ms > self.max_age_ms {
            return Err(Refusal::Stale {
                skew_ms,
                max_ms: self.max_age_ms,
            });
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|_, forget_after| *forget_after >= now_ms);
        if seen.contains_key(nonce) {
            return Err(Refusal::Replayed);
        }
        if seen.len() >= MAX_NONCES {
            return Err(Refusal::Busy {
                window_ms: self.max_age_ms,
            });
        }
        // A request is valid until `time + max_age`; its nonce must be remembered that long.
        seen.insert(nonce.to_owned(), time_ms.saturating_add(self.max_age_ms));
        Ok(())
    }
}

fn resolve(base_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Signer, PublicKey) {
        let key = SecretKey::generate().expect("key");
        let public = key.public_key();
        (Signer::new(key), public)
    }

    const SUBJECT: &str = "panoptes.control.cameras.list";

    #[test]
    fn a_signed_request_is_accepted_once() {
        let (signer, public) = pair();
        let v = Verifier::new(vec![public], Duration::from_secs(30));
        let now = 1_000_000;
        let h = signer.headers(SUBJECT, b"{}", now);
        assert_eq!(v.check(SUBJECT, Some(&h), b"{}", now + 5), Ok(()));
        assert_eq!(
            v.check(SUBJECT, Some(&h), b"{}", now + 10),
            Err(Refusal::Replayed)
        );
    }

    #[test]
    fn refusals_name_the_reason() {
        let (signer, public) = pair();
        let (stranger, _) = pair();
        let v = Verifier::new(vec![public], Duration::from_secs(30));
        let now = 1_000_000;
        assert_eq!(v.check(SUBJECT, None, b"{}", now), Err(Refusal::Unsigned));
        let h = stranger.headers(SUBJECT, b"{}", now);
        assert_eq!(
            v.check(SUBJECT, Some(&h), b"{}", now),
            Err(Refusal::UnknownKey)
        );
        // The body, the subject and the time are all covered by the signature.
        let h = signer.headers(SUBJECT, b"{}", now);
        assert_eq!(
            v.check(SUBJECT, Some(&h), b"{\"camera\":\"x\"}", now),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            v.check("panoptes.control.cameras.remove", Some(&h), b"{}", now),
            Err(Refusal::BadSignature)
        );
        let mut moved = h.clone();
        moved.insert(TIME_HEADER, (now + 1).to_string().as_str());
        assert_eq!(
            v.check(SUBJECT, Some(&moved), b"{}", now),
            Err(Refusal::BadSignature)
        );
        let old = signer.headers(SUBJECT, b"{}", now - 31_000);
        assert_eq!(
            v.check(SUBJECT, Some(&old), b"{}", now),
            Err(Refusal::Stale {
                skew_ms: 31_000,
                max_ms: 30_000
            })
        );
        let mut bad_nonce = signer.headers(SUBJECT, b"{}", now);
        bad_nonce.insert(NONCE_HEADER, "x");
        assert_eq!(
            v.check(SUBJECT, Some(&bad_nonce), b"{}", now),
            Err(Refusal::Malformed(NONCE_HEADER))
        );
    }

    #[test]
    fn nonces_are_forgotten_once_their_request_expired() {
        let (signer, public) = pair();
        let v = Verifier::new(vec![public], Duration::from_secs(30));
        let now = 1_000_000;
        for i in 0..100 {
            let h = signer.headers(SUBJECT, b"{}", now + i);
            assert_eq!(v.check(SUBJECT, Some(&h), b"{}", now + i), Ok(()));
        }
        let later = now + 200_000;
        let h = signer.headers(SUBJECT, b"{}", later);
        assert_eq!(v.check(SUBJECT, Some(&h), b"{}", later), Ok(()));
        assert_eq!(v.seen.lock().expect("lock").len(), 1);
    }
}
