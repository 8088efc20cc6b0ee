mod harness;
mod limits;
mod loading;
mod modules;
mod network;
mod sandbox;
mod supervisor;
