//! `cargo xtask`: the project's build and test driver. The work lives in the library.

fn main() -> std::process::ExitCode {
    xtask::main()
}
