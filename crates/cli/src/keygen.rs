//! `liaison keygen`: a party's signing key from the operating system's randomness.

use std::path::PathBuf;

use anyhow::{Context, bail};
use liaison_core::ids::PartyId;
use liaison_core::signing::PartyKey;

use crate::Exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The party, e.g. `ROK`.
    #[arg(long)]
    party: String,
    /// Directory to write `PARTY.key` (secret) and `PARTY.pub` into.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    let party = PartyId::new(&args.party).map_err(|e| anyhow::anyhow!("--party: {e}"))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create `{}`", args.out.display()))?;
    let secret = args.out.join(format!("{party}.key"));
    if secret.exists() {
        bail!(
            "`{}` already exists; refusing to overwrite a key",
            secret.display()
        );
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| anyhow::anyhow!("no randomness from the operating system: {e}"))?;
    let key = PartyKey::from_seed(party.clone(), seed);
    write_secret(&secret, &key.to_file())?;
    let public = args.out.join(format!("{party}.pub"));
    std::fs::write(&public, format!("{}\n", key.public()))?;
    println!(
        "wrote {} (secret) and {}",
        secret.display(),
        public.display()
    );
    println!("public key of {party}: {}", key.public());
    Ok(Exit::Ok)
}

fn write_secret(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create `{}`", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}
