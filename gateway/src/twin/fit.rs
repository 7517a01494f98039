//! `gridserve twin fit`: fits a GPU profile to rows measured on a real GPU (written by
//! `scripts/gpu-acceptance.sh`) and writes it as a new `config/gpus/<name>.toml` — the same
//! coordinate descent as the ML.ENERGY calibration, with the measured workload instead of
//! lm-arena-chat. This is how the twin becomes measured rather than derived.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::calibrate::{descend, loss, profile_knobs, Fit};
use super::profile::GpuProfile;
use super::shape::ModelShape;
use super::validate::{format_table_vs, run_row_with, PromptMix, Reference, RowResult};
use super::workload::SteadyWorkload;
use crate::GatewayError;

/// What the acceptance script measured: one model, a fixed prompt and output length, and
/// one row per batch size at default clocks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measured {
    /// The GPU as `nvidia-smi` names it.
    pub gpu_name: String,
    /// A model shape under `config/models/` (e.g. `llama-3.1-8b`).
    pub model: String,
    pub prompt_tokens: f64,
    pub output_tokens: f64,
    pub rows: Vec<MeasuredRow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasuredRow {
    pub running_seqs: u32,
    pub power_watts: f64,
    pub output_tokens_per_second: f64,
    pub median_itl_seconds: f64,
}

#[derive(clap::Args)]
pub struct FitArgs {
    /// The measurements (JSON, as scripts/gpu-acceptance.sh writes them).
    #[arg(long)]
    pub measured: PathBuf,
    /// The profile to start from, under config/gpus/ (the nearest known GPU).
    #[arg(long, default_value = "h100-sxm")]
    pub base: String,
    /// Name of the new profile; written to config/gpus/<name>.toml unless --out is given.
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Most coordinate-descent sweeps.
    #[arg(long, default_value_t = 100)]
    pub sweeps: usize,
}

impl Measured {
    fn references(&self) -> Vec<Reference> {
        // Reference names its model with a static string (the published rows are constants);
        // a CLI run fits once, so leaking one short name is the simple way to reuse it.
        let model: &'static str = Box::leak(self.model.clone().into_boxed_str());
        self.rows
            .iter()
            .map(|r| Reference {
                model,
                tensor_parallel: 1,
                max_num_seqs: r.running_seqs,
                running_seqs: r.running_seqs,
                power_watts_per_gpu: r.power_watts,
                output_tokens_per_second: r.output_tokens_per_second,
                median_itl_seconds: r.median_itl_seconds,
            })
            .collect()
    }

    fn workload(&self, running_seqs: u32) -> SteadyWorkload {
        SteadyWorkload {
            running_seqs,
            mean_prompt_tokens: self.prompt_tokens,
            prompt_log_sigma: 0.0,
            mean_output_tokens: self.output_tokens,
            max_step_tokens: 8192,
        }
    }

    fn validate(&self) -> Result<(), GatewayError> {
        let bad = |why: &str| Err(GatewayError::Config(format!("measurements: {why}")));
        if self.rows.is_empty() {
            return bad("no rows");
        }
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !positive(self.prompt_tokens) || !positive(self.output_tokens) {
            return bad("prompt_tokens and output_tokens must be positive");
        }
        for r in &self.rows {
            let ok = r.running_seqs > 0
                && positive(r.power_watts)
                && positive(r.output_tokens_per_second)
                && positive(r.median_itl_seconds);
            if !ok {
                return bad(&format!(
                    "row with batch {} has a non-positive value",
                    r.running_seqs
                ));
            }
        }
        Ok(())
    }
}

/// Fits `base` to the measurements; returns the fitted profile, its loss and per-row results.
pub fn fit_measured(
    base: GpuProfile,
    shape: &ModelShape,
    measured: &Measured,
    sweeps: usize,
) -> Result<(GpuProfile, f64, Vec<RowResult>), GatewayError> {
    measured.validate()?;
    let refs = measured.references();
    let rows = |p: &GpuProfile| -> Vec<RowResult> {
        refs.iter()
            .map(|&r| run_row_with(p, shape, r, measured.workload(r.running_seqs)))
            .collect()
    };
    // The mix is not fitted here (the workload is known); it only fills the struct.
    let start = Fit {
        profile: base,
        mix: PromptMix {
            mean_prompt_tokens: measured.prompt_tokens,
            prompt_log_sigma: 0.0,
        },
    };
    let (fitted, fitted_loss) =
        descend(start, profile_knobs(), sweeps, |f| loss(&rows(&f.profile)));
    let results = rows(&fitted.profile);
    Ok((fitted.profile, fitted_loss, results))
}

