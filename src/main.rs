/// mimalloc instead of glibc malloc: a review is parsed into a tree of small JSON values and freed
/// right after, and regorus allocates per evaluation; glibc's malloc/free/consolidate were a
/// quarter of the server's CPU under load (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sandbox_admission::cli::run()
}
