use gridserve_models::sampling::{Sampler, SamplingParams};
fn main() {
    let mut s = 1u64;
    let row: Vec<f32> = (0..262_144)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 40_000) as f32 / 1000.0 - 30.0
        })
        .collect();
    let mut sm = Sampler::new(SamplingParams::greedy());
    for _ in 0..3 {
        let t = std::time::Instant::now();
        for _ in 0..100 {
            std::hint::black_box(sm.sample(std::hint::black_box(&row)));
        }
        println!("greedy sample: {:.3} ms", t.elapsed().as_secs_f64() * 10.0);
    }
}
