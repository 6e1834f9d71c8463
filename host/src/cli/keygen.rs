//! `ww keygen PATH`: a new node identity.

use std::path::PathBuf;

use miette::Report;

/// `ww keygen <PATH>`
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the key (ed25519, libp2p's protobuf encoding, mode 0600). An existing
    /// file is never overwritten.
    #[arg(value_name = "PATH")]
    path: PathBuf,
}

/// Writes a new key and prints its peer id.
pub fn main(args: KeygenArgs) -> Result<u8, Report> {
    let keypair = ww::net::identity::create(&args.path)?;
    println!("{}", keypair.public().to_peer_id());
    Ok(0)
}
