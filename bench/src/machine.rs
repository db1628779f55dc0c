//! What machine a run is on, for the heading of every table.

use std::path::Path;
use std::process::Command;

/// The facts a reader needs to weigh the figures.
pub struct Machine {
    /// The CPU model, from `/proc/cpuinfo`.
    pub cpu: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Total memory in GiB.
    pub memory_gib: f64,
    /// `uname -r`.
    pub kernel: String,
    /// The file system type and its device, where the benchmark's data file lives.
    pub file_system: String,
    /// `rustc -V`.
    pub rustc: String,
    /// Whether a hypervisor runs it (the `hypervisor` CPU flag).
    pub virtual_machine: bool,
}

fn first_line_with(text: &str, key: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

impl Machine {
    /// Describes this machine; `data` is where the file benchmarks keep their file.
    pub fn describe(data: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = first_line_with(&meminfo, "MemTotal")
            .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let data = data.to_string_lossy();
        Machine {
            cpu: first_line_with(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into()),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: mem_kib / (1024.0 * 1024.0),
            kernel: output("uname", &["-r"]),
            file_system: output("df", &["--output=fstype,source", &data])
                .lines()
                .nth(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" on "))
                .unwrap_or_default(),
            rustc: output("rustc", &["-V"]),
            virtual_machine: first_line_with(&cpuinfo, "flags")
                .is_some_and(|f| f.split(' ').any(|x| x == "hypervisor")),
        }
    }

    /// One line for under a table: CPUs, kernel, file system.
    pub fn short(&self) -> String {
        format!(
            "{} × {}{}, Linux {}, {}",
            self.cpus,
            self.cpu,
            if self.virtual_machine { " (VM)" } else { "" },
            self.kernel,
            self.file_system
        )
    }

    /// A Markdown list of every fact.
    pub fn markdown(&self) -> String {
        format!(
            "- CPU: {} × {}{}\n- Memory: {:.0} GiB\n- Kernel: Linux {}\n\
             - Data file system: {}\n- Compiler: {}\n",
            self.cpus,
            self.cpu,
            if self.virtual_machine {
                ", a virtual machine (other tenants can steal time)"
            } else {
                ""
            },
            self.memory_gib,
            self.kernel,
            self.file_system,
            self.rustc
        )
    }
}
