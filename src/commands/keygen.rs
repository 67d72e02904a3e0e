//! `trainprov keygen`: write a fresh key pair.

use attest::keyfile::write_key_pair;
use attest::keys::{KeyAlgorithm, SigningKey};
use serde_json::json;

use crate::cli::KeygenArgs;
use crate::commands::shown;
use crate::exit::{CliError, OrInput as _};
use crate::Report;

/// Generates and writes the key pair.
pub fn run(args: &KeygenArgs) -> Result<Report, CliError> {
    let algorithm = if args.ed25519 {
        KeyAlgorithm::Ed25519
    } else {
        KeyAlgorithm::EcdsaP256
    };
    let key = SigningKey::generate(algorithm);
    let paths = write_key_pair(&args.out, &key, args.force).or_input()?;
    let public = key.public_key();
    let human = format!(
        "wrote {} (private, keep it secret) and {} (public, give it to verifiers)\nalgorithm {algorithm}, keyid {}\n",
        shown(&paths.private),
        shown(&paths.public),
        public.keyid()
    );
    let json = json!({
        "status": "ok",
        "algorithm": algorithm.name(),
        "keyid": public.keyid(),
        "private_key": paths.private,
        "public_key": paths.public,
    });
    Ok(Report::ok(human, json))
}
