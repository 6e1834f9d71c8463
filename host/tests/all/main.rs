//! Integration tests: the real `ww` binary on the images `cargo xtask images` builds and on
//! small images the tests make.

mod attack;
mod boot;
mod cache;
mod errors;
mod executor;
mod fds;
mod fs;
mod ipfs;
mod layers;
mod limits;
mod native;
mod net;
mod process;
mod rpc;
mod support;
