//! The cluster key: one shared secret that every node of a cluster holds (SECURITY.md), the
//! keyring file it lives in, and the CURVE key pairs and fingerprint derived from it.
//!
//! **Format.** One key per line, `troupe-key-v1:` then the 32 secret bytes in standard base64
//! (44 characters), as Serf and Consul write their gossip keys: an operator can read it, copy
//! it through a terminal or a config tool without escaping (z85, ZeroMQ's own encoding, uses
//! `$ & ( ) < > ; ? *`, which shells and YAML interpret), and tell it apart from any other
//! secret by its prefix. The version in the prefix lets a later format coexist in one keyring.
//! Blank lines and lines starting with `#` are comments.
//!
//! **Keyring.** The first key is *used* (this node's servers take its server pair, its clients
//! try it first); every key is *accepted* (a client presenting any key's client pair is
//! admitted, and a client falls back to the next keys when a server refuses the first). So a
//! cluster rotates its key with no downtime: add the new key second everywhere, make it first
//! node by node, then remove the old one.
//!
//! **KDF.** Per key, HKDF-SHA256 (RFC 5869) with salt [`KDF_SALT`] extracts a pseudo-random
//! key from the 32 secret bytes, and three expansions with distinct `info` strings give: the
//! CURVE server secret ([`INFO_SERVER`]), the CURVE client secret ([`INFO_CLIENT`]) and the
//! fingerprint ([`INFO_FINGERPRINT`], first 8 bytes, in hex); a fourth, [`INFO_DASHBOARD`], gives
//! the web dashboard's access token (32 bytes, in hex: [`ClusterKey::dashboard_token`]), so a
//! browser is let in by what the key holder hands it and never sees the key. Each CURVE secret is an X25519
//! scalar; its public key is computed by libsodium's `crypto_scalarmult_base`
//! (what libzmq's own `zmq_curve_public` calls), so the pairs match what the handshakes use. Deriving (rather than storing) the pairs keeps the file one line per key and
//! lets no node be configured with a server key that clients cannot know. Server and client
//! pairs differ, so a captured client public key does not name the server's. The fingerprint
//! is one-way (an HKDF output, not the key) and short: it only tells clusters apart.
//!
//! Secrets never leave this module in a printable form: [`ClusterKey`] and [`CurvePair`]
//! print only the fingerprint or the public key in `Debug`, and only [`ClusterKey::to_line`]
//! (for `troupe keygen`) writes a secret out. Nor do they outlive their use: the secret bytes,
//! the derived CURVE secrets and the key file's text are held in [`Zeroizing`] buffers, wiped
//! when dropped (a rotation drops the old keys), so a later heap read or core dump of a
//! long-running agent does not find a key it no longer uses.

use base64::Engine;
use std::fmt;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// What starts every key line.
pub const PREFIX: &str = "troupe-key-v1:";
/// HKDF salt: names the scheme, so these derivations never collide with another use of the key.
pub const KDF_SALT: &[u8] = b"troupe cluster key v1";
/// HKDF info for the CURVE server secret.
pub const INFO_SERVER: &[u8] = b"troupe curve server v1";
/// HKDF info for the CURVE client secret.
pub const INFO_CLIENT: &[u8] = b"troupe curve client v1";
/// HKDF info for the fingerprint.
pub const INFO_FINGERPRINT: &[u8] = b"troupe fingerprint v1";
/// HKDF info for the web dashboard's access token.
pub const INFO_DASHBOARD: &[u8] = b"troupe dashboard token v1";
/// The file name the agent looks for in its state dir when no key file is named.
pub const DEFAULT_FILE_NAME: &str = "cluster.key";
/// Secret bytes in a key.
const KEY_BYTES: usize = 32;

