//! The `settee` binary: everything lives in the library's `cli` module, so
//! this file only hands over to it.

fn main() -> std::process::ExitCode {
    settee::cli::main()
}
