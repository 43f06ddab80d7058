//! portcullis binary: parse the command line, run it, map the result to an exit code.

/// mimalloc: fewer cycles per allocation than glibc malloc on the request path.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(portcullis::cli::main());
}
