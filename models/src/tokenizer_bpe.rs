//! Byte-level BPE tokenizers (Llama 3, Qwen2): from a Hugging Face `tokenizer.json`, or from a
//! GGUF `gpt2`-type vocabulary, which is turned into the equivalent tokenizer.json so both
//! formats go through the same `tokenizers` code.

use serde_json::{json, Value};
use tokenizers::Tokenizer;

use crate::loader::GgufFile;
use crate::tokenizer::{token_type, TextTokenizer};
use crate::ModelError;

/// Spellings that end a turn in the chat formats we serve; any the vocabulary has also stop
/// generation.
pub const END_OF_TURN: [&str; 5] = [
    "<|eot_id|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<end_of_turn>",
];

/// llama.cpp's pre-tokenizer regexes by `tokenizer.ggml.pre`.
fn split_regex(pre: &str) -> Option<&'static str> {
    match pre {
        "llama-bpe" | "llama3" => Some(
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ),
        "qwen2" => Some(
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ),
        _ => None,
    }
}

/// The tokenizer.json of a byte-level BPE vocabulary: `tokens` by id, `merges` as "a b",
/// special tokens (by id) matched before the BPE runs.
pub fn byte_level_json(tokens: &[String], merges: &[String], special: &[u32], pre: &str) -> Value {
    let vocab: serde_json::Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let pre_tokenizer = match split_regex(pre) {
        Some(re) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]}),
        None => {
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
        }
    };
    let added: Vec<Value> = special
        .iter()
        .map(|&id| {
            json!({"id": id, "content": tokens[id as usize], "single_word": false,
                          "lstrip": false, "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0",
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": pre == "llama-bpe" || pre == "llama3",
                  "vocab": vocab, "merges": merges}
    })
}

fn parse(json: &str, what: &str) -> Result<Tokenizer, ModelError> {
    json.parse::<Tokenizer>()
        .map_err(|e| ModelError::Tokenizer(format!("{what}: {e}")))
}

/// The `gpt2`-type tokenizer of a GGUF file (`tokenizer.ggml.tokens/merges/token_type/pre`).
pub fn from_gguf(g: &GgufFile) -> Result<TextTokenizer, ModelError> {
    let tokens = g.meta_strings("tokenizer.ggml.tokens")?;
    let merges = g.meta_strings("tokenizer.ggml.merges")?;
    let types = g.meta_i32s("tokenizer.ggml.token_type")?;
    let special: Vec<u32> = types
        .iter()
        .enumerate()
        .filter(|&(_, &t)| t == token_type::CONTROL || t == token_type::USER_DEFINED)
        .map(|(i, _)| i as u32)
        .collect();
    let pre = g.meta_str("tokenizer.ggml.pre").unwrap_or("default");
    let tk = parse(
        &byte_level_json(&tokens, &merges, &special, pre).to_string(),
        "GGUF vocabulary",
    )?;
    let eos = g.meta_usize("tokenizer.ggml.eos_token_id")? as u32;
    let bos = g
        .meta_usize("tokenizer.ggml.bos_token_id")
        .map_or(eos, |b| b as u32);
    let add_bos = g.meta_bool("tokenizer.ggml.add_bos_token").unwrap_or(false);
    Ok(TextTokenizer::from_parts(tk, bos, eos, add_bos))
}

/// The text of a special token as tokenizer_config.json writes it (a string or `{content}`).
fn token_text(v: &Value) -> Option<&str> {
    v.as_str().or_else(|| v["content"].as_str())
}

/// A Hugging Face tokenizer.json, with BOS/EOS and `add_bos_token` from tokenizer_config.json
/// (falling back to config.json's ids).
pub fn from_hf(
    json: &str,
    tokenizer_config: &Value,
    config: &Value,
) -> Result<TextTokenizer, ModelError> {
    let tk = parse(json, "tokenizer.json")?;
    let id_of = |key: &str| -> Option<u32> {
        token_text(&tokenizer_config[key])
            .and_then(|t| tk.token_to_id(t))
            .or_else(|| config[format!("{key}_id")].as_u64().map(|i| i as u32))
            .or_else(|| config[format!("{key}_id")][0].as_u64().map(|i| i as u32))
    };
    let eos = id_of("eos_token").ok_or_else(|| {
        ModelError::Tokenizer("no eos_token in tokenizer_config.json or config.json".into())
    })?;
    let bos = id_of("bos_token");
    let add_bos = tokenizer_config["add_bos_token"].as_bool().unwrap_or(false) && bos.is_some();
    Ok(TextTokenizer::from_parts(
        tk,
        bos.unwrap_or(eos),
        eos,
        add_bos,
    ))
}

/// Every id that ends generation: EOS and any end-of-turn token the vocabulary has.
pub fn stop_ids(tok: &TextTokenizer) -> Vec<u32> {
    let mut ids = vec![tok.eos_id()];
    for t in END_OF_TURN {
        if let Some(id) = tok.token_id(t) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids
}
