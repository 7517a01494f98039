//! The device backend (tensor ops + our fused ops, the code that runs on a GPU) on the CPU
//! device, against the slice-based CPU backend: same tiny Gemma 3, same steps (prefill chunks,
//! decode, a sliding window exceeded), same logits within quantization noise. With the `cuda`
//! feature and a GPU, the same comparison runs on `cuda:0`.

use candle_core::Device;
use gridserve_models::testing::{
    tiny_backend, tiny_gemma3_config, tiny_gemma3_weights, tiny_kv_options,
};
use gridserve_models::{
    BlockAllocator, DeviceArch, DeviceBackend, ModelBackend, SeqStep, StepBatch,
};

fn device_gemma(device: &Device, num_blocks: usize) -> DeviceBackend {
    let cfg = tiny_gemma3_config();
    let opts = tiny_kv_options(num_blocks);
    let mut w = tiny_gemma3_weights(5).unwrap();
    DeviceBackend::load(
        DeviceArch::Gemma3(&cfg),
        &mut w,
        device,
        "tiny".into(),
        vec![1],
        &opts,
    )
    .unwrap()
}

/// Runs the same schedule on a backend: three sequences, prompts fed in chunks of 3, then
/// decode steps feeding back a fixed token; returns every sampled row of every step.
fn schedule(backend: &mut dyn ModelBackend) -> Vec<Vec<f32>> {
    let info = backend.info().clone();
    let mut alloc = BlockAllocator::new(info.num_blocks, info.block_size);
    let prompts: Vec<Vec<u32>> = vec![(1..12).collect(), vec![40, 41], (50..58).collect()];
    let mut tables = vec![Vec::new(); 3];
    let mut pos = [0usize; 3];
    let mut rows = Vec::new();
    for step in 0..8 {
        let mut batch = StepBatch::default();
        for (i, p) in prompts.iter().enumerate() {
            let tokens: Vec<u32> = if pos[i] < p.len() {
                p[pos[i]..(pos[i] + 3).min(p.len())].to_vec()
            } else {
                vec![(7 * step + i as u32) % 90 + 2]
            };
            alloc.grow(&mut tables[i], pos[i] + tokens.len()).unwrap();
            let end = pos[i] + tokens.len();
            batch.seqs.push(SeqStep {
                seq: i as u64,
                sample: end >= p.len(),
                tokens,
                start_pos: pos[i],
                block_table: tables[i].clone(),
            });
            pos[i] = end;
        }
        for (_, row) in backend.step(&batch).unwrap().rows() {
            rows.push(row.to_vec());
        }
    }
    rows
}

fn compare(device: &Device) {
    let mut cpu = tiny_backend(5, 64).unwrap();
    let mut dev = device_gemma(device, 64);
    let (want, got) = (schedule(&mut cpu), schedule(&mut dev));
    assert_eq!(want.len(), got.len());
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        let scale = w.iter().fold(1f32, |m, x| m.max(x.abs()));
        let diff = w
            .iter()
            .zip(g)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // Both quantize activations to Q8_0 for the Q8_0 weights, in different kernels.
        assert!(
            diff < 2e-2 * scale,
            "row {i}: max |diff| {diff} (scale {scale})"
        );
        let argmax = |v: &[f32]| {
            v.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
        };
        assert_eq!(argmax(w), argmax(g), "row {i}: greedy token");
    }
}

#[test]
fn device_backend_on_the_cpu_matches_the_cpu_backend() {
    compare(&Device::Cpu);
}

#[test]
#[cfg_attr(not(feature = "cuda"), ignore = "built without the `cuda` feature")]
fn device_backend_on_cuda_matches_the_cpu_backend() {
    match gridserve_models::device::test_cuda_device() {
        Ok(dev) => compare(&dev),
        Err(why) => println!("SKIPPED device_backend_on_cuda: no CUDA device ({why})"),
    }
}

#[test]
fn a_bad_batch_is_an_error_and_the_backend_keeps_working() {
    let mut dev = device_gemma(&Device::Cpu, 8);
    let bad = StepBatch {
        seqs: vec![SeqStep {
            seq: 0,
            tokens: vec![5],
            start_pos: 0,
            block_table: vec![99],
            sample: true,
        }],
    };
    assert!(dev.step(&bad).is_err());
    let ok = StepBatch {
        seqs: vec![SeqStep {
            seq: 0,
            tokens: vec![5, 6],
            start_pos: 0,
            block_table: vec![0],
            sample: true,
        }],
    };
    assert_eq!(dev.step(&ok).unwrap().len(), 1);
}
