//! Prompts to token ids: completions prompts (a string or a list of strings), chat messages
//! through the chat template, and how many tokens each may generate within the context.

use gridserve_models::chat::ChatMessage;
use serde_json::Value;

use super::error::ApiError;
use super::request::RawMessage;
use super::state::ReadyModel;

/// One prompt ready to submit.
#[derive(Clone, Debug)]
pub struct PromptJob {
    pub ids: Vec<u32>,
    pub max_tokens: usize,
}

/// Token ids of each completions prompt, in request order.
pub fn completion_prompts(
    model: &ReadyModel,
    prompt: Option<&Value>,
) -> Result<Vec<Vec<u32>>, ApiError> {
    let missing = || ApiError::invalid_param("prompt", "`prompt` is required");
    match prompt {
        None | Some(Value::Null) => Err(missing()),
        Some(Value::String(text)) => Ok(vec![encode_prompt(model, text, "prompt")?]),
        Some(Value::Array(items)) if items.is_empty() => Err(ApiError::invalid_param(
            "prompt",
            "`prompt` is an empty list",
        )),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(text) => encode_prompt(model, text, &format!("prompt[{i}]")),
                Value::Number(_) | Value::Array(_) => Err(token_ids_unsupported()),
                other => Err(ApiError::invalid_param(
                    format!("prompt[{i}]"),
                    format!("must be a string, got {other}"),
                )),
            })
            .collect(),
        Some(Value::Number(_)) => Err(token_ids_unsupported()),
        Some(other) => Err(ApiError::invalid_param(
            "prompt",
            format!("must be a string or a list of strings, got {other}"),
        )),
    }
}

fn token_ids_unsupported() -> ApiError {
    ApiError::invalid_param(
        "prompt",
        "token-id prompts are not supported; send the prompt as text",
    )
}

fn encode_prompt(model: &ReadyModel, text: &str, param: &str) -> Result<Vec<u32>, ApiError> {
    if text.is_empty() {
        return Err(ApiError::invalid_param(param, "the prompt is empty"));
    }
    let tok = &model.tokenizer;
    tok.encode(text, tok.add_bos())
        .map_err(|e| ApiError::invalid_param(param, e.to_string()))
}

/// The conversation rendered by the chat template (which writes the BOS itself), tokenized.
pub fn chat_prompt(
    model: &ReadyModel,
    messages: Option<&[RawMessage]>,
) -> Result<Vec<u32>, ApiError> {
    let messages = match messages {
        None => {
            return Err(ApiError::invalid_param(
                "messages",
                "`messages` is required",
            ))
        }
        Some([]) => {
            return Err(ApiError::invalid_param(
                "messages",
                "`messages` must not be empty",
            ))
        }
        Some(m) => m,
    };
    let messages = messages
        .iter()
        .enumerate()
        .map(|(i, m)| chat_message(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    let tok = &model.tokenizer;
    let bos = if tok.add_bos() {
        tok.id_to_piece(tok.bos_id()).unwrap_or("")
    } else {
        ""
    };
    // Template errors are the template's verdict on the conversation (e.g. roles that do not
    // alternate): the client's to fix.
    let text = model
        .chat
        .render(&messages, true, bos)
        .map_err(|e| ApiError::invalid_param("messages", e.to_string()))?;
    tok.encode(&text, false)
        .map_err(|e| ApiError::invalid_param("messages", e.to_string()))
}

fn chat_message(i: usize, m: &RawMessage) -> Result<ChatMessage, ApiError> {
    if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
        return Err(ApiError::invalid_param(
            format!("messages[{i}].role"),
            format!(
                "unsupported role `{}` (use system, user or assistant)",
                m.role
            ),
        ));
    }
    let param = format!("messages[{i}].content");
    let content = match &m.content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => text_parts(&param, parts)?,
        None | Some(Value::Null) => {
            return Err(ApiError::invalid_param(param, "`content` is required"))
        }
        Some(other) => {
            return Err(ApiError::invalid_param(
                param,
                format!("must be a string or a list of parts, got {other}"),
            ))
        }
    };
    Ok(ChatMessage::new(m.role.clone(), content))
}

/// Text parts are joined as written; other part types (images, audio) are not supported.
fn text_parts(param: &str, parts: &[Value]) -> Result<String, ApiError> {
    let mut text = String::new();
    for (k, part) in parts.iter().enumerate() {
        match (
            part.get("type").and_then(Value::as_str),
            part.get("text").and_then(Value::as_str),
        ) {
            (Some("text"), Some(t)) => text.push_str(t),
            (Some("text"), None) => {
                return Err(ApiError::invalid_param(
                    format!("{param}[{k}].text"),
                    "a text part needs a string `text`",
                ))
            }
            (kind, _) => {
                let kind = kind.unwrap_or("(missing)");
                return Err(ApiError::invalid_param(
                    format!("{param}[{k}].type"),
                    format!("unsupported content part type `{kind}`; only `text` is supported"),
                ));
            }
        }
    }
    Ok(text)
}

/// Tokens to generate for a prompt of `prompt_len` within `limit`. `requested` is the client's
/// `max_tokens`; without one, `default` (completions) or, when that is `None`, the whole rest
/// of the context (chat). `what` names the prompt in the error ("prompt" or "messages").
pub fn completion_budget(
    limit: usize,
    prompt_len: usize,
    requested: Option<usize>,
    default: Option<usize>,
    what: &str,
) -> Result<usize, ApiError> {
    let room = limit.saturating_sub(prompt_len);
    match requested {
        // A default only fills what is left: the client asked for nothing specific.
        None if room > 0 => Ok(default.map_or(room, |d| d.min(room))),
        None => Err(ApiError::context_length(limit, prompt_len, 1, what)),
        Some(c) if c <= room => Ok(c),
        Some(c) => Err(ApiError::context_length(limit, prompt_len, c, what)),
    }
}

#[cfg(test)]
mod tests {
    use super::completion_budget;

    #[test]
    fn budget_fits_the_context() {
        assert_eq!(
            completion_budget(64, 10, Some(54), None, "prompt").unwrap(),
            54
        );
        assert!(completion_budget(64, 10, Some(55), None, "prompt").is_err());
        assert_eq!(
            completion_budget(64, 10, None, Some(16), "prompt").unwrap(),
            16
        );
        assert_eq!(
            completion_budget(64, 60, None, Some(16), "prompt").unwrap(),
            4
        );
        assert_eq!(
            completion_budget(64, 10, None, None, "messages").unwrap(),
            54
        );
        let e = completion_budget(64, 64, None, None, "messages").unwrap_err();
        assert_eq!(e.code, Some("context_length_exceeded"));
        assert!(completion_budget(64, 1, Some(usize::MAX), None, "prompt").is_err());
    }
}
