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
