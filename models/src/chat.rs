//! Chat prompt formatting: renders a conversation into the model's prompt text with a
//! Hugging Face-style Jinja chat template (minijinja), e.g. `config/chat/gemma.jinja`.

use std::path::Path;

use minijinja::{context, Environment, Error, ErrorKind};

use crate::ModelError;

/// The name the template is registered under; it shows up in error locations.
const TEMPLATE_NAME: &str = "chat";

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template. Parsing happens once, in the constructor, so a broken template
/// is reported when the server loads its config rather than on the first request.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
}

/// Carries a `raise_exception` message through minijinja so it can be reported verbatim:
/// these messages are the template's verdict on the conversation, meant for the client.
#[derive(Debug)]
struct Raised(String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

fn raise_exception(message: String) -> Result<String, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, "raise_exception").with_source(Raised(message)))
}

fn template_error(err: &Error) -> ModelError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(Raised(message)) = e.downcast_ref::<Raised>() {
            return ModelError::ChatTemplate(message.clone());
        }
        source = e.source();
    }
    // Display already names the kind, the detail and the template line.
    ModelError::ChatTemplate(err.to_string())
}

impl ChatTemplate {
    pub fn from_source(source: String) -> Result<Self, ModelError> {
        let mut env = Environment::new();
        // transformers renders chat templates with both enabled; without them the block tags
        // of most published templates leave stray newlines and indentation in the prompt.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned(TEMPLATE_NAME, source)
            .map_err(|e| template_error(&e))?;
        Ok(Self { env })
    }

    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let source = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_source(source).map_err(|e| match e {
            ModelError::ChatTemplate(m) => {
                ModelError::ChatTemplate(format!("{}: {m}", path.display()))
            }
            other => other,
        })
    }

    /// Renders `messages` into prompt text. The template emits `bos_token` itself, so the
    /// result must be tokenized without adding another BOS.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        bos_token: &str,
    ) -> Result<String, ModelError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| template_error(&e))?;
        template
            .render(context! { messages, add_generation_prompt, bos_token })
            .map_err(|e| template_error(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gemma() -> ChatTemplate {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/chat/gemma.jinja");
        ChatTemplate::from_file(&path).expect("config/chat/gemma.jinja loads")
    }

    fn msgs(turns: &[(&str, &str)]) -> Vec<ChatMessage> {
        turns
            .iter()
            .map(|&(role, content)| ChatMessage::new(role, content))
            .collect()
    }

    fn template_error_message(result: Result<impl std::fmt::Debug, ModelError>) -> String {
        match result {
            Err(ModelError::ChatTemplate(message)) => message,
            other => panic!("expected a ChatTemplate error, got {other:?}"),
        }
    }

    // Expected strings below were produced by transformers' renderer (jinja2 3.1.6 sandbox,
    // trim_blocks, lstrip_blocks) from Gemma 3's official template.

    #[test]
    fn gemma_renders_system_user_assistant_user_exactly() {
        let messages = msgs(&[
            ("system", "You are terse."),
            ("user", "Hi"),
            ("assistant", "Hello!"),
            ("user", "Bye?"),
        ]);
        let got = gemma().render(&messages, true, "<bos>").unwrap();
        let want = "<bos><start_of_turn>user\nYou are terse.\n\nHi<end_of_turn>\n\
                    <start_of_turn>model\nHello!<end_of_turn>\n\
                    <start_of_turn>user\nBye?<end_of_turn>\n\
                    <start_of_turn>model\n";
        assert_eq!(got, want);
    }

    #[test]
    fn gemma_matches_official_edge_cases() {
        let t = gemma();
        assert_eq!(
            t.render(&msgs(&[("user", "Hi")]), false, "<bos>").unwrap(),
            "<bos><start_of_turn>user\nHi<end_of_turn>\n"
        );
        // Turn contents are trimmed, the system text is not.
        let padded = msgs(&[
            ("system", "  keep me  "),
            ("user", "  padded \n"),
            ("assistant", "\n answer "),
        ]);
        assert_eq!(
            t.render(&padded, true, "<bos>").unwrap(),
            "<bos><start_of_turn>user\n  keep me  \n\npadded<end_of_turn>\n\
             <start_of_turn>model\nanswer<end_of_turn>\n<start_of_turn>model\n"
        );
        // Message text is data, never template code.
        assert_eq!(
            t.render(&msgs(&[("user", "{{ 1 + 1 }} {% raw %}")]), true, "")
                .unwrap(),
            "<start_of_turn>user\n{{ 1 + 1 }} {% raw %}<end_of_turn>\n<start_of_turn>model\n"
        );
        // As officially: a system message with no user turn has nowhere to go.
        assert_eq!(
            t.render(&msgs(&[("system", "only")]), true, "<bos>")
                .unwrap(),
            "<bos><start_of_turn>model\n"
        );
    }

    #[test]
    fn gemma_rejects_unknown_and_misplaced_roles() {
        let t = gemma();
        for turns in [&[("user", "Hi"), ("tool", "x")][..], &[("tool", "x")][..]] {
            let message = template_error_message(t.render(&msgs(turns), true, "<bos>"));
            assert!(message.contains("Unsupported role 'tool'"), "{message}");
        }
        for turns in [
            &[("user", "a"), ("system", "b")][..],
            &[("user", "a"), ("assistant", "b"), ("system", "c")][..],
        ] {
            let message = template_error_message(t.render(&msgs(turns), true, "<bos>"));
            assert!(
                message.contains("only supported as the first message"),
                "{message}"
            );
        }
    }

    #[test]
    fn gemma_rejects_non_alternating_turns() {
        let t = gemma();
        let alternate = "Conversation roles must alternate user/assistant/user/assistant/...";
        for turns in [
            &[("user", "a"), ("user", "b")][..],
            &[("system", "s"), ("assistant", "a")][..],
            &[("user", "a"), ("assistant", "b"), ("assistant", "c")][..],
        ] {
            // The raised message comes through verbatim, without minijinja's decoration.
            assert_eq!(
                template_error_message(t.render(&msgs(turns), true, "<bos>")),
                alternate
            );
        }
        // The official template fails obscurely on messages[0]; ours says why.
        let message = template_error_message(t.render(&[], true, "<bos>"));
        assert_eq!(message, "No messages to format");
    }

    #[test]
    fn hugging_face_rendering_conventions() {
        // Block tags swallow their own line (trim_blocks) and indentation (lstrip_blocks).
        let source = concat!(
            "{% for m in messages %}\n",
            "  {% if m.role %}\n",
            "<|{{ m.role }}|>{{ m.content }}\n",
            "  {% endif %}\n",
            "{% endfor %}\n",
            "{% if add_generation_prompt %}<|assistant|>{% endif %}",
        );
        let t = ChatTemplate::from_source(source.to_string()).unwrap();
        let got = t
            .render(&msgs(&[("user", "hi"), ("assistant", "yo")]), true, "")
            .unwrap();
        assert_eq!(got, "<|user|>hi\n<|assistant|>yo\n<|assistant|>");
        let t = ChatTemplate::from_source(
            "[{{ bos_token }}]{{ raise_exception('no ' ~ messages|length) }}".into(),
        )
        .unwrap();
        assert_eq!(template_error_message(t.render(&[], false, "<s>")), "no 0");
    }

    #[test]
    fn syntax_errors_are_reported_at_load() {
        for source in [
            "{% for m in messages %}{{ m.content }}",
            "{{ messages[0 }}",
            "{% if %}",
        ] {
            let message = template_error_message(ChatTemplate::from_source(source.to_string()));
            assert!(message.contains("syntax error"), "{source}: {message}");
        }
    }

    #[test]
    fn missing_file_is_an_io_error_naming_the_path() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("no/such/template.jinja");
        match ChatTemplate::from_file(&path) {
            Err(ModelError::Io { path: p, source }) => {
                assert_eq!(p, path);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("expected Io error, got {other:?}"),
        }
    }

    #[test]
    fn file_syntax_errors_name_the_file() {
        let path =
            std::env::temp_dir().join(format!("gridserve-chat-test-{}.jinja", std::process::id()));
        std::fs::write(&path, "{% if %}").unwrap();
        let message = template_error_message(ChatTemplate::from_file(&path));
        std::fs::remove_file(&path).unwrap();
        assert!(
            message.starts_with(&path.display().to_string()),
            "{message}"
        );
    }

    #[test]
    fn chat_message_round_trips_through_json() {
        let m = ChatMessage::new("user", "hi");
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"role":"user","content":"hi"}"#);
        assert_eq!(serde_json::from_str::<ChatMessage>(&json).unwrap(), m);
    }

    #[test]
    fn template_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ChatTemplate>();
    }
}
