//! The `strata` binary: node agent and CLI in one. The work lives in the library.

fn main() -> std::process::ExitCode {
    agent::cli::main()
}
