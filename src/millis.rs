//! `Duration`s stored and printed as whole milliseconds: the `*_ms` fields
//! of settee's JSON (a stored pull summary, `--json` output) keep their
//! names and numbers while the Rust fields are typed.

use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;

fn whole_ms(d: &Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `d` cut to whole milliseconds, as it is stored: a value kept in memory
/// then equals the one read back.
pub(crate) fn whole(d: Duration) -> Duration {
    Duration::from_millis(whole_ms(&d))
}

/// `#[serde(with = "crate::millis")]` on a `Duration`.
pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(whole_ms(d))
}

/// See [`serialize`].
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

/// `#[serde(serialize_with = "crate::millis::option")]` on an
/// `Option<Duration>` (statuses are written, never read back).
pub(crate) fn option<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&whole_ms(d)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde::{Deserialize, Serialize};
    use std::time::Duration;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Timed {
        #[serde(rename = "took_ms", with = "super")]
        took: Duration,
    }

    #[derive(Serialize)]
    struct Status {
        #[serde(rename = "warm_ms", serialize_with = "super::option")]
        warm: Option<Duration>,
    }

    #[test]
    fn durations_read_and_write_as_whole_milliseconds() {
        let t = Timed {
            took: Duration::from_micros(1_500_900),
        };
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json, serde_json::json!({"took_ms": 1500}));
        let back: Timed = serde_json::from_value(json).unwrap();
        assert_eq!(back.took, Duration::from_millis(1500));
        assert_eq!(super::whole(t.took), back.took);
        let some = Status {
            warm: Some(Duration::from_micros(7_900)),
        };
        assert_eq!(
            serde_json::to_value(&some).unwrap(),
            serde_json::json!({"warm_ms": 7})
        );
        let none = Status { warm: None };
        assert_eq!(
            serde_json::to_value(&none).unwrap(),
            serde_json::json!({"warm_ms": null})
        );
    }
}
