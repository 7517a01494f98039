//! The prompts of a `bench serve` run: random token ids (vLLM's `random`), a ShareGPT file, a
//! custom JSON-lines file, or a timed CSV trace, each turned into text plus a `max_tokens`.

use std::path::Path;

use gridserve_models::loader::read_spm_vocab;
use gridserve_models::tokenizer::TextTokenizer;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

use super::args::{BenchServeArgs, DatasetName};
use crate::engine::Priority;
use crate::GatewayError;

/// One request to send.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRequest {
    pub prompt: String,
    /// The prompt's length by the benchmark's tokenizer (None without one); the server's usage
    /// figure replaces it when the server sends one.
    pub prompt_len: Option<usize>,
    /// Sent as `max_tokens`.
    pub output_len: usize,
    /// A trace's arrival time, seconds from the start.
    pub arrival_s: Option<f64>,
    /// A trace's priority column.
    pub tier: Option<Priority>,
}

/// Loads the tokenizer of a GGUF file (≈ 1 s for Gemma's 262k pieces).
pub fn load_tokenizer(path: &Path) -> Result<TextTokenizer, GatewayError> {
    let fail = |e: gridserve_models::ModelError| {
        GatewayError::Bench(format!(
            "loading the tokenizer from {} (give one with --tokenizer FILE.gguf): {e}",
            path.display()
        ))
    };
    TextTokenizer::from_spm_vocab(&read_spm_vocab(path).map_err(fail)?).map_err(fail)
}

/// Whether `name` needs a tokenizer to build its prompts.
pub fn needs_tokenizer(name: DatasetName) -> bool {
    !matches!(name, DatasetName::Custom)
}

/// The run's requests, `args.num_prompts` of them (fewer only for a shorter trace).
pub fn sample(
    args: &BenchServeArgs,
    tokenizer: Option<&TextTokenizer>,
) -> Result<Vec<SampleRequest>, GatewayError> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let need_tok =
        || tokenizer.ok_or_else(|| GatewayError::Bench("this dataset needs a tokenizer".into()));
    let path = || {
        args.dataset_path
            .as_deref()
            .ok_or_else(|| GatewayError::InvalidRequest {
                param: "dataset-path",
                message: format!(
                    "--dataset-name {:?} needs --dataset-path",
                    args.dataset_name
                ),
            })
    };
    let requests = match args.dataset_name {
        DatasetName::Random => random(args, need_tok()?, &mut rng)?,
        DatasetName::Sharegpt => sharegpt(path()?, args, need_tok()?, &mut rng)?,
        DatasetName::Custom => custom(path()?, args, tokenizer)?,
        DatasetName::Trace => trace(path()?, args, need_tok()?, &mut rng)?,
    };
    if requests.is_empty() {
        return Err(GatewayError::Bench("the dataset gave no requests".into()));
    }
    Ok(requests)
}

/// Token ids a random prompt may use: no control pieces (`<…>`, which include byte tokens,
/// `<bos>` and the chat markers), so the text re-tokenizes to about the same length.
fn plain_ids(tok: &TextTokenizer) -> Vec<u32> {
    (0..tok.vocab_size() as u32)
        .filter(|&id| {
            tok.id_to_piece(id)
                .is_some_and(|p| !(p.is_empty() || p.starts_with('<') && p.ends_with('>')))
        })
        .collect()
}

/// Text of exactly `len` tokens by `tok` (re-tokenizing decoded random ids can merge pieces, so
/// the ids are topped up and cut until the round trip has the length).
fn random_text(
    tok: &TextTokenizer,
    ids: &[u32],
    len: usize,
    rng: &mut StdRng,
) -> Result<(String, usize), GatewayError> {
    let err = |e: gridserve_models::ModelError| GatewayError::Bench(format!("tokenizer: {e}"));
    let mut tokens: Vec<u32> = (0..len)
        .map(|_| ids[rng.random_range(0..ids.len())])
        .collect();
    for _ in 0..4 {
        let text = tok.decode(&tokens, true).map_err(err)?;
        let again = tok.encode(&text, false).map_err(err)?;
        if again.len() == len {
            return Ok((text, len));
        }
        tokens = again;
        tokens.truncate(len);
        while tokens.len() < len {
            tokens.push(ids[rng.random_range(0..ids.len())]);
        }
    }
    let text = tok.decode(&tokens, true).map_err(err)?;
    let n = tok.encode(&text, false).map_err(err)?.len();
    Ok((text, n))
}

/// A length drawn uniformly from `[len (1 − r), len (1 + r)]`, at least 1.
fn jitter(len: usize, ratio: f64, rng: &mut StdRng) -> usize {
    let lo = ((len as f64) * (1.0 - ratio)).floor().max(1.0) as usize;
    let hi = ((len as f64) * (1.0 + ratio)).ceil().max(lo as f64) as usize;
    rng.random_range(lo..=hi)
}

