//! The `keygate` binary.

fn main() -> std::process::ExitCode {
    keygate_server::cli::main()
}
