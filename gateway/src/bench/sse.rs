//! Reading a streamed completion: an incremental server-sent-events parser and the one-chunk
//! parser that pulls out what the HTTP benchmark measures (text present, usage counts).

use serde_json::Value;

pub(super) fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// What the benchmark needs from one streamed completion chunk.
#[derive(Debug, Default, PartialEq)]
pub(super) struct ChunkInfo {
    /// A choice carries non-empty text.
    pub content: bool,
    pub prompt_tokens: Option<usize>,
    pub completion_tokens: Option<usize>,
    /// gridserve's `usage.energy_joules` and `usage.energy_source`.
    pub energy_joules: Option<f64>,
    pub energy_source: Option<String>,
}

/// Parses one SSE `data` payload of a streamed completion: `None` for `[DONE]`, `Err` for an
/// error event or malformed JSON.
pub(super) fn parse_chunk(data: &str) -> Result<Option<ChunkInfo>, String> {
    let data = data.trim();
    if data == "[DONE]" {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(data)
        .map_err(|e| format!("bad chunk {:?}: {e}", truncate(data, 200)))?;
    if let Some(err) = v.get("error") {
        let message = err["message"]
            .as_str()
            .map_or_else(|| err.to_string(), str::to_string);
        return Err(format!("error event: {}", truncate(&message, 300)));
    }
    let content = v["choices"].as_array().is_some_and(|choices| {
        choices.iter().any(|c| {
            c["text"]
                .as_str()
                .or_else(|| c["delta"]["content"].as_str())
                .is_some_and(|t| !t.is_empty())
        })
    });
    let count = |key: &str| v["usage"][key].as_u64().map(|n| n as usize);
    Ok(Some(ChunkInfo {
        content,
        prompt_tokens: count("prompt_tokens"),
        completion_tokens: count("completion_tokens"),
        energy_joules: v["usage"]["energy_joules"].as_f64(),
        energy_source: v["usage"]["energy_source"].as_str().map(str::to_string),
    }))
}

/// An incremental server-sent-events parser that yields each event's `data` (multi-line data
/// joined with `\n`); comments and other fields are skipped.
#[derive(Debug, Default)]
pub(super) struct SseParser {
    buf: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    /// Feeds received bytes; returns the data of every event they complete.
    pub(super) fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(len) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let mut line = &self.buf[start..start + len];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            let line = String::from_utf8_lossy(line).into_owned();
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
            start += len + 1;
        }
        self.buf.drain(..start);
        events
    }

    /// At the end of the stream: the last event's data if no blank line followed it.
    pub(super) fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        let line = String::from_utf8_lossy(&rest).into_owned();
        let line = line.trim_end_matches('\r');
        if !line.is_empty() {
            let _ = self.line(line);
        }
        self.data.take()
    }

    fn line(&mut self, line: &str) -> Option<String> {
        if line.is_empty() {
            return self.data.take();
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        if field == "data" {
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_reads() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: {\"a\"").is_empty());
        assert!(p.push(b":1}\n").is_empty());
        assert_eq!(p.push(b"\ndata: [DONE]\n\n"), vec!["{\"a\":1}", "[DONE]"]);
        assert_eq!(p.finish(), None);
    }

    #[test]
    fn sse_handles_crlf_comments_fields_and_multiline_data() {
        let mut p = SseParser::default();
        let events = p.push(
            b": keep-alive\r\n\r\nevent: message\r\nid: 3\r\ndata: one\r\ndata:two\r\n\r\ndata: x\n",
        );
        assert_eq!(events, vec!["one\ntwo"]);
        // A final event without the blank line after it.
        assert_eq!(p.finish().as_deref(), Some("x"));
        let mut p = SseParser::default();
        assert!(p.push(b"data: [DONE]").is_empty());
        assert_eq!(p.finish().as_deref(), Some("[DONE]"));
    }

    #[test]
    fn chunks_are_read_for_content_usage_and_errors() {
        assert_eq!(parse_chunk(" [DONE] "), Ok(None));
        let text = r#"{"object":"text_completion","choices":[{"index":0,"text":" Paris","finish_reason":null}]}"#;
        assert_eq!(
            parse_chunk(text),
            Ok(Some(ChunkInfo {
                content: true,
                ..ChunkInfo::default()
            }))
        );
        let empty = r#"{"choices":[{"index":0,"text":"","finish_reason":"length"}]}"#;
        assert_eq!(parse_chunk(empty), Ok(Some(ChunkInfo::default())));
        let chat = r#"{"choices":[{"index":0,"delta":{"content":"hi"}}]}"#;
        assert!(parse_chunk(chat).unwrap().unwrap().content);
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":65,"completion_tokens":64,"total_tokens":129}}"#;
        assert_eq!(
            parse_chunk(usage),
            Ok(Some(ChunkInfo {
                content: false,
                prompt_tokens: Some(65),
                completion_tokens: Some(64),
                ..ChunkInfo::default()
            }))
        );
        let energy = r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"energy_joules":1.5,"energy_source":"twin"}}"#;
        let info = parse_chunk(energy).unwrap().unwrap();
        assert_eq!(info.energy_joules, Some(1.5));
        assert_eq!(info.energy_source.as_deref(), Some("twin"));
        let usage_null = r#"{"choices":[{"text":"a"}],"usage":null}"#;
        assert_eq!(
            parse_chunk(usage_null).unwrap().unwrap().completion_tokens,
            None
        );
        let err = parse_chunk(r#"{"error":{"message":"boom","type":"server_error"}}"#);
        assert!(err.unwrap_err().contains("boom"));
        assert!(parse_chunk("{not json").is_err());
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "hé");
        assert_eq!(truncate("hi", 10), "hi");
    }
}