/// Why a key file cannot be used. Each names the file; none contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "key file {path} has mode {mode:04o}: others could read the cluster key; \
         fix with `chmod 600 {path}`"
    )]
    Readable { path: PathBuf, mode: u32 },
    #[error(
        "key file {path} is owned by uid {owner}, not by this process's uid {me}: \
         fix with `chown {me} {path}`"
    )]
    Owner { path: PathBuf, owner: u32, me: u32 },
    #[error("key file {path}: line {line}: {reason}")]
    Malformed {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("key file {path} holds no key (make one with `troupe keygen --out {path}`)")]
    Empty { path: PathBuf },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One cluster key: 32 secret bytes, wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey {
    secret: Zeroizing<[u8; KEY_BYTES]>,
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey({})", self.fingerprint())
    }
}

impl ClusterKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> std::io::Result<ClusterKey> {
        let mut secret = Zeroizing::new([0u8; KEY_BYTES]);
        getrandom::fill(&mut secret[..]).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(ClusterKey { secret })
    }

    /// Parses one key line (without comments or surrounding blanks). The error never quotes
    /// the line: it may be a secret with a typo.
    pub fn parse(line: &str) -> Result<ClusterKey, String> {
        let Some(encoded) = line.strip_prefix(PREFIX) else {
            return Err(format!(
                "expected a key `{PREFIX}<base64 of 32 bytes>` (as `troupe keygen` writes), \
                 got a line of {} characters not starting with `{PREFIX}`",
                line.chars().count()
            ));
        };
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|e| format!("the key after `{PREFIX}` is not base64: {e}"))?,
        );
        if bytes.len() != KEY_BYTES {
            return Err(format!(
                "the key after `{PREFIX}` decodes to {} bytes, expected {KEY_BYTES}",
                bytes.len()
            ));
        }
        let mut secret = Zeroizing::new([0u8; KEY_BYTES]);
        secret.copy_from_slice(&bytes);
        Ok(ClusterKey { secret })
    }

    /// The key as a line of a key file. This writes the secret: only for `troupe keygen`.
    pub fn to_line(&self) -> String {
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(&self.secret[..])
        )
    }

    /// The key's fingerprint: safe to show, log and announce.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut bytes = [0u8; 8];
        self.expand(INFO_FINGERPRINT, &mut bytes);
        Fingerprint(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The web dashboard's access token of this key: 64 hex digits, a secret (whoever holds it
    /// may do what `troupe serve` does for the cluster), one-way (it opens no CURVE socket and
    /// does not give the key back).
    pub fn dashboard_token(&self) -> String {
        let mut bytes = [0u8; KEY_BYTES];
        self.expand(INFO_DASHBOARD, &mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The CURVE key pairs of this key.
    pub fn curve(&self) -> CurveKeys {
        CurveKeys {
            server: self.pair(INFO_SERVER),
            client: self.pair(INFO_CLIENT),
        }
    }

    fn pair(&self, info: &[u8]) -> CurvePair {
        let mut secret = Zeroizing::new([0u8; KEY_BYTES]);
        self.expand(info, &mut secret[..]);
        CurvePair {
            public: curve_public(&secret),
            secret,
        }
    }

    fn expand(&self, info: &[u8], out: &mut [u8]) {
        hkdf::Hkdf::<sha2::Sha256>::new(Some(KDF_SALT), &self.secret[..])
            .expand(info, out)
            .expect("HKDF-SHA256 gives up to 8160 bytes");
    }
}

// Every secret field is a `Zeroizing` buffer: these types wipe their secrets when dropped.
impl zeroize::ZeroizeOnDrop for ClusterKey {}
impl zeroize::ZeroizeOnDrop for CurvePair {}
impl zeroize::ZeroizeOnDrop for CurveKeys {}
impl zeroize::ZeroizeOnDrop for Keyring {}

/// The public, one-way short name of a cluster key (16 hex digits).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(String);

/// Hex digits in a fingerprint: 8 bytes.
const FINGERPRINT_DIGITS: usize = 16;

impl Fingerprint {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A fingerprint read from the network (an mDNS TXT record, a Circus UDP reply, a
    /// `nodeinfo` reply): 16 lowercase hex digits, or an error that quotes at most that many
    /// characters of it.
    pub fn parse(text: &str) -> Result<Fingerprint, String> {
        let valid = text.len() == FINGERPRINT_DIGITS
            && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if valid {
            return Ok(Fingerprint(text.to_string()));
        }
        let shown: String = text.chars().take(FINGERPRINT_DIGITS).collect();
        Err(format!(
            "expected a key fingerprint of {FINGERPRINT_DIGITS} lowercase hex digits, got {shown:?}{}",
            if text.chars().count() > FINGERPRINT_DIGITS { "..." } else { "" }
        ))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A CURVE key pair; `Debug` shows the public key only; the secret is wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct CurvePair {
    pub public: [u8; KEY_BYTES],
    secret: Zeroizing<[u8; KEY_BYTES]>,
}

impl CurvePair {
    /// The secret key, to hand to libzmq (`ZMQ_CURVE_SECRETKEY`) and nowhere else.
    pub fn secret(&self) -> &[u8; KEY_BYTES] {
        &self.secret
    }
}

impl fmt::Debug for CurvePair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let public = zmq::z85_encode(&self.public).unwrap_or_default();
        write!(f, "CurvePair(public {public})")
    }
}

/// The two CURVE pairs one cluster key gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurveKeys {
    /// Taken by every listening TCP socket of a node whose first key this is.
    pub server: CurvePair,
    /// Presented by a node's outgoing connections; servers admit its public key.
    pub client: CurvePair,
}

/// The X25519 public key of `secret`, computed by the libsodium that libzmq's CURVE uses.
fn curve_public(secret: &[u8; KEY_BYTES]) -> [u8; KEY_BYTES] {
    let mut public = [0u8; KEY_BYTES];
    // SAFETY: crypto_scalarmult_base reads a 32-byte scalar and writes a 32-byte point.
    let rc = unsafe { libsodium_sys::crypto_scalarmult_base(public.as_mut_ptr(), secret.as_ptr()) };
    assert_eq!(rc, 0, "X25519 of a clamped scalar never fails");
    public
}

/// A keyring: one or more cluster keys; the first is used, all are accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<ClusterKey>,
}

impl Keyring {
    /// A keyring of these keys; `None` when there are none.
    pub fn new(keys: Vec<ClusterKey>) -> Option<Keyring> {
        (!keys.is_empty()).then_some(Keyring { keys })
    }

    /// Reads the key file at `path`, refusing one that another user owns or that group or
    /// others may read (the key would not be this node's secret any more).
    pub fn load(path: &Path) -> Result<Keyring, KeyFileError> {
        let read = |source| KeyFileError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read)?;
        // The opened file's own metadata: what is checked is what is read.
        let metadata = file.metadata().map_err(read)?;
        let me = nix::unistd::geteuid().as_raw();
        if metadata.uid() != me {
            return Err(KeyFileError::Owner {
                path: path.to_path_buf(),
                owner: metadata.uid(),
                me,
            });
        }
        let mode = metadata.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Readable {
                path: path.to_path_buf(),
                mode,
            });
        }
        // A key file is a few lines; a larger one is not a key file. Room for all of it at
        // once: a buffer that grew would leave copies of the text behind, unwiped.
        const MAX_KEY_FILE: usize = 64 * 1024;
        let mut text = Zeroizing::new(String::with_capacity(MAX_KEY_FILE + 1));
        file.take(MAX_KEY_FILE as u64)
            .read_to_string(&mut text)
            .map_err(read)?;
        Keyring::parse(&text, path)
    }

    /// Parses key-file text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Keyring, KeyFileError> {
        let mut keys = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = ClusterKey::parse(line).map_err(|reason| KeyFileError::Malformed {
                path: path.to_path_buf(),
                line: index + 1,
                reason,
            })?;
            keys.push(key);
        }
        Keyring::new(keys).ok_or_else(|| KeyFileError::Empty {
            path: path.to_path_buf(),
        })
    }

    /// The key in use.
    pub fn first(&self) -> &ClusterKey {
        &self.keys[0]
    }

    /// Every key, the one in use first.
    pub fn keys(&self) -> &[ClusterKey] {
        &self.keys
    }

    /// The fingerprint of the key in use.
    pub fn fingerprint(&self) -> Fingerprint {
        self.first().fingerprint()
    }

    /// The fingerprints of every key: a node announcing any of them may be a member (during
    /// a rotation, nodes' first keys differ).
    pub fn fingerprints(&self) -> Vec<Fingerprint> {
        self.keys.iter().map(ClusterKey::fingerprint).collect()
    }
}