/// The base profile's TOML with the fitted constants, the new name and a header saying where
/// the numbers came from; comments and layout are kept.
pub fn render_profile(base_toml: &str, name: &str, fitted: &GpuProfile, header: &str) -> String {
    let mut fit = Fit {
        profile: fitted.clone(),
        mix: PromptMix {
            mean_prompt_tokens: 0.0,
            prompt_log_sigma: 0.0,
        },
    };
    let values: Vec<(&str, f64)> = profile_knobs()
        .iter()
        .map(|&(key, knob, _, _)| (key, *knob(&mut fit)))
        .collect();
    let mut out: String = header.lines().map(|l| format!("# {l}\n")).collect();
    for line in base_toml.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        let replaced = if key == "name" {
            Some(format!("name = {name:?}"))
        } else {
            values
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(k, v)| format!("{k} = {v:e}"))
        };
        out.push_str(replaced.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

pub fn run_cli(config_file: &Path, args: &FitArgs) -> Result<(), GatewayError> {
    let config_dir = config_file.parent().unwrap_or(Path::new("."));
    let gpus = config_dir.join("gpus");
    let text = std::fs::read_to_string(&args.measured)
        .map_err(|e| GatewayError::Config(format!("{}: {e}", args.measured.display())))?;
    let measured: Measured = serde_json::from_str(&text)
        .map_err(|e| GatewayError::Config(format!("{}: {e}", args.measured.display())))?;
    let base_path = gpus.join(format!("{}.toml", args.base));
    let base_toml = std::fs::read_to_string(&base_path)
        .map_err(|e| GatewayError::Config(format!("{}: {e}", base_path.display())))?;
    let base = GpuProfile::parse(&base_toml)?;
    let shape = ModelShape::load_named(&config_dir.join("models"), &measured.model)?;
    let (fitted, fitted_loss, results) = fit_measured(base, &shape, &measured, args.sweeps)?;
    let source = format!("{} on {}", args.measured.display(), measured.gpu_name);
    let table = format_table_vs(&args.name, &source, &results);
    println!("{table}");
    let header = format!(
        "{} ({}), fitted by `gridserve twin fit` to {} (base: {}, loss {fitted_loss:.4}).\n\
         Fit error per measured row:\n{table}",
        args.name,
        measured.gpu_name,
        args.measured.display(),
        args.base
    );
    let rendered = render_profile(&base_toml, &args.name, &fitted, &header);
    GpuProfile::parse(&rendered)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| gpus.join(format!("{}.toml", args.name)));
    std::fs::write(&out, rendered)
        .map_err(|e| GatewayError::Config(format!("{}: {e}", out.display())))?;
    println!("wrote {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twin::validate::format_table;

    fn config_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config")
    }

    /// Rows "measured" on a GPU that is an H100 with slower memory: the fit starts from the
    /// stock H100 profile (which misses them) and must land every row within tolerance.
    #[test]
    fn fitting_recovers_rows_from_a_different_gpu_and_writes_a_loadable_profile() {
        let dir = config_dir();
        let base_toml = std::fs::read_to_string(dir.join("gpus/h100-sxm.toml")).unwrap();
        let base = GpuProfile::parse(&base_toml).unwrap();
        let shape = ModelShape::load_named(&dir.join("models"), "llama-3.1-8b").unwrap();
        let mut truth = base.clone();
        truth.model.memory_efficiency *= 0.8;
        truth.model.active_watts *= 0.85;
        let mut measured = Measured {
            gpu_name: "test GPU".into(),
            model: "llama-3.1-8b".into(),
            prompt_tokens: 128.0,
            output_tokens: 64.0,
            rows: Vec::new(),
        };
        for batch in [1, 8, 32] {
            let r = Reference {
                model: "llama-3.1-8b",
                tensor_parallel: 1,
                max_num_seqs: batch,
                running_seqs: batch,
                power_watts_per_gpu: 1.0,
                output_tokens_per_second: 1.0,
                median_itl_seconds: 1.0,
            };
            let t = run_row_with(&truth, &shape, r, measured.workload(batch));
            measured.rows.push(MeasuredRow {
                running_seqs: batch,
                power_watts: t.twin_power_watts_per_gpu,
                output_tokens_per_second: t.twin_output_tokens_per_second,
                median_itl_seconds: t.twin_median_itl_seconds,
            });
        }
        let (_, _, before) = fit_measured(base.clone(), &shape, &measured, 0).unwrap();
        assert!(
            before.iter().any(|r| !r.pass),
            "the stock profile should miss these rows"
        );
        let (fitted, _, after) = fit_measured(base, &shape, &measured, 30).unwrap();
        assert!(
            after.iter().all(|r| r.pass),
            "{}",
            format_table("fitted", &after)
        );
        let text = render_profile(&base_toml, "test-gpu", &fitted, "header line");
        let back = GpuProfile::parse(&text).unwrap();
        assert!(text.starts_with("# header line\n"));
        assert!(text.contains("name = \"test-gpu\""));
        assert!((back.model.memory_efficiency - fitted.model.memory_efficiency).abs() < 1e-9);
    }

    #[test]
    fn measurements_without_rows_or_with_zeros_are_refused() {
        let shape = ModelShape::load_named(&config_dir().join("models"), "llama-3.1-8b").unwrap();
        let base = GpuProfile::load_named(&config_dir().join("gpus"), "h100-sxm").unwrap();
        let mut m = Measured {
            gpu_name: "x".into(),
            model: "llama-3.1-8b".into(),
            prompt_tokens: 128.0,
            output_tokens: 64.0,
            rows: Vec::new(),
        };
        assert!(fit_measured(base.clone(), &shape, &m, 1).is_err());
        m.rows.push(MeasuredRow {
            running_seqs: 4,
            power_watts: 0.0,
            output_tokens_per_second: 100.0,
            median_itl_seconds: 0.01,
        });
        let err = fit_measured(base, &shape, &m, 1).err().unwrap().to_string();
        assert!(err.contains("batch 4"), "{err}");
    }
}
