//! The `trailmark` binary: parses the command line and hands off to the library.

fn main() {
    std::process::exit(trailmark::cli::run());
}
