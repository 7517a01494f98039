//! `gridserve generate`: one prompt through the real engine loop, text to stdout, timing to
//! stderr.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use gridserve::config::Config;
use gridserve::engine::{run_until_idle, GenerationRequest, Priority, Scheduler, SeqEvent};
use gridserve::model::ServedModel;
use gridserve_models::chat::ChatMessage;
use gridserve_models::sampling::SamplingParams;
use gridserve_models::stop::{StopMatcher, StopOutcome};
use gridserve_models::tokenizer::DecodeStream;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// The prompt text (a user message with --chat).
    #[arg(long)]
    prompt: String,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
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
    /// Stop when the completion contains this text (repeatable); it is not printed.
    #[arg(long)]
    stop: Vec<String>,
}

pub fn run(config: &Config, args: &GenerateArgs) -> anyhow::Result<()> {
    let mut served = gridserve::model::load(&config.model, &config.engine)
        .with_context(|| format!("loading {}", config.model.path.display()))?;
    let request = build_request(&served, args)?;
    let prompt_tokens = request.prompt.len();
    tracing::debug!(tokens = ?request.prompt, "prompt");
    let backend = served.loaded.backend.as_mut();
    let mut sched = Scheduler::new(backend.info());
    sched.add(0, request, Instant::now())?;
    let mut stream = DecodeStream::new(&served.loaded.tokenizer, true);
    let mut stops = StopMatcher::new(args.stop.clone());
    let mut out = TextOut {
        stdout: std::io::stdout().lock(),
        error: None,
    };
    let mut timing = Timing::default();
    run_until_idle(
        backend,
        &mut sched,
        config.engine.step_budget,
        |stats, events| {
            timing.add_step(stats.duration);
            for event in events {
                let SeqEvent::Token { sampled, seq } = event else {
                    continue;
                };
                timing.generated += 1;
                let text = match stream.push(sampled.token) {
                    Ok(Some(text)) => text,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!("detokenizing: {e}");
                        continue;
                    }
                };
                match stops.push(&text) {
                    StopOutcome::Continue(t) => out.write(&t),
                    StopOutcome::Stopped(t) => {
                        out.write(&t);
                        return vec![seq];
                    }
                }
            }
            Vec::new()
        },
    )?;
    out.write(&stops.flush());
    out.write("\n");
    if let Some(e) = out.error {
        return Err(e).context("writing to stdout");
    }
    timing.report(served.load_time, prompt_tokens);
    Ok(())
}

fn build_request(served: &ServedModel, args: &GenerateArgs) -> anyhow::Result<GenerationRequest> {
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
    Ok(GenerationRequest {
        prompt,
        sampling,
        max_tokens: args.max_tokens,
        stop_token_ids: Vec::new(),
        ignore_eos: args.ignore_eos,
        priority: Priority::Interactive,
    })
}

/// Prompt time is every step up to the first sampled token; decode time is the rest.
#[derive(Default)]
struct Timing {
    prefill: Duration,
    decode: Duration,
    generated: usize,
}

impl Timing {
    fn add_step(&mut self, d: Duration) {
        if self.generated == 0 {
            self.prefill += d
        } else {
            self.decode += d
        }
    }

    fn report(&self, load: Duration, prompt_tokens: usize) {
        let rate = |n: usize, d: Duration| {
            if d.is_zero() {
                0.0
            } else {
                n as f64 / d.as_secs_f64()
            }
        };
        let decoded = self.generated.saturating_sub(1);
        eprintln!(
            "load {:.2} s | prompt {prompt_tokens} tokens in {:.1} ms ({:.1} tok/s) | decode {decoded} tokens in {:.1} ms ({:.1} tok/s)",
            load.as_secs_f64(),
            self.prefill.as_secs_f64() * 1e3,
            rate(prompt_tokens, self.prefill),
            self.decode.as_secs_f64() * 1e3,
            rate(decoded, self.decode),
        );
    }
}

/// Stdout that keeps the first write error instead of failing mid-step.
struct TextOut<W: Write> {
    stdout: W,
    error: Option<std::io::Error>,
}

impl<W: Write> TextOut<W> {
    fn write(&mut self, text: &str) {
        if self.error.is_none() {
            self.error = write!(self.stdout, "{text}")
                .and_then(|_| self.stdout.flush())
                .err();
        }
    }
}
