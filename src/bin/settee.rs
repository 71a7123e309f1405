//! The `settee` binary: everything lives in the library's `cli` module, so
//! this file only hands over to it.

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    settee::cli::main()
}
