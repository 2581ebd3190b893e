//! Ed25519 signatures on step jobs: the controller signs each job's encoded body and sends the
//! signature in a header; agents with the public key run only jobs whose signature verifies.
//!
//! Keys are PEM files as OpenSSL writes them: a PKCS#8 private key (`openssl genpkey -algorithm
//! ed25519`) and its SubjectPublicKeyInfo public key (`openssl pkey -pubout`).

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use std::path::{Path, PathBuf};

/// Header holding a job's signature: 128 hex digits over the message body as published.
pub const SIGNATURE_HEADER: &str = "x-drover-signature";

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the key file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "{path} is not an Ed25519 {what} in PEM ({error}); make a pair with `drover keygen` or `openssl genpkey -algorithm ed25519 -out job-signing.pem` and `openssl pkey -in job-signing.pem -pubout -out job-verify.pem`"
    )]
    Parse {
        path: PathBuf,
        what: &'static str,
        error: String,
    },
    #[error("cannot draw random bytes for a key: {0}")]
    Random(String),
}

/// Why a job's signature was refused; `code` is the dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the job carries no {SIGNATURE_HEADER} header, and this agent runs signed jobs only")]
    Unsigned,
    #[error("the job's {SIGNATURE_HEADER} header is not 128 hex digits")]
    Malformed,
    #[error("the job's signature does not match its body under this agent's --job-verify-key")]
    Wrong,
}

impl SignatureError {
    /// A short stable code, used as the dead-letter reason.
    pub fn code(&self) -> &'static str {
        match self {
            SignatureError::Unsigned => "unsigned_job",
            SignatureError::Malformed | SignatureError::Wrong => "bad_signature",
        }
    }
}

/// The controller's signing key.
pub struct JobSigner {
    key: SigningKey,
}

impl JobSigner {
    /// Reads a PKCS#8 PEM private key.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let text = read(path)?;
        let key = SigningKey::from_pkcs8_pem(&text).map_err(|e| KeyError::Parse {
            path: path.to_path_buf(),
            what: "private key",
            error: e.to_string(),
        })?;
        Ok(Self { key })
    }

    /// The signature of `body`, as it goes into [`SIGNATURE_HEADER`].
    pub fn sign(&self, body: &[u8]) -> String {
        hex::encode(self.key.sign(body).to_bytes())
    }

    /// The matching verifier.
    pub fn verifier(&self) -> JobVerifier {
        JobVerifier {
            key: self.key.verifying_key(),
        }
    }
}

/// An agent's key for checking jobs.
#[derive(Clone, Debug)]
pub struct JobVerifier {
    key: VerifyingKey,
}

impl JobVerifier {
    /// Reads a SubjectPublicKeyInfo PEM public key.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let text = read(path)?;
        let key = VerifyingKey::from_public_key_pem(&text).map_err(|e| KeyError::Parse {
            path: path.to_path_buf(),
            what: "public key",
            error: e.to_string(),
        })?;
        Ok(Self { key })
    }

    /// Checks `signature` (the header's value, if any) against `body`.
    pub fn verify(&self, body: &[u8], signature: Option<&str>) -> Result<(), SignatureError> {
        let text = signature.ok_or(SignatureError::Unsigned)?;
        let bytes: [u8; 64] = hex::decode(text)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(SignatureError::Malformed)?;
        self.key
            .verify(body, &Signature::from_bytes(&bytes))
            .map_err(|_| SignatureError::Wrong)
    }
}

/// A new key pair as PEM text: (private key, public key).
pub fn generate() -> Result<(String, String), KeyError> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Random(e.to_string()))?
        .to_string();
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| KeyError::Random(e.to_string()))?;
    Ok((private, public))
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|error| KeyError::Read {
        path: path.to_path_buf(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (tempfile::TempDir, JobSigner, JobVerifier) {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = generate().unwrap();
        std::fs::write(dir.path().join("k.pem"), private).unwrap();
        std::fs::write(dir.path().join("k.pub"), public).unwrap();
        let signer = JobSigner::from_file(&dir.path().join("k.pem")).unwrap();
        let verifier = JobVerifier::from_file(&dir.path().join("k.pub")).unwrap();
        (dir, signer, verifier)
    }

    #[test]
    fn a_signed_body_verifies_and_nothing_else_does() {
        let (_dir, signer, verifier) = pair();
        let sig = signer.sign(b"job");
        assert_eq!(verifier.verify(b"job", Some(&sig)), Ok(()));
        assert_eq!(
            verifier.verify(b"jox", Some(&sig)),
            Err(SignatureError::Wrong)
        );
        assert_eq!(verifier.verify(b"job", None), Err(SignatureError::Unsigned));
        assert_eq!(
            verifier.verify(b"job", Some("abcd")),
            Err(SignatureError::Malformed)
        );
        let (_other_dir, other, _) = pair();
        assert_eq!(
            verifier.verify(b"job", Some(&other.sign(b"job"))),
            Err(SignatureError::Wrong)
        );
    }

    /// Keys as `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` write them.
    #[test]
    fn openssl_keys_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("job-signing.pem");
        let public = dir.path().join("job-verify.pem");
        let made = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&private)
            .status();
        let Ok(status) = made else {
            eprintln!("skipped: no openssl");
            return;
        };
        assert!(status.success());
        let status = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .unwrap();
        assert!(status.success());
        let signer = JobSigner::from_file(&private).unwrap();
        let verifier = JobVerifier::from_file(&public).unwrap();
        assert_eq!(verifier.verify(b"job", Some(&signer.sign(b"job"))), Ok(()));
    }

    #[test]
    fn keys_of_the_wrong_kind_are_refused_with_the_recipe() {
        let (dir, _, _) = pair();
        let e = JobVerifier::from_file(&dir.path().join("k.pem"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("not an Ed25519 public key") && e.contains("openssl"),
            "{e}"
        );
        let e = JobSigner::from_file(&dir.path().join("missing.pem"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cannot read the key file"), "{e}");
    }
}
