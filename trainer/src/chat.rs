//! Chat data: `{"messages": [...]}` rows rendered with the model's own chat template, with the
//! loss on the assistant turns only.
//!
//! # Rows
//!
//! A chat row (a JSONL line, or a Parquet row whose `messages` column is a list of structs
//! with `role` and `content` string fields, as Hugging Face `datasets` stores it) is
//!
//! ```json
//! {"messages": [{"role": "system", "content": "Answer briefly."},
//!               {"role": "user", "content": "Convert 308 km to miles."},
//!               {"role": "assistant", "content": "308 km is 191.4 miles."}]}
//! ```
//!
//! `role` is one of `system`, `user`, `assistant`; `content` is a string (it may be empty).
//! Other keys of a message are ignored and not shown to the template. Anything else (an unknown
//! role, a non-string content, an empty list) is an error naming `file:line`.
//!
//! # Rendering, exactly as transformers 4.38.2 `apply_chat_template`
//!
//! The template is `chat_template` of the model directory's `tokenizer_config.json`: a string, or
//! the list-of-named-templates form (`[{"name": "default", "template": ...}, ...]`), of which the
//! one named `default` is used. It runs in [`minijinja`] set up as transformers sets up jinja2:
//! `trim_blocks` and `lstrip_blocks` on, no trailing newline kept, a `raise_exception(msg)`
//! function that fails the row with `msg`, Python string methods (`.strip()`, `.startswith()`,
//! `.split()`, ...: `minijinja_contrib::pycompat`), `tojson`, and `break`/`continue`. Its
//! variables are `messages` (each `{"role", "content"}`), `add_generation_prompt` (false for
//! training), and the tokenizer's special tokens as strings, as transformers' `special_tokens_map`
//! passes them: `bos_token`, `eos_token`, `unk_token`, `sep_token`, `pad_token`, `cls_token`,
//! `mask_token` when set (a string or an `{"content": ...}` object), and
//! `additional_special_tokens` (a list). Nothing else is defined: a template that asks for
//! `strftime_now` or `tools` sees them undefined (Llama 3.1 then uses its fixed date), so the
//! rendering never depends on the clock.
//!
//! # Tokens and loss, exactly as TRL's assistant-only loss
//!
//! The rendered text is tokenized as one sequence with `add_special_tokens = false` (what
//! `apply_chat_template(tokenize=True)` does: the template already holds the BOS and turn markers
//! the model expects), and no end-of-sequence token is appended (the template closes each turn).
//! It is then truncated to `seq_len` like any row.
//!
//! For each assistant message `k`, its loss span in the text runs from the end of
//! `render(messages[..k], add_generation_prompt = true)` (so the assistant header, e.g.
//! `<|im_start|>assistant\n`, is not in it) to the end of `render(messages[..=k])` (so it holds
//! the content and what the template closes the turn with, e.g. `<|im_end|>\n`). Both renderings
//! must be prefixes of the whole conversation's rendering, else the row is refused (a template
//! that rewrites earlier turns has no well-defined assistant span). A token is a loss token when
//! its first byte lies in a loss span. System and user turns, headers and the template's default
//! system prompt are never loss tokens.
//!
//! This is what TRL 0.8.6's `SFTTrainer` computes with
//! `DataCollatorForCompletionOnlyLM(response_template="<|im_start|>assistant\n",
//! instruction_template="<|im_start|>user\n")` on a ChatML model: the loss covers the assistant
//! content, `<|im_end|>` and the newline after it, up to the next user header; an empty assistant
//! content leaves `<|im_end|>\n`. `trainer/tests/fixtures/chat/make_chat_fixtures.py` produced
//! the expected ids and masks (Qwen2.5's published template, a system prompt, two assistant
//! turns, an empty assistant turn, truncation inside the last assistant and the last user turn)
//! and `trainer/tests/chat.rs` compares them exactly. Two differences by design: TRL finds turns
//! by searching token ids, so a user message that itself contains the assistant header text is
//! taken for an assistant turn there and not here; and TRL also drops tokens equal to the pad id
//! from the loss (when a tokenizer's pad token is its end-of-turn token, TRL silently never
//! trains the end of a turn): here the end of turn is always learned.
//!
//! A model directory without a `chat_template` cannot train on chat rows: that is an error
//! naming the data file and `tokenizer_config.json`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use minijinja::{Environment, Error as JinjaError, ErrorKind, Value};
use serde_json::Value as Json;

use crate::error::TrainerError;

/// The role of a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `system`
    System,
    /// `user`
    User,
    /// `assistant`
    Assistant,
}

