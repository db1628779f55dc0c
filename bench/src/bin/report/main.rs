//! Runs every benchmark against its peers, round by round, and writes `docs/benchmarks.md`
//! with its SVG charts under `docs/bench/`.
//!
//! ```text
//! bench/report.sh [--quick] [--rounds N] [--seconds S] [--out DIR] [--only SECTION,...]
//! ```
//!
//! `bench/report.sh` builds what it runs and installs fio and valgrind if they are missing,
//! then calls this binary. Sections: `echo`, `dispatch`, `timers`, `files`, `never-block`,
//! `signals`. `--quick` is the CI-sized check: one round, short runs, smaller counts, and
//! the output goes to `target/bench-quick/` unless `--out` says otherwise; with `--only`,
//! to `target/bench-partial/`, so that only a full run replaces the published figures.
//!
//! Every measured figure is the median of the rounds, with the spread (half the range, as a
//! percentage of the median) beside it; the contenders of a table run in turn within each
//! round, in an order rotated each round, so a slow spell of a shared host hits them alike.

mod dispatch;
mod echo;
mod files;
mod never_block;
mod run;
mod signals;
mod table;
mod timers;

use std::path::{Path, PathBuf};
use std::time::Instant;

use aioloop_bench::machine::Machine;

/// What every section needs: the options, where the binaries are, where output goes.
pub struct Ctx {
    pub quick: bool,
    pub rounds: usize,
    /// Seconds per timed run (echo, file reads).
    pub seconds: f64,
    /// `target/release`, where the benchmark binaries and `examples/` are.
    pub bin: PathBuf,
    /// Where the charts go (`<out>/bench`).
    pub charts: PathBuf,
    /// A scratch directory on the disk under test, for the data file.
    pub scratch: PathBuf,
    pub machine: Machine,
}

impl Ctx {
    /// A built benchmark binary or example, by name (`echo_client`, `examples/echo`).
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// Writes `svg` as `<charts>/<name>.svg` and returns the Markdown that shows it.
    pub fn chart(&self, name: &str, alt: &str, svg: String) -> String {
        let path = self.charts.join(format!("{name}.svg"));
        std::fs::write(&path, svg).unwrap_or_else(|e| panic!("cannot write {path:?}: {e}"));
        format!("![{alt}](bench/{name}.svg)\n\n")
    }

    /// The line under every table: how many rounds, and where.
    pub fn measured_on(&self) -> String {
        format!(
            "*{} round{} (median, ± half the range), on {}.*\n\n",
            self.rounds,
            if self.rounds == 1 { "" } else { "s" },
            self.machine.short()
        )
    }
}

/// One section's output: its Markdown, and its headline for the summary at the top.
pub struct Section {
    pub markdown: String,
    pub headlines: Vec<String>,
}

struct Options {
    quick: bool,
    rounds: Option<usize>,
    seconds: Option<f64>,
    out: Option<PathBuf>,
    only: Option<Vec<String>>,
}

