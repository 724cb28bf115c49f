//! The `keygate` binary.

/// mimalloc rather than the system allocator: the request path allocates many small, short-lived
/// objects (headers, futures), where glibc's malloc showed up at ~9% of a profile under load. Its
/// `override` feature (Cargo.toml) makes it C's `malloc` too, so SQLite allocates from it as well:
/// glibc's malloc was ~7% of a profile of cold verifications on SQLite (its page cache and
/// statements), and cold misses on one core went from ~17 000 to ~20 000 a second (200 000
/// credentials stored, `bench/cold-verify`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    keygate_server::cli::main()
}