impl Role {
    /// The role as the template sees it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

/// Reads the `messages` value of a row (see the module doc); the error is one line.
pub fn parse_messages(value: &Json) -> Result<Vec<Message>, String> {
    let list = value
        .as_array()
        .ok_or("\"messages\" must be a list of {\"role\", \"content\"} objects")?;
    if list.is_empty() {
        return Err("\"messages\" is empty".into());
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let obj = m
            .as_object()
            .ok_or_else(|| format!("message {i} is not an object"))?;
        let role = match obj.get("role") {
            Some(Json::String(r)) => match r.as_str() {
                "system" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(format!(
                        "message {i} has role \"{other}\"; expected system, user or assistant"
                    ))
                }
            },
            _ => return Err(format!("message {i} has no \"role\" string")),
        };
        let content = match obj.get("content") {
            Some(Json::String(c)) => c.clone(),
            _ => return Err(format!("message {i} has no \"content\" string")),
        };
        out.push(Message { role, content });
    }
    Ok(out)
}

/// The special-token variables a template sees, in transformers' `SPECIAL_TOKENS_ATTRIBUTES`.
const SPECIAL_TOKEN_KEYS: &[&str] = &[
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// A model's compiled chat template with its special-token variables.
pub struct ChatTemplate {
    env: Environment<'static>,
    specials: BTreeMap<String, Value>,
    file: PathBuf,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("file", &self.file)
            .finish()
    }
}

const TEMPLATE_NAME: &str = "chat_template";

fn token_string(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_string),
        _ => None,
    }
}

impl ChatTemplate {
    /// The chat template of `model_dir/tokenizer_config.json`; `None` when the file or its
    /// `chat_template` is missing.
    pub fn load(model_dir: &Path) -> Result<Option<ChatTemplate>, TrainerError> {
        let file = model_dir.join("tokenizer_config.json");
        if !file.is_file() {
            return Ok(None);
        }
        let bad = |message: String| TrainerError::Tokenizer {
            file: file.clone(),
            message,
        };
        let text = fs_err::read_to_string(&file)?;
        let config: Json =
            serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let source = match config.get("chat_template") {
            None | Some(Json::Null) => return Ok(None),
            Some(Json::String(s)) => s.clone(),
            Some(Json::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Json::as_str) == Some("default"))
                .and_then(|t| t.get("template").and_then(Json::as_str))
                .ok_or_else(|| {
                    bad(
                        "chat_template is a list of named templates without one named \
                         \"default\""
                            .into(),
                    )
                })?
                .to_string(),
            Some(_) => {
                return Err(bad(
                    "chat_template must be a string or a list of named templates".into(),
                ))
            }
        };
        let mut specials = BTreeMap::new();
        for key in SPECIAL_TOKEN_KEYS {
            if let Some(s) = config.get(*key).and_then(token_string) {
                specials.insert((*key).to_string(), Value::from(s));
            }
        }
        if let Some(Json::Array(list)) = config.get("additional_special_tokens") {
            let tokens: Vec<Value> = list
                .iter()
                .filter_map(token_string)
                .map(Value::from)
                .collect();
            specials.insert("additional_special_tokens".into(), Value::from(tokens));
        }
        ChatTemplate::new(source, specials, file).map(Some)
    }

    /// Compiles `source` with the given special-token variables; `file` names it in errors.
    pub fn new(
        source: String,
        specials: BTreeMap<String, Value>,
        file: PathBuf,
    ) -> Result<ChatTemplate, TrainerError> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .map_err(|e| TrainerError::Tokenizer {
                file: file.clone(),
                message: format!("chat template settings: {}", one_line(&e)),
            })?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<Value, JinjaError> {
                Err(JinjaError::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned(TEMPLATE_NAME, source)
            .map_err(|e| TrainerError::Tokenizer {
                file: file.clone(),
                message: format!("chat_template does not compile: {}", one_line(&e)),
            })?;
        Ok(ChatTemplate {
            env,
            specials,
            file,
        })
    }

    /// The `tokenizer_config.json` the template came from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The template's text for `messages`; the error is the template's message, one line.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, String> {
        let list: Vec<Value> = messages
            .iter()
            .map(|m| {
                let mut obj = BTreeMap::new();
                obj.insert("role", Value::from(m.role.as_str()));
                obj.insert("content", Value::from(m.content.as_str()));
                Value::from(obj)
            })
            .collect();
        let mut ctx = self.specials.clone();
        ctx.insert("messages".into(), Value::from(list));
        ctx.insert(
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        );
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| one_line(&e))?;
        template
            .render(Value::from(ctx))
            .map_err(|e| format!("chat template failed: {}", one_line(&e)))
    }

    /// The whole conversation's text and the byte spans of its assistant turns (see the module
    /// doc).
    pub fn render_with_spans(
        &self,
        messages: &[Message],
    ) -> Result<(String, Vec<Range<usize>>), String> {
        let text = self.render(messages, false)?;
        let mut spans = Vec::new();
        for (k, m) in messages.iter().enumerate() {
            if m.role != Role::Assistant {
                continue;
            }
            let before = self.render(&messages[..k], true)?;
            let through = self.render(&messages[..=k], false)?;
            if !text.starts_with(&before) || !through.starts_with(&before) {
                return Err(format!(
                    "the chat template renders the conversation before message {k} (with the \
                     generation prompt) differently from the start of the whole conversation, so \
                     assistant turn {k} cannot be located"
                ));
            }
            if !text.starts_with(&through) {
                return Err(format!(
                    "the chat template renders the conversation through message {k} differently \
                     from the start of the whole conversation, so assistant turn {k} cannot be \
                     located"
                ));
            }
            if through.len() > before.len() {
                spans.push(before.len()..through.len());
            }
        }
        Ok((text, spans))
    }
}

