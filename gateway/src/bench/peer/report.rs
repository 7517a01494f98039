//! The peer comparison's report: machine facts, the ratio table as aligned markdown, and the
//! `peer.json` / `peer.md` files.

use std::path::Path;

use serde::Serialize;

use super::figures::{Figure, Measured};
use crate::GatewayError;

/// Where the numbers were taken.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    pub cores: usize,
    /// Threads both engines were given.
    pub threads: usize,
    /// /proc/loadavg before and after: other work on the cores makes every figure noisy.
    pub load_avg_start: String,
    pub load_avg_end: String,
}

impl Machine {
    pub fn probe(threads: usize) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Machine {
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            threads,
            load_avg_start: load_avg(),
            load_avg_end: String::new(),
        }
    }
}

/// The first `model name` line's value.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// The three load averages from /proc/loadavg.
pub fn load_avg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Serialize)]
pub struct PeerReport {
    /// The command line that produced this report.
    pub command: String,
    pub machine: Machine,
    pub model: String,
    pub llama_bin: String,
    /// Every llama.cpp command run, in order.
    pub peer_commands: Vec<String>,
    pub figures: Vec<Figure>,
    pub notes: Vec<String>,
    pub wall_s: f64,
    /// The raw measurements behind the figures.
    pub measured: Measured,
}

/// The table: figure | llama.cpp | gridserve | ratio | target | met?, padded so it reads in a
/// terminal and is still a markdown table.
pub fn render_table(figures: &[Figure]) -> String {
    let header = [
        "figure (tok/s)",
        "llama.cpp",
        "gridserve",
        "ratio",
        "target",
        "met?",
    ];
    let mut rows = vec![header.map(String::from).to_vec()];
    for f in figures {
        let met = match f.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        rows.push(vec![
            f.figure.clone(),
            tokens_per_s_cell(f.peer_tokens_per_s),
            tokens_per_s_cell(f.gridserve_tokens_per_s),
            f.ratio.map_or_else(|| "-".into(), |r| format!("{r:.2}x")),
            format!(">= {:.1}x", f.target_ratio),
            met.into(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            // The figure name reads left-aligned, the numbers right-aligned.
            .map(|(c, (s, &w))| {
                if c == 0 {
                    format!("{s:<w$}")
                } else {
                    format!("{s:>w$}")
                }
            })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(&rows[0]);
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(c, &w)| {
            if c == 0 {
                "-".repeat(w)
            } else {
                format!("{}:", "-".repeat(w - 1))
            }
        })
        .collect();
    out.push_str(&line(&rule));
    for r in &rows[1..] {
        out.push_str(&line(r));
    }
    out
}

fn tokens_per_s_cell(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

/// The whole report as markdown: what ran where, the table, the sources and notes.
pub fn render_markdown(r: &PeerReport) -> String {
    let m = &r.machine;
    let mut out = String::from("# gridserve vs llama.cpp\n\n");
    out.push_str(&format!("Command: `{}`\n\n", r.command));
    out.push_str(&format!(
        "Machine: {} ({} cores), {} threads each; load average {} at the start, {} at the end. \
         Model: `{}`. llama.cpp: `{}`. Wall time {:.0} s.\n\n",
        m.cpu_model,
        m.cores,
        m.threads,
        m.load_avg_start,
        m.load_avg_end,
        r.model,
        r.llama_bin,
        r.wall_s
    ));
    out.push_str(&render_table(&r.figures));
    out.push_str("\nllama.cpp sources:\n");
    for f in &r.figures {
        let note = f.note.as_ref().map_or(String::new(), |n| format!(" ({n})"));
        out.push_str(&format!("- {}: {}{note}\n", f.figure, f.peer_source));
    }
    if !r.notes.is_empty() {
        out.push_str("\nNotes:\n");
        for n in &r.notes {
            out.push_str(&format!("- {n}\n"));
        }
    }
    out.push_str("\nllama.cpp commands:\n");
    for c in &r.peer_commands {
        out.push_str(&format!("- `{c}`\n"));
    }
    out
}

/// Writes `peer.json` and `peer.md` into `dir`.
pub fn write(dir: &Path, r: &PeerReport) -> Result<(), GatewayError> {
    let fail = |p: &Path, e: String| GatewayError::Bench(format!("writing {}: {e}", p.display()));
    let json = serde_json::to_string_pretty(r).map_err(|e| GatewayError::Bench(e.to_string()))?;
    let json_path = dir.join("peer.json");
    std::fs::write(&json_path, json).map_err(|e| fail(&json_path, e.to_string()))?;
    let md_path = dir.join("peer.md");
    std::fs::write(&md_path, render_markdown(r)).map_err(|e| fail(&md_path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_model_comes_from_the_first_model_name() {
        let text = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t: avx\n\
                    model name\t: other\n";
        assert_eq!(
            cpu_model(text).as_deref(),
            Some("Intel(R) Xeon(R) Processor")
        );
        assert_eq!(cpu_model("flags: avx"), None);
    }

    #[test]
    fn table_is_aligned_markdown_with_ratios_and_verdicts() {
        let mut failed = Figure::new("HTTP, 4 clients", "llama-server", Some(100.0), None, 1.2);
        failed.note = Some("failed requests".into());
        let figures = vec![
            Figure::new(
                "prefill, 128-token prompt",
                "pp128",
                Some(562.04),
                Some(330.0),
                1.0,
            ),
            Figure::new(
                "aggregate decode, batch 4",
                "S_TG",
                Some(100.0),
                Some(125.0),
                1.2,
            ),
            failed,
        ];
        let table = render_table(&figures);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].starts_with("| figure (tok/s) "));
        assert!(lines[1].starts_with("| ----") && lines[1].ends_with(": |"));
        assert!(lines[2].contains(" 562.0 |") && lines[2].contains("| 0.59x |"));
        assert!(lines[2].contains(">= 1.0x") && lines[2].ends_with("|   NO |"));
        assert!(lines[3].contains("1.25x") && lines[3].ends_with("|  yes |"));
        assert!(lines[4].contains("|     - |") && lines[4].ends_with("|    - |"));
        let width = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == width), "{table}");
    }

    #[test]
    fn markdown_carries_command_machine_sources_and_notes() {
        let r = PeerReport {
            command: "gridserve bench peer --skip-http".into(),
            machine: Machine {
                cpu_model: "Xeon".into(),
                cores: 2,
                threads: 2,
                load_avg_start: "0.5 0.4 0.3".into(),
                load_avg_end: "2.0 1.0 0.5".into(),
            },
            model: "m.gguf".into(),
            llama_bin: "/bin".into(),
            peer_commands: vec!["llama-bench -m m.gguf".into()],
            figures: vec![Figure::new(
                "decode, batch 1",
                "llama-bench tg64",
                Some(1.0),
                Some(2.0),
                1.0,
            )],
            notes: vec!["prompts: 68 tokens".into()],
            wall_s: 12.0,
            measured: Measured::default(),
        };
        let md = render_markdown(&r);
        assert!(md.contains("`gridserve bench peer --skip-http`"));
        assert!(md.contains("Xeon (2 cores), 2 threads each"));
        assert!(md.contains("- decode, batch 1: llama-bench tg64"));
        assert!(md.contains("- prompts: 68 tokens"));
        assert!(md.contains("- `llama-bench -m m.gguf`"));
    }
}
