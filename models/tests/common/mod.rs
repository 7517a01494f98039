//! Test harness: drives a backend directly with hand-built step batches (greedy), so model
//! parity is tested below the scheduler.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use gridserve_models::{BlockAllocator, ModelBackend, SeqId, SeqStep, StepBatch};

/// One greedy generation: `prompt`, `max_new` tokens, joining the batch at step `join_step`.
#[derive(Clone)]
pub struct Job {
    pub id: SeqId,
    pub prompt: Vec<u32>,
    pub max_new: usize,
    pub join_step: usize,
}

struct Running {
    job: Job,
    tokens: Vec<u32>,
    computed: usize,
    table: Vec<u32>,
}

pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Runs all jobs together, each prefilled in chunks of at most `chunk` tokens; returns each
/// job's generated tokens.
pub fn run_greedy(
    backend: &mut dyn ModelBackend,
    jobs: &[Job],
    chunk: usize,
) -> BTreeMap<SeqId, Vec<u32>> {
    let info = backend.info().clone();
    let mut alloc = BlockAllocator::new(info.num_blocks, info.block_size);
    let mut running: Vec<Running> = Vec::new();
    let mut done = BTreeMap::new();
    let mut step = 0;
    while done.len() < jobs.len() {
        for job in jobs.iter().filter(|j| j.join_step == step) {
            running.push(Running {
                job: job.clone(),
                tokens: job.prompt.clone(),
                computed: 0,
                table: Vec::new(),
            });
        }
        let mut batch = StepBatch::default();
        for r in &mut running {
            let take = (r.tokens.len() - r.computed).min(chunk);
            alloc
                .grow(&mut r.table, r.computed + take)
                .expect("test KV cache too small");
            batch.seqs.push(SeqStep {
                seq: r.job.id,
                tokens: r.tokens[r.computed..r.computed + take].to_vec(),
                start_pos: r.computed,
                block_table: r.table.clone(),
                sample: r.computed + take == r.tokens.len(),
            });
            r.computed += take;
        }
        let out = backend.step(&batch).expect("step");
        for (id, logits) in out.rows() {
            let r = running.iter_mut().find(|r| r.job.id == id).unwrap();
            r.tokens.push(argmax(logits));
        }
        running.retain_mut(|r| {
            let generated = r.tokens.len() - r.job.prompt.len();
            if generated < r.job.max_new {
                return true;
            }
            done.insert(r.job.id, r.tokens[r.job.prompt.len()..].to_vec());
            alloc.free(&mut r.table);
            false
        });
        step += 1;
    }
    done
}

/// Logits after prefilling `prompt` in chunks of `chunk` tokens.
pub fn prefill_logits(backend: &mut dyn ModelBackend, prompt: &[u32], chunk: usize) -> Vec<f32> {
    let info = backend.info().clone();
    let mut alloc = BlockAllocator::new(info.num_blocks, info.block_size);
    let mut table = Vec::new();
    alloc
        .grow(&mut table, prompt.len())
        .expect("KV cache too small");
    let mut last = Vec::new();
    for start in (0..prompt.len()).step_by(chunk) {
        let end = (start + chunk).min(prompt.len());
        let batch = StepBatch {
            seqs: vec![SeqStep {
                seq: 7,
                tokens: prompt[start..end].to_vec(),
                start_pos: start,
                block_table: table.clone(),
                sample: end == prompt.len(),
            }],
        };
        if let Some((_, l)) = backend.step(&batch).expect("step").rows().last() {
            last = l.to_vec();
        }
    }
    last
}

/// The default model, installed by `scripts/setup.sh`. Real-model tests fail without it
/// (rather than silently passing) unless GRIDSERVE_SKIP_REAL_MODEL=1.
pub fn default_model_path() -> Option<PathBuf> {
    let path = std::env::var_os("GRIDSERVE_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../models-data/gemma-3-270m-q4_k_m.gguf")
        });
    if path.exists() {
        return Some(path);
    }
    if std::env::var("GRIDSERVE_SKIP_REAL_MODEL").as_deref() == Ok("1") {
        eprintln!(
            "skipping: {} is absent and GRIDSERVE_SKIP_REAL_MODEL=1",
            path.display()
        );
        return None;
    }
    panic!(
        "{} is missing: run scripts/setup.sh (or set GRIDSERVE_SKIP_REAL_MODEL=1)",
        path.display()
    );
}
