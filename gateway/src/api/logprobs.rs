//! Log-probabilities as clients see them: token strings for ids, and the two OpenAI shapes
//! (legacy completions `{tokens, token_logprobs, top_logprobs, text_offset}` and chat
//! `{"content": [{token, logprob, bytes, top_logprobs}]}`).

use gridserve_models::tokenizer::TextTokenizer;
use serde_json::{json, Map, Value};

use crate::engine::TokenEvent;

/// OpenAI reports an impossible token as -9999 rather than -inf (JSON has no infinities).
const FLOOR: f32 = -9999.0;

#[derive(Clone, Debug, PartialEq)]
pub struct TokenText {
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// One generated token with its alternatives.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenInfo {
    pub sampled: TokenText,
    pub top: Vec<TokenText>,
    /// Where the token's text starts in the choice's generated text (bytes).
    pub text_offset: usize,
}

impl TokenInfo {
    pub fn new(tok: &TextTokenizer, event: &TokenEvent, text_offset: usize) -> Self {
        Self {
            sampled: token_text(tok, event.token, event.logprob),
            top: event
                .top
                .iter()
                .map(|t| token_text(tok, t.token, t.logprob))
                .collect(),
            text_offset,
        }
    }
}

/// A token's own text. Byte-fallback pieces (`<0xE2>`) keep their piece name, since a lone
/// byte of a multi-byte character has no text; `bytes` then holds the raw byte.
fn token_text(tok: &TextTokenizer, id: u32, logprob: f32) -> TokenText {
    let logprob = if logprob.is_finite() {
        logprob.max(FLOOR)
    } else {
        FLOOR
    };
    if let Some(byte) = tok.id_to_piece(id).and_then(byte_piece) {
        let token = tok.id_to_piece(id).unwrap_or_default().to_owned();
        return TokenText {
            token,
            bytes: vec![byte],
            logprob,
        };
    }
    let token = tok
        .decode(&[id], false)
        .unwrap_or_else(|_| tok.id_to_piece(id).unwrap_or_default().to_owned());
    TokenText {
        bytes: token.as_bytes().to_vec(),
        token,
        logprob,
    }
}

/// The byte of a SentencePiece byte-fallback piece such as `<0x0A>`.
fn byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// The legacy completions shape. `top_logprobs` maps token text to logprob, so alternatives
/// that decode to the same text collapse into one entry, as on OpenAI.
pub fn completion_json(tokens: &[TokenInfo]) -> Value {
    let top: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let mut map = Map::new();
            for alt in &t.top {
                map.entry(alt.token.clone())
                    .or_insert_with(|| json!(alt.logprob));
            }
            Value::Object(map)
        })
        .collect();
    json!({
        "tokens": tokens.iter().map(|t| t.sampled.token.as_str()).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.sampled.logprob).collect::<Vec<_>>(),
        "top_logprobs": top,
        "text_offset": tokens.iter().map(|t| t.text_offset).collect::<Vec<_>>(),
    })
}

/// The chat shape.
pub fn chat_json(tokens: &[TokenInfo]) -> Value {
    let entry = |t: &TokenText| json!({"token": t.token, "logprob": t.logprob, "bytes": t.bytes});
    let content: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let mut v = entry(&t.sampled);
            v["top_logprobs"] = Value::Array(t.top.iter().map(entry).collect());
            v
        })
        .collect();
    json!({ "content": content })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(token: &str, logprob: f32, top: &[(&str, f32)], text_offset: usize) -> TokenInfo {
        let text = |t: &str, lp: f32| TokenText {
            token: t.into(),
            bytes: t.as_bytes().to_vec(),
            logprob: lp,
        };
        TokenInfo {
            sampled: text(token, logprob),
            top: top.iter().map(|&(t, lp)| text(t, lp)).collect(),
            text_offset,
        }
    }

    #[test]
    fn both_shapes() {
        let tokens = [
            info("b", -0.5, &[("b", -0.5), ("c", -1.0)], 0),
            info("c", -0.25, &[], 1),
        ];
        let legacy = completion_json(&tokens);
        assert_eq!(legacy["tokens"], json!(["b", "c"]));
        assert_eq!(legacy["token_logprobs"], json!([-0.5, -0.25]));
        assert_eq!(legacy["top_logprobs"], json!([{"b": -0.5, "c": -1.0}, {}]));
        assert_eq!(legacy["text_offset"], json!([0, 1]));
        let chat = chat_json(&tokens[..1]);
        assert_eq!(
            chat,
            json!({"content": [{"token": "b", "logprob": -0.5, "bytes": [98], "top_logprobs": [
                {"token": "b", "logprob": -0.5, "bytes": [98]}, {"token": "c", "logprob": -1.0, "bytes": [99]}]}]})
        );
    }

    #[test]
    fn byte_pieces_parse() {
        assert_eq!(byte_piece("<0x0A>"), Some(10));
        assert_eq!(
            (byte_piece("<0x>"), byte_piece("a"), byte_piece("<0xZZ>")),
            (None, None, None)
        );
    }
}
