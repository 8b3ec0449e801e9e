//! The `uvlan` binary: see `uvlan --help`.

fn main() {
    std::process::exit(uvlan_control::cli::main());
}