/// Writes `key` to a new file at `path`, mode 0600. An existing file is never replaced: it
/// may be the key a running cluster depends on (to rotate, add a line instead; README).
pub fn write_new(path: &Path, key: &ClusterKey) -> Result<(), KeyFileError> {
    use std::io::Write;
    let write = |source| KeyFileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(write)?;
    let line = Zeroizing::new(key.to_line());
    let text = Zeroizing::new(format!(
        "# troupe cluster key, fingerprint {}. Copy this file to every node, mode 0600.\n{}\n",
        key.fingerprint(),
        *line
    ));
    file.write_all(text.as_bytes()).map_err(write)?;
    file.sync_all().map_err(write)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed key: 32 bytes 0, 1, ..., 31.
    fn counting_key() -> ClusterKey {
        let mut secret = Zeroizing::new([0u8; KEY_BYTES]);
        for (i, b) in secret.iter_mut().enumerate() {
            *b = i as u8;
        }
        ClusterKey { secret }
    }

    fn z85(bytes: &[u8]) -> String {
        zmq::z85_encode(bytes).unwrap()
    }

    /// Pinned once, and checked then against an independent computation (Python's hmac for
    /// HKDF-SHA256, pyzmq's bundled `zmq.curve_public`); a change here breaks every deployed
    /// cluster key.
    #[test]
    fn kdf_vectors_are_pinned() {
        let key = counting_key();
        assert_eq!(
            key.to_line(),
            "troupe-key-v1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
        );
        let curve = key.curve();
        assert_eq!(
            z85(curve.server.secret()),
            "11SJL<uJ(+Va-FoWxf1:x47oLa2R]^PleI4MPNT%"
        );
        assert_eq!(
            z85(&curve.server.public),
            "c#$Bx1LCwYPIxde[WAnrW5iX5he&Yz2vkzZDkS!u"
        );
        assert_eq!(
            z85(curve.client.secret()),
            "rhW?@dVcWF9OctCo4?w/<{?THnRp4i!/Cl(j*.n9"
        );
        assert_eq!(
            z85(&curve.client.public),
            ":n$3aJw!v?tgi@!D=(78mfkyg2EKWo{]TkqRQK7d"
        );
        assert_eq!(key.fingerprint().as_str(), "1a370741c810a9b4");
        // Python: hmac HKDF-SHA256, salt KDF_SALT, info INFO_DASHBOARD, 32 bytes.
        assert_eq!(
            key.dashboard_token(),
            "c3529e0f6e35632a45dfb28e28c5be47ab543343a9353549e483ab6076bd955b"
        );
    }

    #[test]
    fn secrets_are_wiped_when_dropped() {
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wiped_on_drop::<ClusterKey>();
        wiped_on_drop::<CurvePair>();
        wiped_on_drop::<CurveKeys>();
        wiped_on_drop::<Keyring>();
        wiped_on_drop::<Zeroizing<[u8; KEY_BYTES]>>();
    }

    #[test]
    fn derived_pairs_are_distinct_and_match_libzmq() {
        let curve = counting_key().curve();
        assert_ne!(curve.server, curve.client);
        // libzmq's zmq_curve_keypair and we agree on what public key a secret has.
        let pair = zmq::CurveKeyPair::new().unwrap();
        assert_eq!(
            curve_public(&pair.secret_key).to_vec(),
            pair.public_key.to_vec()
        );
    }

    #[test]
    fn a_key_line_round_trips_and_keys_differ() {
        let key = ClusterKey::generate().unwrap();
        assert_eq!(ClusterKey::parse(&key.to_line()).unwrap(), key);
        assert_ne!(ClusterKey::generate().unwrap(), key);
        assert_ne!(
            ClusterKey::generate().unwrap().fingerprint(),
            key.fingerprint()
        );
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let key = counting_key();
        let secret_b64 = &key.to_line()[PREFIX.len()..];
        let curve = key.curve();
        let shown = format!("{key:?} {curve:?} {:?}", Keyring::new(vec![key.clone()]));
        assert!(shown.contains(key.fingerprint().as_str()), "{shown}");
        for secret in [
            secret_b64.to_string(),
            z85(&key.secret[..]),
            z85(curve.server.secret()),
            z85(curve.client.secret()),
        ] {
            assert!(!shown.contains(&secret), "{shown} shows {secret}");
        }
    }

    #[test]
    fn fingerprints_from_the_network_are_checked() {
        let key = counting_key();
        let shown = key.fingerprint();
        assert_eq!(Fingerprint::parse(shown.as_str()), Ok(shown));
        for bad in [
            "",
            "1A370741C810A9B4",
            "1a370741c810a9b",
            "1a370741c810a9b4a",
            "zz370741c810a9b4",
        ] {
            assert!(Fingerprint::parse(bad).is_err(), "{bad}");
        }
        let long = Fingerprint::parse(&"x".repeat(1000)).unwrap_err();
        assert!(long.len() < 120, "{long}");
    }

    #[test]
    fn a_keyring_keeps_its_order_and_skips_comments() {
        let (a, b) = (
            ClusterKey::generate().unwrap(),
            ClusterKey::generate().unwrap(),
        );
        let text = format!(
            "# new key first\n\n  {}  \n# old\n{}\n",
            b.to_line(),
            a.to_line()
        );
        let ring = Keyring::parse(&text, Path::new("k")).unwrap();
        assert_eq!(ring.keys(), [b.clone(), a]);
        assert_eq!(ring.fingerprint(), b.fingerprint());
    }

    #[test]
    fn malformed_lines_are_named_without_their_content() {
        let good = ClusterKey::generate().unwrap().to_line();
        let cases = [
            (
                format!("{good}\nsecret-without-prefix\n"),
                2,
                "not starting with",
            ),
            (
                format!("# c\n{}\n", &good[..good.len() - 4]),
                2,
                "decodes to",
            ),
            (format!("{PREFIX}not*base64\n"), 1, "not base64"),
        ];
        for (text, line, reason) in cases {
            let error = Keyring::parse(&text, Path::new("/etc/troupe/cluster.key")).unwrap_err();
            let shown = error.to_string();
            assert!(
                shown.starts_with(&format!("key file /etc/troupe/cluster.key: line {line}: ")),
                "{shown}"
            );
            assert!(shown.contains(reason), "{shown}");
            assert!(!shown.contains("secret-without-prefix") && !shown.contains(&good[20..]));
        }
        let empty = Keyring::parse("# nothing\n\n", Path::new("k")).unwrap_err();
        assert!(matches!(empty, KeyFileError::Empty { .. }), "{empty}");
    }

    #[test]
    fn key_files_are_written_0600_never_replaced_and_refused_when_readable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        let key = ClusterKey::generate().unwrap();
        write_new(&path, &key).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Keyring::load(&path).unwrap().first(), &key);
        let again = write_new(&path, &ClusterKey::generate().unwrap()).unwrap_err();
        assert!(matches!(again, KeyFileError::Write { .. }), "{again}");
        assert_eq!(Keyring::load(&path).unwrap().first(), &key, "not replaced");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let shown = Keyring::load(&path).unwrap_err().to_string();
        assert!(
            shown.contains("mode 0640") && shown.contains("chmod 600"),
            "{shown}"
        );
        assert!(shown.contains(&path.display().to_string()), "{shown}");
    }
}
