//! `ww export PATH`: add a file or directory to IPFS and print `/ipfs/<cid>`.

use std::path::PathBuf;

use miette::Report;

/// `ww export [--ipfs MULTIADDR] <PATH>`
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    ipfs: super::ipfs::IpfsArgs,

    /// The file or directory to add (a directory recursively, as `ipfs add -r`).
    #[arg(value_name = "PATH")]
    path: PathBuf,
}

/// Runs `ww export`: prints `/ipfs/<cid>` of the root on stdout.
pub fn main(args: ExportArgs) -> Result<u8, Report> {
    let ipfs = args.ipfs.connect()?;
    let cid = ipfs.add(&args.path)?;
    println!("/ipfs/{cid}");
    Ok(0)
}