/// A one-line message of a template error (the template's own text for `raise_exception`).
fn one_line(e: &JinjaError) -> String {
    let detail = match e.detail() {
        Some(d) if e.kind() == ErrorKind::InvalidOperation => d.to_string(),
        _ => e.to_string(),
    };
    detail.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Tokens and loss mask of a chat row (see the module doc), before truncation.
pub fn encode(
    template: &ChatTemplate,
    tok: &crate::data::TextTokenizer,
    messages: &[Message],
) -> Result<(Vec<u32>, Vec<bool>), String> {
    let (text, spans) = template.render_with_spans(messages)?;
    let (ids, offsets) = tok.encode_with_offsets(&text)?;
    let mask = offsets
        .iter()
        .map(|&(start, _)| spans.iter().any(|s| s.contains(&start)))
        .collect();
    Ok((ids, mask))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(source: &str) -> ChatTemplate {
        let mut specials = BTreeMap::new();
        specials.insert("bos_token".to_string(), Value::from("<s>"));
        ChatTemplate::new(
            source.into(),
            specials,
            PathBuf::from("tokenizer_config.json"),
        )
        .expect("compiles")
    }

    #[test]
    fn roles_and_contents_are_checked() {
        let ok = serde_json::json!([{"role": "user", "content": "hi"}]);
        assert_eq!(parse_messages(&ok).expect("ok")[0].role, Role::User);
        for (bad, why) in [
            (serde_json::json!([]), "empty"),
            (serde_json::json!("x"), "must be a list"),
            (
                serde_json::json!([{"role": "tool", "content": "x"}]),
                "role \"tool\"",
            ),
            (
                serde_json::json!([{"role": "user", "content": 3}]),
                "\"content\"",
            ),
            (serde_json::json!([{"content": "x"}]), "\"role\""),
        ] {
            let e = parse_messages(&bad).expect_err("refused");
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn raise_exception_and_python_methods() {
        let t = template(
            "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}\
             {{ raise_exception('no system here') }}{% endif %}{{ m.content.strip() }}\
             {% if m.content.startswith('a') %}!{% endif %}{% endfor %}",
        );
        let msg = |role, content: &str| Message {
            role,
            content: content.into(),
        };
        assert_eq!(
            t.render(&[msg(Role::User, "  abc ")], false)
                .expect("renders"),
            "<s>abc"
        );
        let e = t
            .render(&[msg(Role::System, "x")], false)
            .expect_err("raises");
        assert_eq!(e, "chat template failed: no system here");
    }

    #[test]
    fn a_template_that_rewrites_earlier_turns_is_refused() {
        // Shows the last assistant turn only: earlier prefixes do not match the whole.
        let t = template(
            "{% for m in messages %}{% if m.role != 'assistant' or loop.last %}{{ m.content }}|\
             {% endif %}{% endfor %}",
        );
        let msgs: Vec<Message> = [
            (Role::User, "q"),
            (Role::Assistant, "a"),
            (Role::User, "q2"),
            (Role::Assistant, "a2"),
        ]
        .iter()
        .map(|(r, c)| Message {
            role: *r,
            content: (*c).into(),
        })
        .collect();
        let e = t.render_with_spans(&msgs).expect_err("refused");
        assert!(e.contains("assistant turn 1 cannot be located"), "{e}");
    }
}
