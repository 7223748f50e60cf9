//! The coordinator's data directory and what identifies it: the self-signed certificate
//! nodes pin, and the admin API token.
//!
//! ```text
//! DIR/            0700
//! DIR/cert.der    the certificate (SAN "wiremesh-coordinator"); pin = sha256 of these bytes
//! DIR/key.der     its PKCS#8 private key, 0600
//! DIR/admin.token 32 random bytes, base64url, 0600
//! DIR/relay.secret 32 random bytes (raw), 0600: relay tokens derive from it
//! DIR/db/         the sled store
//! ```
//! All are made on first start and reused afterwards; files are written atomically
//! (temporary file, fsync, rename). Secret files that group or others can read are refused.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use mesh_proto::control::CertPin;
use mesh_proto::Key;

/// The certificate's subject alternative name (nodes pin the hash, not the name).
pub const SERVER_NAME: &str = "wiremesh-coordinator";

/// Why the data directory or identity could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file or directory operation failed.
    // The cause is in the message, not chained as `source`: `{e:#}` would print it twice.
    #[error("{}: {error}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What went wrong.
        error: io::Error,
    },
    /// A secret file is readable by group or others.
    #[error("{} is accessible by group or others (mode {mode:03o}); run chmod 600 on it", path.display())]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// `pin` / `admin-token` before the first `serve`.
    #[error("{} does not exist; run `coordinator serve --data-dir {}` once first", path.display(), dir.display())]
    Missing {
        /// The missing file.
        path: PathBuf,
        /// The data directory.
        dir: PathBuf,
    },
    /// The admin token file is empty or not text.
    #[error("{}: not an admin token", path.display())]
    BadToken {
        /// The file.
        path: PathBuf,
    },
    /// The relay secret file does not hold exactly 32 bytes.
    #[error("{}: not a relay secret (expected 32 bytes); delete it to make a new one (members then get new relay tokens when they reconnect)", path.display())]
    BadRelaySecret {
        /// The file.
        path: PathBuf,
    },
    /// Certificate generation failed.
    #[error("making the certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// The random generator failed.
    #[error("random generator failed: {0}")]
    Random(getrandom::Error),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> IdentityError + '_ {
    move |error| IdentityError::Io {
        path: path.to_owned(),
        error,
    }
}

/// The certificate and key the QUIC endpoint serves.
#[derive(Clone)]
pub struct Identity {
    /// DER certificate.
    pub cert_der: Vec<u8>,
    /// PKCS#8 DER private key.
    pub key_der: Vec<u8>,
    /// The pin nodes check.
    pub pin: CertPin,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("pin", &self.pin)
            .finish_non_exhaustive()
    }
}

/// Paths inside a data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    /// The directory.
    pub dir: PathBuf,
}

impl DataDir {
    /// A data directory at `dir` (nothing is touched yet).
    pub fn new(dir: impl Into<PathBuf>) -> DataDir {
        DataDir { dir: dir.into() }
    }

    /// `DIR/cert.der`.
    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.der")
    }

    /// `DIR/key.der`.
    pub fn key(&self) -> PathBuf {
        self.dir.join("key.der")
    }

    /// `DIR/admin.token`.
    pub fn admin_token(&self) -> PathBuf {
        self.dir.join("admin.token")
    }

    /// `DIR/relay.secret`.
    pub fn relay_secret(&self) -> PathBuf {
        self.dir.join("relay.secret")
    }

    /// `DIR/db`.
    pub fn db(&self) -> PathBuf {
        self.dir.join("db")
    }

    /// Creates the directory (0700), or tightens an existing one to 0700.
    pub fn create(&self) -> Result<(), IdentityError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_err(&self.dir))?;
        let meta = fs::metadata(&self.dir).map_err(io_err(&self.dir))?;
        if meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
                .map_err(io_err(&self.dir))?;
        }
        Ok(())
    }

    /// Loads the certificate and key, making them on first use.
    pub fn load_or_create_identity(&self) -> Result<Identity, IdentityError> {
        let (cert, key) = (self.cert(), self.key());
        if !cert.exists() || !key.exists() {
            let made = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])?;
            write_private(&key, &made.signing_key.serialize_der())?;
            write_private(&cert, made.cert.der())?;
            tracing::info!(cert = %cert.display(), "made a new coordinator certificate");
        }
        self.load_identity()
    }

    /// Loads the certificate and key.
    pub fn load_identity(&self) -> Result<Identity, IdentityError> {
        let cert_der = read_existing(&self.dir, &self.cert(), false)?;
        let key_der = read_existing(&self.dir, &self.key(), true)?;
        Ok(Identity {
            pin: CertPin::of_der(&cert_der),
            cert_der,
            key_der,
        })
    }

    /// Loads the admin token, making it on first use.
    pub fn load_or_create_admin_token(&self) -> Result<String, IdentityError> {
        let path = self.admin_token();
        if !path.exists() {
            let mut bytes = [0u8; 32];
            getrandom::getrandom(&mut bytes).map_err(IdentityError::Random)?;
            let token = URL_SAFE_NO_PAD.encode(bytes);
            write_private(&path, format!("{token}\n").as_bytes())?;
        }
        self.load_admin_token()
    }

    /// Loads the admin token.
    pub fn load_admin_token(&self) -> Result<String, IdentityError> {
        let path = self.admin_token();
        let bytes = read_existing(&self.dir, &path, true)?;
        let token = String::from_utf8(bytes)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
            .ok_or_else(|| IdentityError::BadToken { path: path.clone() })?;
        Ok(token)
    }

    /// Loads the relay secret, making it on first use.
    pub fn load_or_create_relay_secret(&self) -> Result<Key, IdentityError> {
        let path = self.relay_secret();
        if !path.exists() {
            let mut bytes = [0u8; 32];
            getrandom::getrandom(&mut bytes).map_err(IdentityError::Random)?;
            write_private(&path, &bytes)?;
        }
        let bytes = read_existing(&self.dir, &path, true)?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| IdentityError::BadRelaySecret { path: path.clone() })?;
        Ok(Key(bytes))
    }
}

