//! The default model (Gemma 3 270M Q4_K_M), end to end: greedy output agrees with llama.cpp
//! on the same file, batching and chunking change nothing.

mod common;

use std::sync::{Mutex, OnceLock};

use common::{default_model_path, prefill_logits, run_greedy, Job};
use gridserve_models::arch::gemma3::Gemma3Config;
use gridserve_models::loader::GgufFile;
use gridserve_models::tokenizer::TextTokenizer;
use gridserve_models::{load_gguf, Device, DeviceArch, DeviceBackend, KvCacheOptions, LoadedModel};

/// One load shared by the tests of this file (loading takes a second or two).
fn model() -> Option<&'static Mutex<LoadedModel>> {
    static MODEL: OnceLock<Option<Mutex<LoadedModel>>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = default_model_path()?;
            let kv = KvCacheOptions {
                block_size: 16,
                kv_cache_bytes: 256 << 20,
                max_seq_len: Some(4096),
            };
            Some(Mutex::new(
                load_gguf(&path, &Device::Cpu, &kv, &mut |_, _| {})
                    .expect("load the default model"),
            ))
        })
        .as_ref()
}

fn greedy(m: &mut LoadedModel, text: &str, max_new: usize) -> String {
    let prompt = m.tokenizer.encode(text, true).unwrap();
    let out = run_greedy(
        &mut m.backend,
        &[Job {
            id: 0,
            prompt,
            max_new,
            join_step: 0,
        }],
        usize::MAX,
    );
    m.tokenizer.decode(&out[&0], true).unwrap()
}

/// How far (in logits) a reference token may sit below the top one. Some reference steps are
/// near-ties: after "The capital of France, Paris, is", " a" and " the" differ by 0.025 logits,
/// so the summation order of a SIMD width (AVX2 vs AVX-512 norms, attention, GELU) decides
/// greedy's pick, as it does between llama.cpp builds. A real error moves logits by far more.
const NEAR_TIE_LOGITS: f32 = 0.1;

/// Teacher-forces `prompt + continuation` (llama.cpp's greedy output on the same GGUF) and
/// checks every continuation token is the model's top pick, or within `NEAR_TIE_LOGITS` of it.
fn assert_follows_reference(m: &mut LoadedModel, prompt: &str, continuation: &str) {
    let prompt_ids = m.tokenizer.encode(prompt, true).unwrap();
    let full = m
        .tokenizer
        .encode(&format!("{prompt}{continuation}"), true)
        .unwrap();
    assert_eq!(
        &full[..prompt_ids.len()],
        &prompt_ids[..],
        "prompt tokens are a prefix"
    );
    for end in prompt_ids.len()..full.len() {
        let logits = prefill_logits(&mut m.backend, &full[..end], 512);
        let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let want = logits[full[end] as usize];
        let so_far = m
            .tokenizer
            .decode(&full[prompt_ids.len()..end], true)
            .unwrap();
        assert!(
            want >= top - NEAR_TIE_LOGITS,
            "after {prompt:?} + {so_far:?}: reference token {:?} at {want}, top logit {top}",
            m.tokenizer.decode(&full[end..=end], true).unwrap()
        );
    }
}

#[test]
fn greedy_continuations_match_llama_cpp() {
    let Some(m) = model() else { return };
    let mut m = m.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // Reference: llama.cpp on the same GGUF, greedy (see shared/design/models.md).
    assert_follows_reference(
        &mut m,
        "The capital of France",
        ", Paris, is the most visited city in the world.",
    );
    assert_follows_reference(&mut m, "Water boils at", " 100 degrees Celsius.");
    // And free-running greedy takes the same road up to the near-tie.
    let france = greedy(&mut m, "The capital of France", 12);
    assert!(france.starts_with(", Paris, is"), "got {france:?}");
    let water = greedy(&mut m, "Water boils at", 10);
    assert!(water.starts_with(" 100 degrees Celsius."), "got {water:?}");
}

