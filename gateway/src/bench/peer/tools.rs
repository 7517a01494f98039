//! llama.cpp's command-line benchmarks (`llama-bench`, `llama-batched-bench`): their arguments
//! for the peer table and running them with their output kept next to the report.

use std::path::Path;
use std::process::Command;

use super::process::{command_line, run_tool};
use crate::GatewayError;

/// Prompt length of the prefill and batched-decode figures, and tokens generated per sequence.
pub const PREFILL_TOKENS: usize = 128;
pub const DECODE_TOKENS: usize = 64;

/// llama.cpp's command-line tools, run on the same model and threads.
pub struct Tools<'a> {
    pub bin: &'a Path,
    pub model: &'a Path,
    pub threads: usize,
    pub out: &'a Path,
}

impl Tools<'_> {
    /// `pp128` and `tg64`, as JSON.
    pub fn llama_bench_args(&self, reps: usize) -> Vec<String> {
        self.with_common(&[
            ("-p", PREFILL_TOKENS.to_string()),
            ("-n", DECODE_TOKENS.to_string()),
            ("-r", reps.to_string()),
            ("-o", "json".into()),
        ])
    }

    /// Every batch size in one run, as JSON lines; context for the largest batch's prompts and
    /// outputs, plus a margin.
    pub fn batched_bench_args(&self, batch_sizes: &[usize]) -> Vec<String> {
        let largest = batch_sizes.iter().copied().max().unwrap_or(1);
        let context = largest * (PREFILL_TOKENS + DECODE_TOKENS) + 256;
        let sizes: Vec<String> = batch_sizes.iter().map(usize::to_string).collect();
        self.with_common(&[
            ("-c", context.to_string()),
            ("-npp", PREFILL_TOKENS.to_string()),
            ("-ntg", DECODE_TOKENS.to_string()),
            ("-npl", sizes.join(",")),
            ("--output-format", "jsonl".into()),
        ])
    }

    /// `-m MODEL -t THREADS`, then `flags`.
    fn with_common(&self, flags: &[(&str, String)]) -> Vec<String> {
        let mut args = vec![
            "-m".to_string(),
            self.model.display().to_string(),
            "-t".to_string(),
            self.threads.to_string(),
        ];
        for (flag, value) in flags {
            args.push(flag.to_string());
            args.push(value.clone());
        }
        args
    }

    /// Runs `name` to its end; its stdout is kept as `<out>/<name>.out`, stderr as `.log`.
    pub fn run(
        &self,
        name: &str,
        args: &[String],
        commands: &mut Vec<String>,
    ) -> Result<String, GatewayError> {
        let mut cmd = Command::new(self.bin.join(name));
        cmd.args(args);
        let line = command_line(&cmd);
        tracing::info!("peer: {line}");
        commands.push(line);
        let stdout = run_tool(name, &mut cmd, Some(&self.out.join(format!("{name}.log"))))?;
        let raw = self.out.join(format!("{name}.out"));
        std::fs::write(&raw, &stdout)
            .map_err(|e| GatewayError::Bench(format!("writing {}: {e}", raw.display())))?;
        Ok(stdout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_arguments_match_the_issue() {
        let tools = Tools {
            bin: Path::new("/b"),
            model: Path::new("/m.gguf"),
            threads: 2,
            out: Path::new("/o"),
        };
        assert_eq!(
            tools.llama_bench_args(5).join(" "),
            "-m /m.gguf -t 2 -p 128 -n 64 -r 5 -o json"
        );
        assert_eq!(
            tools.batched_bench_args(&[4, 8, 16]).join(" "),
            "-m /m.gguf -t 2 -c 3328 -npp 128 -ntg 64 -npl 4,8,16 --output-format jsonl"
        );
    }
}