/// A section's name (for `--only`) and the function that measures and writes it.
type Run = (&'static str, fn(&Ctx) -> Section);

const SECTIONS: [Run; 6] = [
    ("echo", echo::section),
    ("dispatch", dispatch::section),
    ("timers", timers::section),
    ("files", files::section),
    ("never-block", never_block::section),
    ("signals", signals::section),
];

const USAGE: &str = "usage: bench/report.sh [--quick] [--rounds N] [--seconds S] [--out DIR] \
                     [--only echo,dispatch,timers,files,never-block,signals]";

/// Ends the report before it starts: what was wrong, and the usage.
fn refuse(what: &str) -> ! {
    eprintln!("report: {what}\n{USAGE}");
    std::process::exit(2);
}

fn parse() -> Options {
    let mut o = Options {
        quick: false,
        rounds: None,
        seconds: None,
        out: None,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |what: &str| -> String {
            args.next()
                .unwrap_or_else(|| refuse(&format!("{arg} needs {what}")))
        };
        match arg.as_str() {
            "--quick" => o.quick = true,
            "--rounds" => match value("a number of rounds").parse() {
                Ok(n) if n > 0 => o.rounds = Some(n),
                _ => refuse("--rounds takes a whole number above 0"),
            },
            "--seconds" => match value("a time in seconds").parse() {
                Ok(s) if s >= 1.0 && f64::is_finite(s) => o.seconds = Some(s),
                _ => refuse("--seconds takes a number of seconds, at least 1"),
            },
            "--out" => o.out = Some(value("a directory").into()),
            "--only" => {
                let list: Vec<String> = value("a list of sections")
                    .split(',')
                    .map(str::to_string)
                    .collect();
                if let Some(bad) = list.iter().find(|s| SECTIONS.iter().all(|(n, _)| n != s)) {
                    refuse(&format!("unknown section {bad:?}"));
                }
                o.only = Some(list);
            }
            _ => refuse(&format!("unknown argument {arg:?}")),
        }
    }
    o
}

fn main() {
    let options = parse();
    let bin = std::env::current_exe()
        .expect("own path")
        .parent()
        .expect("target/release")
        .to_path_buf();
    // bench/report.sh says where the checkout is; the binary's own place is only a guess
    // (the target directory may live elsewhere, `CARGO_TARGET_DIR`).
    let root = std::env::var_os("AIOLOOP_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| bin.join("../.."))
        .canonicalize()
        .expect("the workspace root");
    // Only a full run replaces the published figures.
    let out = options.out.clone().unwrap_or_else(|| {
        root.join(match (options.quick, options.only.is_some()) {
            (true, _) => "target/bench-quick",
            (false, true) => "target/bench-partial",
            (false, false) => "docs",
        })
    });
    let charts = out.join("bench");
    std::fs::create_dir_all(&charts).expect("the output directory");
    let scratch = root.join("target/bench-data");
    std::fs::create_dir_all(&scratch).expect("target/bench-data");
    aioloop_bench::process::raise_fd_limit().expect("raise the fd limit");
    let ctx = Ctx {
        quick: options.quick,
        rounds: options.rounds.unwrap_or(if options.quick { 1 } else { 5 }),
        seconds: options
            .seconds
            .unwrap_or(if options.quick { 1.0 } else { 3.0 }),
        bin,
        charts,
        machine: Machine::describe(&scratch),
        scratch,
    };
    let wanted = |s: &str| {
        options
            .only
            .as_ref()
            .is_none_or(|l| l.iter().any(|x| x == s))
    };
    let started = Instant::now();
    let mut sections = Vec::new();
    for (name, run) in SECTIONS {
        if wanted(name) {
            eprintln!("report: {name}...");
            sections.push(run(&ctx));
        }
    }
    let doc = document(&ctx, &sections, started.elapsed().as_secs());
    let path = out.join("benchmarks.md");
    std::fs::write(&path, doc).unwrap_or_else(|e| panic!("cannot write {path:?}: {e}"));
    eprintln!(
        "report: wrote {} in {} s",
        path.display(),
        started.elapsed().as_secs()
    );
}

fn document(ctx: &Ctx, sections: &[Section], seconds: u64) -> String {
    let mut doc = String::from(
        "# Benchmarks\n\n\
         aioloop beside what a daemon author would pick instead, measured the same way in the \
         same run. This file and its charts are written by one command, which rebuilds what \
         it runs and takes about 15 minutes:\n\n\
         ```sh\nbench/report.sh            # everything, 5 rounds; writes docs/benchmarks.md\n\
         bench/report.sh --quick    # a CI-sized check; writes target/bench-quick/\n```\n\n\
         The peers run in their most favourable honest configuration, said under each \
         table. Servers run on CPU 0 and load clients on CPU 1; single-process benchmarks run \
         on CPU 0. The contenders of a table run in turn within each round, in an order \
         rotated by one each round, and every figure is the median of the rounds with ± \
         half their range. The host is a shared virtual \
         machine: read differences under about 10% as noise.\n\n",
    );
    doc.push_str(&format!(
        "## Machine\n\n{}- Generated: {}, in {seconds} s{}\n\n",
        ctx.machine.markdown(),
        run::today(),
        if ctx.quick { " (quick mode)" } else { "" }
    ));
    doc.push_str("## Headlines\n\n");
    for line in sections.iter().flat_map(|s| &s.headlines) {
        doc.push_str(&format!("- {line}\n"));
    }
    doc.push('\n');
    for s in sections {
        doc.push_str(&s.markdown);
    }
    doc
}

/// The data file of the file benchmarks: 1 GiB (256 MiB in quick mode) of incompressible
/// data written for real (not a hole: reading a hole costs the disk nothing) and synced.
pub fn data_file(ctx: &Ctx) -> PathBuf {
    let len: u64 = if ctx.quick { 256 << 20 } else { 1 << 30 };
    let path = ctx.scratch.join(format!("file-{}m", len >> 20));
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == len) {
        return path;
    }
    write_data(&path, len).unwrap_or_else(|e| panic!("cannot write {path:?}: {e}"));
    path
}

fn write_data(path: &Path, len: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    let mut chunk = vec![0u8; 1 << 20];
    let mut rng = 0x853c_49e6_748f_ea9bu64;
    for _ in 0..len >> 20 {
        for word in chunk.chunks_mut(8) {
            word.copy_from_slice(&aioloop_bench::xorshift(&mut rng).to_le_bytes());
        }
        file.write_all(&chunk)?;
    }
    file.sync_all()
}