/// The tensor-op backend that runs on GPUs (here on the CPU device: candle's quantized
/// matmuls and our fused ops' CPU halves) follows the same llama.cpp references.
#[test]
fn the_device_backend_follows_llama_cpp_on_the_real_model() {
    let Some(path) = default_model_path() else {
        return;
    };
    let mut file = GgufFile::open(&path).unwrap();
    let cfg = Gemma3Config::from_gguf(&file).unwrap();
    let tokenizer = TextTokenizer::from_spm_vocab(&file.spm_vocab().unwrap()).unwrap();
    let kv = KvCacheOptions {
        block_size: 16,
        kv_cache_bytes: 64 << 20,
        max_seq_len: Some(1024),
    };
    let eos = vec![tokenizer.eos_id()];
    let backend = DeviceBackend::load(
        DeviceArch::Gemma3(&cfg),
        &mut file,
        &Device::Cpu,
        "gemma".into(),
        eos,
        &kv,
    )
    .unwrap();
    let mut m = LoadedModel {
        backend: Box::new(backend),
        tokenizer,
        chat_template: None,
    };
    assert_follows_reference(
        &mut m,
        "The capital of France",
        ", Paris, is the most visited city in the world.",
    );
    assert_follows_reference(&mut m, "Water boils at", " 100 degrees Celsius.");
}

#[test]
fn batched_real_prompts_equal_one_at_a_time() {
    let Some(m) = model() else { return };
    let mut m = m.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let texts = [
        "The capital of France",
        "Water boils at",
        "Once upon a time, in a small village at the edge of a forest,",
        "def fibonacci(n):",
        "The three primary colors are",
        "In 1969, the first humans",
        "Photosynthesis is the process by which plants",
        "A haiku about the sea:",
    ];
    let joins = [0, 0, 1, 3, 4, 6, 9, 10];
    let jobs: Vec<Job> = texts
        .iter()
        .zip(joins)
        .enumerate()
        .map(|(i, (t, join_step))| Job {
            id: i as u64,
            prompt: m.tokenizer.encode(t, true).unwrap(),
            max_new: 16,
            join_step,
        })
        .collect();
    let together = run_greedy(&mut m.backend, &jobs, 6);
    for job in &jobs {
        let alone = run_greedy(
            &mut m.backend,
            &[Job {
                join_step: 0,
                ..job.clone()
            }],
            usize::MAX,
        );
        assert_eq!(
            m.tokenizer.decode(&alone[&job.id], true).unwrap(),
            m.tokenizer.decode(&together[&job.id], true).unwrap(),
            "prompt {:?}",
            texts[job.id as usize]
        );
    }
}

#[test]
fn chunked_prefill_matches_whole_prefill_on_the_real_model() {
    let Some(m) = model() else { return };
    let mut m = m.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let text = "Grid operators balance supply and demand every second of every day. ".repeat(6);
    let prompt = m.tokenizer.encode(&text, true).unwrap();
    let whole = prefill_logits(&mut m.backend, &prompt, prompt.len());
    let chunked = prefill_logits(&mut m.backend, &prompt, 13);
    // Rows are batch-invariant (see `linear`), so chunking changes nothing, to the bit.
    assert!(whole == chunked, "chunked prefill changed the logits");
}

#[test]
fn chunks_past_the_512_token_window_match_whole_prefill() {
    // Past the local layers' window, chunks that straddle it must mask exactly as one whole
    // prefill does (the window itself is checked against a dense reference in the kernels).
    let Some(m) = model() else { return };
    let mut m = m.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let text = "Power grids, batteries, transformers and turbines. ".repeat(75);
    let prompt = m.tokenizer.encode(&text, true).unwrap();
    assert!(prompt.len() > 600, "prompt of {} tokens", prompt.len());
    let whole = prefill_logits(&mut m.backend, &prompt, prompt.len());
    let stepwise = prefill_logits(&mut m.backend, &prompt, 97);
    assert!(
        whole == stepwise,
        "chunks across the window changed the logits"
    );
}