fn random(
    args: &BenchServeArgs,
    tok: &TextTokenizer,
    rng: &mut StdRng,
) -> Result<Vec<SampleRequest>, GatewayError> {
    if !(0.0..1.0).contains(&args.random_range_ratio) || args.random_input_len == 0 {
        return Err(GatewayError::InvalidRequest {
            param: "random-range-ratio",
            message: "needs 0 <= --random-range-ratio < 1 and --random-input-len >= 1".into(),
        });
    }
    let ids = plain_ids(tok);
    (0..args.num_prompts)
        .map(|_| {
            let input = jitter(args.random_input_len, args.random_range_ratio, rng);
            let output = jitter(args.random_output_len, args.random_range_ratio, rng);
            let (prompt, n) = random_text(tok, &ids, input, rng)?;
            Ok(SampleRequest {
                prompt,
                prompt_len: Some(n),
                output_len: output,
                arrival_s: None,
                tier: None,
            })
        })
        .collect()
}

#[derive(Deserialize)]
struct ShareGptConversation {
    #[serde(default)]
    conversations: Vec<ShareGptTurn>,
}

#[derive(Deserialize)]
struct ShareGptTurn {
    value: String,
}

/// vLLM's ShareGPT sampling: conversations with two turns or more, shuffled by the seed; the
/// first turn is the prompt and the second's length the output length; pairs too short (< 4
/// tokens) or too long (prompt > 1024, both > 2048) are skipped.
fn sharegpt(
    path: &Path,
    args: &BenchServeArgs,
    tok: &TextTokenizer,
    rng: &mut StdRng,
) -> Result<Vec<SampleRequest>, GatewayError> {
    let text = read(path)?;
    let mut convs: Vec<ShareGptConversation> = serde_json::from_str(&text).map_err(|e| {
        GatewayError::Bench(format!("{}: not a ShareGPT JSON list: {e}", path.display()))
    })?;
    convs.retain(|c| c.conversations.len() >= 2);
    convs.shuffle(rng);
    let count = |s: &str| {
        tok.encode(s, false)
            .map(|ids| ids.len())
            .map_err(|e| GatewayError::Bench(format!("tokenizer: {e}")))
    };
    let mut out = Vec::new();
    for c in convs {
        if out.len() == args.num_prompts {
            break;
        }
        let (prompt, reply) = (&c.conversations[0].value, &c.conversations[1].value);
        let prompt_len = count(prompt)?;
        let output_len = match args.output_len {
            Some(n) => n,
            None => count(reply)?,
        };
        let too_short = prompt_len < 4 || (args.output_len.is_none() && output_len < 4);
        if too_short || prompt_len > 1024 || prompt_len + output_len > 2048 {
            continue;
        }
        out.push(SampleRequest {
            prompt: prompt.clone(),
            prompt_len: Some(prompt_len),
            output_len,
            arrival_s: None,
            tier: None,
        });
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomRow {
    prompt: String,
    #[serde(default)]
    output_tokens: Option<usize>,
}

/// JSON lines `{"prompt": "…", "output_tokens": 64}` (`output_tokens` optional: `--output-len`,
/// else `--random-output-len`); rows are reused in order when `--num-prompts` asks for more.
fn custom(
    path: &Path,
    args: &BenchServeArgs,
    tok: Option<&TextTokenizer>,
) -> Result<Vec<SampleRequest>, GatewayError> {
    let text = read(path)?;
    let mut rows = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let row: CustomRow = serde_json::from_str(line)
            .map_err(|e| GatewayError::Bench(format!("{} line {}: {e}", path.display(), i + 1)))?;
        let output_len = row
            .output_tokens
            .or(args.output_len)
            .unwrap_or(args.random_output_len);
        let prompt_len = tok.and_then(|t| t.encode(&row.prompt, false).ok().map(|v| v.len()));
        rows.push(SampleRequest {
            prompt: row.prompt,
            prompt_len,
            output_len,
            arrival_s: None,
            tier: None,
        });
    }
    Ok(rows
        .iter()
        .cycle()
        .take(args.num_prompts)
        .cloned()
        .collect())
}

/// The simulator's trace format (`arrival_seconds,prompt_tokens,output_tokens[,priority]`):
/// random prompts of the given lengths, sent at the given times; the priority column (when
/// present) is the request's tier.
fn trace(
    path: &Path,
    args: &BenchServeArgs,
    tok: &TextTokenizer,
    rng: &mut StdRng,
) -> Result<Vec<SampleRequest>, GatewayError> {
    let has_priority = read(path)?
        .lines()
        .next()
        .is_some_and(|header| header.split(',').count() >= 4);
    let rows = crate::sim::arrivals::read_trace(path, usize::MAX / 2)?;
    let ids = plain_ids(tok);
    rows.into_iter()
        .take(args.num_prompts)
        .map(|row| {
            let (prompt, n) = random_text(tok, &ids, row.prompt_tokens, rng)?;
            Ok(SampleRequest {
                prompt,
                prompt_len: Some(n),
                output_len: row.output_tokens,
                arrival_s: Some(row.at_seconds),
                tier: has_priority.then_some(row.priority),
            })
        })
        .collect()
}

fn read(path: &Path) -> Result<String, GatewayError> {
    std::fs::read_to_string(path)
        .map_err(|e| GatewayError::Bench(format!("reading {}: {e}", path.display())))
}

#[cfg(test)]
#[path = "dataset_tests.rs"]
mod tests;
