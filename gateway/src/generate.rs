//! `gridserve generate`: one prompt through the real engine loop, text to stdout, timing to
//! stderr.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use gridserve::config::Config;
use gridserve::engine::{run_until_idle, GenerationRequest, Priority, Scheduler, SeqEvent};
use gridserve_models::chat::ChatMessage;
use gridserve_models::sampling::SamplingParams;
use gridserve_models::tokenizer::DecodeStream;
use gridserve_models::ModelBackend;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// The prompt text (a user message with --chat).
    #[arg(long)]
    prompt: String,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Keep only the k most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Random seed; the same seed gives the same output.
    #[arg(long)]
    seed: Option<u64>,
    /// Format the prompt as a user turn with the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Keep generating past end-of-sequence.
    #[arg(long)]
    ignore_eos: bool,
}

pub fn run(config: &Config, args: &GenerateArgs) -> anyhow::Result<()> {
    let mut served = gridserve::model::load(&config.model, &config.engine)
        .with_context(|| format!("loading {}", config.model.path.display()))?;
    let prompt = if args.chat {
        served.encode_chat(&[ChatMessage {
            role: "user".into(),
            content: args.prompt.clone(),
        }])?
    } else {
        served.encode_prompt(&args.prompt)?
    };
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        seed: args.seed,
        ..SamplingParams::default()
    };
    sampling.validate()?;
    let request = GenerationRequest {
        prompt: prompt.clone(),
        sampling,
        max_tokens: args.max_tokens,
        stop_token_ids: Vec::new(),
        ignore_eos: args.ignore_eos,
        priority: Priority::Interactive,
    };
    let backend = &mut served.loaded.backend;
    let mut sched = Scheduler::new(backend.info());
    sched.add(0, request, Instant::now())?;
    let tokenizer = &served.loaded.tokenizer;
    let mut stream = DecodeStream::new(tokenizer, true);
    let mut stdout = std::io::stdout().lock();
    let (mut prefill, mut decode, mut generated) = (Duration::ZERO, Duration::ZERO, 0usize);
    let mut write_err = None;
    run_until_idle(
        backend,
        &mut sched,
        config.engine.step_budget,
        |stats, events| {
            if generated == 0 {
                prefill += stats.duration
            } else {
                decode += stats.duration
            }
            for event in events {
                if let SeqEvent::Token { sampled, .. } = event {
                    generated += 1;
                    match stream.push(sampled.token) {
                        Ok(Some(text)) => {
                            write_err = write_err
                                .take()
                                .or(write!(stdout, "{text}").and_then(|_| stdout.flush()).err())
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!("detokenizing: {e}"),
                    }
                }
            }
            Vec::new()
        },
    )?;
    writeln!(stdout)?;
    if let Some(e) = write_err {
        return Err(e).context("writing to stdout");
    }
    report(served.load_time, prompt.len(), prefill, generated, decode);
    Ok(())
}

fn report(
    load: Duration,
    prompt_tokens: usize,
    prefill: Duration,
    generated: usize,
    decode: Duration,
) {
    let rate = |n: usize, d: Duration| {
        if d.is_zero() {
            0.0
        } else {
            n as f64 / d.as_secs_f64()
        }
    };
    eprintln!(
        "load {:.2} s | prompt {prompt_tokens} tokens in {:.1} ms ({:.1} tok/s) | decode {} tokens in {:.1} ms ({:.1} tok/s)",
        load.as_secs_f64(),
        prefill.as_secs_f64() * 1e3,
        rate(prompt_tokens, prefill),
        generated.saturating_sub(1),
        decode.as_secs_f64() * 1e3,
        rate(generated.saturating_sub(1), decode),
    );
}
