fn main() {
    eprintln!("uvlan: not built yet");
    std::process::exit(1);
}
