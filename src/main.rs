fn main() -> std::process::ExitCode {
    sandbox_admission::cli::run()
}
