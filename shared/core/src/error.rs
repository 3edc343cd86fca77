//! Validation findings, named by the dotted path of the offending field.

use serde::Serialize;

/// One bad field: `field` is a dotted path (`git_repository.branch`), `[i]` for array items
/// (`deployment_restrictions[0].value`). The message is a lower-case phrase about the field,
/// without a period of its own (`must be at least 16 characters long`): the API renders
/// `field: message.`. It never repeats a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A deserializer's message without the values it quotes (`invalid type: string "…",
/// expected an array` → `invalid type: string, expected an array`): a payload's text is never
/// repeated in an answer or in the deliveries history, which keep no part of a body.
pub fn without_quoted_values(detail: &str) -> String {
    // serde writes other values between backticks after their kind (`integer `5``), and field
    // names too (`unknown field `ref``), which stay.
    const VALUE_KINDS: [&str; 4] = ["integer ", "floating point ", "boolean ", "character "];
    let mut out = String::with_capacity(detail.len());
    let (mut quoted, mut escaped, mut ticked) = (false, false, false);
    for c in detail.chars() {
        match c {
            '"' if !escaped && quoted => quoted = false,
            '"' if !escaped && !ticked => {
                quoted = true;
                out.truncate(out.trim_end().len());
            }
            '`' if ticked => ticked = false,
            '`' if !quoted && VALUE_KINDS.iter().any(|kind| out.ends_with(kind)) => {
                ticked = true;
                out.truncate(out.trim_end().len());
            }
            _ if !quoted && !ticked => out.push(c),
            _ => {}
        }
        escaped = quoted && c == '\\' && !escaped;
    }
    out
}

/// serde's words for a payload's parts (`map`, `sequence`, `unit value`, `struct Commit`) in
/// JSON's (`object`, `array`, `null`), for a person who wrote JSON, not Rust; without the
/// values serde quotes (`string "…"`), which are the body's.
pub fn in_json_terms(detail: &str) -> String {
    serde_words_in_json(&without_quoted_values(detail))
}

/// [`in_json_terms`] of the message, its quoted values left out.
fn serde_words_in_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // `expected struct Commit` (derived code) names a type.
    const EXPECTED: &str = "expected struct ";
    while let Some(at) = rest.find(EXPECTED) {
        let after = &rest[at + EXPECTED.len()..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if name_len > 0 && after.starts_with(|c: char| c.is_ascii_uppercase()) {
            out.push_str(&rest[..at]);
            out.push_str("expected an object");
            rest = &after[name_len..];
        } else {
            out.push_str(&rest[..at + EXPECTED.len()]);
            rest = after;
        }
    }
    out.push_str(rest);
    [
        ("invalid type: map", "invalid type: object"),
        ("invalid type: sequence", "invalid type: array"),
        ("invalid type: unit value", "invalid type: null"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected an object"),
        ("expected a borrowed string", "expected a string"),
    ]
    .iter()
    .fold(out, |text, (serde, json)| text.replace(serde, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_are_left_out() {
        assert_eq!(
            without_quoted_values(r#"invalid type: string "a \"b\" c", expected an array at line 1 column 9"#),
            "invalid type: string, expected an array at line 1 column 9"
        );
        assert_eq!(
            without_quoted_values("expected value at line 1 column 1"),
            "expected value at line 1 column 1"
        );
        assert_eq!(without_quoted_values(r#"x "unterminated"#), "x");
        assert_eq!(
            without_quoted_values("invalid type: integer `12345`, expected a string at line 1 column 9"),
            "invalid type: integer, expected a string at line 1 column 9"
        );
        assert_eq!(
            without_quoted_values("invalid type: boolean `true`, expected unknown field `ref`"),
            "invalid type: boolean, expected unknown field `ref`"
        );
        assert_eq!(without_quoted_values("missing field `ref`"), "missing field `ref`");
    }
}
