//! `outpost`: the command-line front of the host library. No logic lives here.

fn main() -> std::process::ExitCode {
    outpost_host::cli::main()
}
