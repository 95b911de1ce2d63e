//! Batches a 2xx answer says were not accepted. Pure.
//!
//! mParticle answers a bulk request 202 "even when some batches fail", and clients that
//! speak its API read a 202 body of `{"errors":[{"code":"BAD_REQUEST","message":...}]}` as a
//! partial failure naming the failed batch, by a path such as `[1].device_info.platform`
//! or by its position. An empty body, or one without errors, is a full success.

use serde_json::Value;

/// What a 2xx body says about the request's batches.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusals {
    /// These batches (positions in the request) were refused, with mParticle's message.
    Named(Vec<(usize, String)>),
    /// Errors that do not say which batches they are about: every batch is in doubt.
    Unreadable(String),
}

/// Reads a 2xx answer's body to a request of `batches` batches; `None`: all accepted.
pub fn refusals_in(body: &str, batches: usize) -> Option<Refusals> {
    let body = body.trim();
    if body.is_empty() {
        return None;
    }
    let Ok(json) = serde_json::from_str::<Value>(body) else {
        // Not JSON: a success page says nothing of errors; anything else cannot be read.
        return body
            .to_ascii_lowercase()
            .contains("error")
            .then(|| Refusals::Unreadable(body.to_string()));
    };
    let errors = match json.get("errors") {
        None | Some(Value::Null) => return None,
        Some(Value::Array(errors)) if errors.is_empty() => return None,
        Some(Value::Array(errors)) => errors,
        Some(_) => return Some(Refusals::Unreadable(body.to_string())),
    };
    let mut named = Vec::new();
    for error in errors {
        let message = message_of(error);
        match position_of(error, &message).filter(|&i| i < batches) {
            Some(position) => named.push((position, message)),
            None => return Some(Refusals::Unreadable(message)),
        }
    }
    named.sort_by_key(|(position, _)| *position);
    named.dedup_by_key(|(position, _)| *position);
    Some(Refusals::Named(named))
}

fn message_of(error: &Value) -> String {
    match error.get("message").and_then(Value::as_str) {
        Some(message) => message.to_string(),
        None => error.to_string(),
    }
}

/// A batch's position: a number field (`index`, `batch_index`, `position`), else the first
/// `[N]` in a path field or the message.
fn position_of(error: &Value, message: &str) -> Option<usize> {
    let number = ["index", "batch_index", "position"]
        .iter()
        .find_map(|field| error.get(field).and_then(Value::as_u64));
    if let Some(n) = number {
        return usize::try_from(n).ok();
    }
    let path = ["path", "field"]
        .iter()
        .find_map(|field| error.get(field).and_then(Value::as_str));
    path.and_then(bracketed).or_else(|| bracketed(message))
}

/// The number in the first `[N]` of `text`.
fn bracketed(text: &str) -> Option<usize> {
    let start = text.find('[')? + 1;
    let len = text[start..].find(']')?;
    text[start..start + len].trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_body_or_no_errors_is_a_full_success() {
        for body in [
            "",
            "  ",
            "{}",
            r#"{"errors":[]}"#,
            r#"{"errors":null}"#,
            "OK",
        ] {
            assert_eq!(refusals_in(body, 3), None, "{body:?}");
        }
    }

    #[test]
    fn errors_name_batches_by_path_position_or_message() {
        let body = r#"{"errors":[
            {"code":"BAD_REQUEST","message":"[2].device_info.platform: unknown value"},
            {"code":"BAD_REQUEST","message":"bad identity","path":"[0].user_identities"},
            {"code":"BAD_REQUEST","message":"too old","index":1}
        ]}"#;
        assert_eq!(
            refusals_in(body, 3),
            Some(Refusals::Named(vec![
                (0, "bad identity".into()),
                (1, "too old".into()),
                (2, "[2].device_info.platform: unknown value".into()),
            ]))
        );
    }

    #[test]
    fn an_error_naming_no_batch_this_request_has_leaves_every_batch_in_doubt() {
        let unnamed = r#"{"errors":[{"code":"BAD_REQUEST","message":"some batches failed"}]}"#;
        assert_eq!(
            refusals_in(unnamed, 3),
            Some(Refusals::Unreadable("some batches failed".into()))
        );
        let beyond = r#"{"errors":[{"message":"[7].events: bad"}]}"#;
        assert!(matches!(
            refusals_in(beyond, 3),
            Some(Refusals::Unreadable(_))
        ));
        assert!(matches!(
            refusals_in("<html>Internal error</html>", 3),
            Some(Refusals::Unreadable(_))
        ));
    }
}
