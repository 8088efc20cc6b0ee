mod cli;
pub mod common;
mod flow;
mod hostile;
mod relay;
mod rfb;
mod vnc;
