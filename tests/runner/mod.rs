//! The runner of the test binaries that must not have libtest's threads (`harness = false`):
//! runs each named test in this thread, prints libtest's lines (so CI reads the closing one),
//! and exits 101 if any failed. Arguments that do not start with `-` filter by name.

/// Runs the `tests` whose names contain any filter argument (all without one).
pub fn run(tests: &[(&str, fn())]) {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected: Vec<_> = tests
        .iter()
        .filter(|(name, _)| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests", selected.len());
    let mut failed = Vec::new();
    for (name, test) in &selected {
        let ok = std::panic::catch_unwind(test).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed.push(*name);
        }
    }
    let verdict = if failed.is_empty() { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {verdict}. {} passed; {} failed; 0 ignored; 0 measured; {} filtered out\n",
        selected.len() - failed.len(),
        failed.len(),
        tests.len() - selected.len()
    );
    if !failed.is_empty() {
        std::process::exit(101);
    }
}
