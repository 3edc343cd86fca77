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
