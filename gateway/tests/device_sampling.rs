//! The engine's scheduler driving the device backend (the code that runs on a GPU, here on the
//! CPU device): it samples on the device every row it may (only the token and its logprob come
//! back), and gives the same answers as sampling those logits on the host.

use std::time::Instant;

use gridserve::engine::{
    run_until_idle, GenerationRequest, Priority, Scheduler, SeqEvent, StepBudget,
};
use gridserve_models::safetensors::{llama_config, HfCheckpoint};
use gridserve_models::sampling::SamplingParams;
use gridserve_models::testing::llama;
use gridserve_models::{
    BackendInfo, Device, DeviceArch, DeviceBackend, KvCacheOptions, ModelBackend, ModelError,
    StepBatch, StepOutput,
};

/// A tiny Llama with an untied output head (logits spread over the vocabulary, so sampling
/// at temperature 1 is not greedy), loaded as a GPU would load it, on the CPU device.
fn device_llama() -> DeviceBackend {
    let dir = tempfile::tempdir().unwrap();
    let weights = llama::weights(3, false, false);
    llama::write_checkpoint(dir.path(), "llama", &weights, false);
    let mut ckpt = HfCheckpoint::open(dir.path()).unwrap();
    let cfg = llama_config(&ckpt.config).unwrap();
    let opts = KvCacheOptions {
        block_size: 4,
        kv_cache_bytes: 1 << 20,
        max_seq_len: None,
    };
    let arch = DeviceArch::Llama(&cfg);
    DeviceBackend::load(
        arch,
        &mut ckpt.weights,
        &Device::Cpu,
        "tiny".into(),
        vec![],
        &opts,
    )
    .unwrap()
}

/// The same backend with its device sampler hidden: every row's logits go to the host.
struct HostSampled(DeviceBackend);

impl ModelBackend for HostSampled {
    fn info(&self) -> &BackendInfo {
        self.0.info()
    }

    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, ModelError> {
        self.0.step(batch)
    }
}

/// Counts the rows each step returned as logits and as device samples.
struct Counting<B> {
    inner: B,
    logit_rows: usize,
    device_rows: usize,
}

impl<B: ModelBackend> ModelBackend for Counting<B> {
    fn info(&self) -> &BackendInfo {
        self.inner.info()
    }

    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, ModelError> {
        self.inner.step(batch)
    }

    fn samples_on_device(&self) -> bool {
        self.inner.samples_on_device()
    }

    fn step_sampling(
        &mut self,
        batch: &StepBatch,
        sampling: &[(u64, gridserve_models::SampleRow)],
    ) -> Result<StepOutput, ModelError> {
        let out = self.inner.step_sampling(batch, sampling)?;
        self.logit_rows += out.rows().count();
        self.device_rows += out.sampled().len();
        Ok(out)
    }
}

fn request(prompt: Vec<u32>, sampling: SamplingParams) -> GenerationRequest {
    GenerationRequest {
        prompt,
        sampling,
        max_tokens: 8,
        stop_token_ids: vec![],
        ignore_eos: true,
        priority: Priority::Standard,
    }
}

/// Runs `requests` together; returns each one's (token, logprob)s and the counts.
fn generate<B: ModelBackend>(
    backend: B,
    requests: &[GenerationRequest],
) -> (Vec<Vec<(u32, f32)>>, usize, usize) {
    let mut backend = Counting {
        inner: backend,
        logit_rows: 0,
        device_rows: 0,
    };
    let mut sched = Scheduler::new(backend.info());
    for (i, r) in requests.iter().enumerate() {
        sched.add(i as u64, r.clone(), Instant::now()).unwrap();
    }
    let mut out = vec![Vec::new(); requests.len()];
    let budget = StepBudget {
        max_tokens: 16,
        max_seqs: 8,
    };
    run_until_idle(&mut backend, &mut sched, budget, |_, events| {
        for e in events {
            if let SeqEvent::Token { seq, sampled } = e {
                out[seq as usize].push((sampled.token, sampled.logprob));
            }
        }
        Vec::new()
    })
    .unwrap();
    (out, backend.logit_rows, backend.device_rows)
}

#[test]
fn the_device_sampler_gives_the_host_samplers_greedy_answers_without_the_logits() {
    let requests: Vec<GenerationRequest> = [vec![1, 2, 3, 4, 5, 6, 7], vec![40, 41], vec![9; 11]]
        .into_iter()
        .map(|p| request(p, SamplingParams::greedy()))
        .collect();
    let (on_device, logit_rows, device_rows) = generate(device_llama(), &requests);
    assert_eq!(
        (logit_rows, device_rows),
        (0, 24),
        "every row sampled on the device"
    );
    let distinct: std::collections::HashSet<u32> =
        on_device.iter().flatten().map(|t| t.0).collect();
    assert!(
        distinct.len() > 3,
        "a model that says more than one thing: {on_device:?}"
    );
    let (on_host, logit_rows, _) = generate(HostSampled(device_llama()), &requests);
    assert_eq!(logit_rows, 24);
    for (d, h) in on_device.iter().zip(&on_host) {
        let tokens = |v: &[(u32, f32)]| v.iter().map(|t| t.0).collect::<Vec<_>>();
        assert_eq!(tokens(d), tokens(h));
        for (a, b) in d.iter().zip(h) {
            assert!((a.1 - b.1).abs() < 1e-4, "logprobs {a:?} vs {b:?}");
        }
    }
}

#[test]
fn seeded_sampling_on_the_device_repeats_and_top_logprobs_fall_back_to_the_host() {
    let seeded = SamplingParams {
        temperature: 1.0,
        top_k: Some(20),
        top_p: 0.9,
        seed: Some(11),
        ..SamplingParams::default()
    };
    let with_top = SamplingParams {
        logprobs: Some(2),
        ..SamplingParams::greedy()
    };
    let requests = [
        request(vec![3, 4, 5], seeded),
        request(vec![6, 7], with_top),
    ];
    let (first, logit_rows, device_rows) = generate(device_llama(), &requests);
    assert_eq!(
        (logit_rows, device_rows),
        (8, 8),
        "top logprobs need the host"
    );
    let (again, _, _) = generate(device_llama(), &requests);
    assert_eq!(first, again, "a seed repeats on the same device");
    let distinct: std::collections::HashSet<u32> = first[0].iter().map(|t| t.0).collect();
    assert!(
        distinct.len() > 1,
        "temperature 1 should not be greedy: {first:?}"
    );
}
