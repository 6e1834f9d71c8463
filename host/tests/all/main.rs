//! Integration tests: the real `ww` binary on the images `cargo xtask images` builds and on
//! small images the tests make.

mod errors;
mod fs;
mod layers;
mod process;
mod support;
