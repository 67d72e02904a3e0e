//! Chat templates are code: Jinja renders them in serving stacks, and an unsandboxed engine runs
//! whatever a template reaches (CVE-2024-34359). The same check covers a GGUF's
//! `tokenizer.chat_template*` metadata, the `chat_template` of a Hugging Face
//! `tokenizer_config.json` or `chat_template.json` (a string, or a list of `{name, template}`),
//! and a `*.jinja` file.

use super::*;

/// Substrings of a chat template that reach Python internals (Jinja SSTI), or spell them
/// indirectly: any dunder (`__class__`, `__globals__`, ...), the `attr` filter that takes a
/// computed name, an underscore written as an escape or a lone `'_'` literal (to build
/// `'_'*2 ~ 'class' ~ '_'*2`), and names that reach the system.
pub(super) const TEMPLATE_INJECTION: &[&str] = &[
    "__class__",
    "__globals__",
    "__subclasses__",
    "__builtins__",
    "__import__",
    "__mro__",
    "__base__",
    "__init__",
    "__getattribute__",
    "os.system",
    "os.popen",
    "subprocess",
    "__",
    "|attr",
    "| attr",
    "attr(",
    "\\x5f",
    "\\x5F",
    "\\u005f",
    "\\u005F",
    "\\137",
    "'_'",
    "\"_\"",
];

/// The first injection pattern a template uses, if any.
pub(super) fn injection(template: &str) -> Option<&'static str> {
    TEMPLATE_INJECTION
        .iter()
        .find(|p| template.contains(*p))
        .copied()
}

/// The largest text file read for chat templates.
const MAX_TEMPLATE_FILE: u64 = 64 * 1024 * 1024;

/// Checks the chat templates of a file that is not a model format: a `*.jinja` file as a whole,
/// and a JSON object's top-level `chat_template` (string, or list of `{name, template}`). A file
/// that mentions `"chat_template"` but is not JSON is checked as raw text.
pub(super) fn scan_templates(blob: &dyn Blob, head: &[u8], r: &mut Builder) -> io::Result<()> {
    let jinja = extension(&r.path).is_some_and(|e| e == "jinja" || e == "j2");
    let json = head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if !(jinja || json) || blob.size() > MAX_TEMPLATE_FILE {
        return Ok(());
    }
    let bytes = blob.read_at(0, MAX_TEMPLATE_FILE)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut templates: Vec<(String, String)> = Vec::new();
    if jinja {
        templates.push(("template".into(), text.into_owned()));
    } else if text.contains("\"chat_template\"") {
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => match map.get("chat_template") {
                Some(Value::String(t)) => templates.push(("chat_template".into(), t.clone())),
                Some(Value::Array(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        let name = item
                            .get("name")
                            .and_then(Value::as_str)
                            .map_or_else(|| i.to_string(), str::to_string);
                        if let Some(t) = item.get("template").and_then(Value::as_str) {
                            templates.push((format!("chat_template[{name}]"), t.to_string()));
                        }
                    }
                }
                _ => {}
            },
            _ => templates.push(("chat_template (not valid JSON)".into(), text.into_owned())),
        }
    }
    for (key, template) in &templates {
        if let Some(pattern) = injection(template) {
            r.add(
                Rule::ChatTemplate,
                format!(
                    "{key} uses `{pattern}`: a Jinja template injection runs code when an \
                     unsandboxed engine renders it (CVE-2024-34359)"
                ),
                Some(key.clone()),
                None,
            );
        }
    }
    if !templates.is_empty() {
        r.summary.push_str(&format!(
            ", {}",
            plural(templates.len(), "chat template", "chat templates")
        ));
    }
    Ok(())
}
