//! The sync gate: a database is synced only when the remote's config
//! document says so. Anything else (missing document, missing field, a
//! value other than `true`, a failed request) means "disabled", as in the
//! seed; the reason is kept for the status. An unreachable server is told
//! apart, so that a replica already on disk stays readable offline.

use super::GateConfig;
use crate::{Remote, RemoteError};
use serde_json::Value;

/// What the gate says.
pub(crate) enum Answer {
    /// The field is `true`.
    Enabled,
    /// The remote answered, and not with `true`.
    Disabled(String),
    /// The remote could not be reached (a transient failure): disabled for
    /// a first sync, as in the seed, but an error when a replica exists.
    Unreachable(RemoteError),
}

/// Reads the config document and the gate field.
pub(crate) async fn check(remote: &Remote, gate: &GateConfig) -> Answer {
    let doc = match remote.get_doc(&gate.doc_id).await {
        Ok(Some(doc)) => Value::Object(doc),
        Ok(None) => return Answer::Disabled(format!("the remote has no {} document", gate.doc_id)),
        Err(e) if e.is_transient() => return Answer::Unreachable(e),
        Err(e) => return Answer::Disabled(format!("cannot read {}: {e}", gate.doc_id)),
    };
    match field(&doc, &gate.field_path) {
        Some(Value::Bool(true)) => Answer::Enabled,
        Some(other) => Answer::Disabled(format!(
            "{}.{} is {other}, not true",
            gate.doc_id, gate.field_path
        )),
        None => Answer::Disabled(format!("{} has no field {}", gate.doc_id, gate.field_path)),
    }
}

/// The value at a dotted path (`a.b` is `doc["a"]["b"]`).
fn field<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |v, key| v.get(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_paths() {
        let doc = json!({"localSync": {"enabled": true}, "x": 1});
        assert_eq!(field(&doc, "localSync.enabled"), Some(&json!(true)));
        assert_eq!(field(&doc, "localSync.other"), None);
        assert_eq!(field(&doc, "x.y"), None);
    }
}
