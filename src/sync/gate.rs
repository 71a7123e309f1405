//! The sync gate: a database is synced only when the remote's config
//! document says so. Anything else (missing document, missing field, a
//! value other than `true`, a failed request) means "disabled", as in the
//! seed; the reason is kept for the status.

use super::GateConfig;
use crate::Remote;
use serde_json::Value;

/// The gate's answer: `Ok(())` to sync, `Err(reason)` when disabled.
pub(crate) async fn check(remote: &Remote, gate: &GateConfig) -> Result<(), String> {
    let doc = match remote.get_doc(&gate.doc_id).await {
        Ok(Some(doc)) => Value::Object(doc),
        Ok(None) => return Err(format!("the remote has no {} document", gate.doc_id)),
        Err(e) => return Err(format!("cannot read {}: {e}", gate.doc_id)),
    };
    match field(&doc, &gate.field_path) {
        Some(Value::Bool(true)) => Ok(()),
        Some(other) => Err(format!(
            "{}.{} is {other}, not true",
            gate.doc_id, gate.field_path
        )),
        None => Err(format!("{} has no field {}", gate.doc_id, gate.field_path)),
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
