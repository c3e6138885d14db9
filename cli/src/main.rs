fn main() {
    std::process::exit(layerctl::main_entry());
}