impl DataDir {
    /// Makes this data directory hold the coordinator set's shared identity: for each of
    /// the certificate, its key, the admin token and the relay secret, `adopt` is given
    /// this directory's file and returns the set's (the first coordinator's, kept in the
    /// shared store); a different one replaces the file. Run after the `load_or_create_*`
    /// calls; load again afterwards. Returns whether anything was replaced.
    pub fn adopt_shared(
        &self,
        mut adopt: impl FnMut(&str, &[u8]) -> Result<Vec<u8>, String>,
    ) -> Result<bool, IdentityError> {
        let mut replaced = false;
        for (name, path) in [
            ("cert.der", self.cert()),
            ("key.der", self.key()),
            ("admin.token", self.admin_token()),
            ("relay.secret", self.relay_secret()),
        ] {
            let local = read_existing(&self.dir, &path, name != "cert.der")?;
            let shared = adopt(name, &local).map_err(|e| IdentityError::Io {
                path: path.clone(),
                error: io::Error::other(format!("sharing it through the store: {e}")),
            })?;
            if shared != local {
                write_private(&path, &shared)?;
                replaced = true;
            }
        }
        Ok(replaced)
    }
}

fn read_existing(dir: &Path, path: &Path, secret: bool) -> Result<Vec<u8>, IdentityError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(IdentityError::Missing {
                path: path.to_owned(),
                dir: dir.to_owned(),
            })
        }
        Err(e) => return Err(io_err(path)(e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if secret && mode & 0o077 != 0 {
        return Err(IdentityError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    fs::read(path).map_err(io_err(path))
}

/// Writes `bytes` to `path` atomically with mode 0600.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(parent) = path.parent() {
        if let Ok(d) = fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("data"));
        assert!(matches!(
            dir.load_identity(),
            Err(IdentityError::Missing { .. })
        ));
        dir.create().unwrap();
        let mode = fs::metadata(&dir.dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let a = dir.load_or_create_identity().unwrap();
        let b = dir.load_or_create_identity().unwrap();
        assert_eq!(a.pin, b.pin);
        assert_eq!(a.pin, CertPin::of_der(&a.cert_der));
        let key_mode = fs::metadata(dir.key()).unwrap().permissions().mode() & 0o777;
        assert_eq!(key_mode, 0o600);

        let t1 = dir.load_or_create_admin_token().unwrap();
        let t2 = dir.load_or_create_admin_token().unwrap();
        assert_eq!(t1, t2);
        assert_eq!(t1.len(), 43);
        let token_mode = fs::metadata(dir.admin_token())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(token_mode, 0o600);
    }

    #[test]
    fn relay_secret_made_once_private_and_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        dir.create().unwrap();
        let a = dir.load_or_create_relay_secret().unwrap();
        assert_eq!(dir.load_or_create_relay_secret().unwrap(), a);
        assert_ne!(a, Key([0; 32]));
        let mode = fs::metadata(dir.relay_secret())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        fs::set_permissions(dir.relay_secret(), fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            dir.load_or_create_relay_secret(),
            Err(IdentityError::Permissions { .. })
        ));
        fs::set_permissions(dir.relay_secret(), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(dir.relay_secret(), b"short").unwrap();
        assert!(matches!(
            dir.load_or_create_relay_secret(),
            Err(IdentityError::BadRelaySecret { .. })
        ));
    }

    #[test]
    fn refuses_readable_secrets() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        dir.create().unwrap();
        dir.load_or_create_admin_token().unwrap();
        fs::set_permissions(dir.admin_token(), fs::Permissions::from_mode(0o644)).unwrap();
        let err = dir.load_admin_token().unwrap_err().to_string();
        assert!(
            err.contains("accessible by group or others (mode 644)"),
            "{err}"
        );
    }
}
