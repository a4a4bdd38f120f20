//! `troupe keygen`: a new cluster key (src/cluster_key.rs), written to a file or printed.

use crate::exit_code::Exit;
use std::path::Path;
use std::process::ExitCode;
use troupe::cluster_key::{write_new, ClusterKey};

/// Writes a new key to `out` (mode 0600; an existing file is left alone: it may be the key a
/// cluster runs on) or, without `out`, prints its line on stdout for a secret store. The
/// fingerprint goes to stdout with `out`, to stderr without (so stdout is the key alone).
pub fn run(out: Option<&Path>) -> ExitCode {
    let key = match ClusterKey::generate() {
        Ok(key) => key,
        Err(e) => {
            eprintln!("troupe keygen: no random bytes from the system: {e}");
            return Exit::Usage.into();
        }
    };
    let Some(path) = out else {
        println!("{}", key.to_line());
        eprintln!("fingerprint {}", key.fingerprint());
        return Exit::Ok.into();
    };
    match write_new(path, &key) {
        Ok(()) => {
            println!(
                "wrote {} (mode 0600), fingerprint {}\ncopy it to every node: \
                 <state_dir>/cluster.key, [agent] key_file or TROUPE_KEY_FILE",
                path.display(),
                key.fingerprint()
            );
            Exit::Ok.into()
        }
        Err(e) => {
            eprintln!(
                "troupe keygen: {e} (to rotate, add the new key's line to the keyring instead)"
            );
            Exit::Usage.into()
        }
    }
}
