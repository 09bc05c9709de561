//! The binary log (`-g FILE`): one record per event, each a 4-byte big-endian
//! length and a msgpack array `[time_ms, level, role, event, {field: value}]`. The
//! length lets a reader step over a record it cannot decode and tell a record cut
//! short by a crash (the end of the log) from damage, after which it looks for the
//! next record that decodes.

use rmpv::Value;

/// The largest record written or read; a larger announced length is damage.
pub const RECORD_MAX_BYTES: usize = 1 << 20;
const LEN_BYTES: usize = 4;
/// Nesting a record may have: the array, its field map, and a field's value with
/// some room. Deeper is damage.
const RECORD_DEPTH_MAX: usize = 8;

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Unix time in milliseconds.
    pub time_ms: u64,
    /// INFO, WARN or ERROR.
    pub level: String,
    /// manager, server or gateway.
    pub role: String,
    pub event: String,
    pub fields: Vec<(String, Value)>,
}

/// The record's bytes, length first. A record over [`RECORD_MAX_BYTES`] keeps its
/// event with its fields dropped, and says so.
pub fn encode(r: &Record) -> Vec<u8> {
    let body = |fields: Vec<(Value, Value)>| {
        let v = Value::Array(vec![
            Value::from(r.time_ms),
            Value::from(r.level.as_str()),
            Value::from(r.role.as_str()),
            Value::from(r.event.as_str()),
            Value::Map(fields),
        ]);
        let mut out = vec![0; LEN_BYTES];
        rmpv::encode::write_value(&mut out, &v).expect("writing to a Vec");
        out
    };
    let fields = r
        .fields
        .iter()
        .map(|(k, v)| (Value::from(k.as_str()), v.clone()))
        .collect();
    let mut out = body(fields);
    if out.len() - LEN_BYTES > RECORD_MAX_BYTES {
        out = body(vec![(Value::from("truncated"), Value::from(true))]);
    }
    let len = (out.len() - LEN_BYTES) as u32;
    out[..LEN_BYTES].copy_from_slice(&len.to_be_bytes());
    out
}

/// What the front of a log holds.
#[derive(Debug, PartialEq)]
pub enum Read {
    /// A record, and the bytes it took.
    Record(Record, usize),
    /// Not a whole record yet: the end of the log, or one still being written.
    NeedMore,
    /// Not a record here: skip a byte and look again.
    Bad,
}

pub fn read(buf: &[u8]) -> Read {
    let Some(len) = buf.get(..LEN_BYTES) else {
        return Read::NeedMore;
    };
    let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
    if len == 0 || len > RECORD_MAX_BYTES {
        return Read::Bad;
    }
    let Some(body) = buf.get(LEN_BYTES..LEN_BYTES + len) else {
        return Read::NeedMore;
    };
    let Ok((v, used)) = crate::proto::msgpack::read_value(body, RECORD_DEPTH_MAX) else {
        return Read::Bad;
    };
    if used != body.len() {
        return Read::Bad;
    }
    match record_of(v) {
        Some(r) => Read::Record(r, LEN_BYTES + len),
        None => Read::Bad,
    }
}

fn record_of(v: Value) -> Option<Record> {
    let Value::Array(items) = v else { return None };
    let [time, level, role, event, Value::Map(fields)] = <[Value; 5]>::try_from(items).ok()? else {
        return None;
    };
    Some(Record {
        time_ms: time.as_u64()?,
        level: level.as_str()?.to_string(),
        role: role.as_str()?.to_string(),
        event: event.as_str()?.to_string(),
        fields: fields
            .into_iter()
            .map(|(k, v)| Some((k.as_str()?.to_string(), v)))
            .collect::<Option<_>>()?,
    })
}

/// A field's value as text: strings bare, the rest as msgpack prints them.
pub fn field_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.as_str().unwrap_or("?").to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(event: &str) -> Record {
        Record {
            time_ms: 1_796_585_748_123,
            level: "WARN".into(),
            role: "manager".into(),
            event: event.into(),
            fields: vec![
                ("server".into(), Value::from("127.0.0.1:19801")),
                ("records".into(), Value::from(42u64)),
            ],
        }
    }

    #[test]
    fn records_round_trip_and_a_cut_one_waits_for_more() {
        let bytes = encode(&rec("server_lost"));
        assert_eq!(read(&bytes), Read::Record(rec("server_lost"), bytes.len()));
        for cut in 0..bytes.len() {
            assert_eq!(read(&bytes[..cut]), Read::NeedMore, "{cut}");
        }
    }

    #[test]
    fn damage_is_bad_and_the_next_record_is_found_after_it() {
        let mut log = encode(&rec("a"));
        let second = log.len();
        log.extend(encode(&rec("b")));
        log[4] = 0xc1; // the first record's array marker: a byte msgpack never uses
        assert_eq!(read(&log), Read::Bad);
        let found = (1..log.len()).find_map(|i| match read(&log[i..]) {
            Read::Record(r, _) => Some((i, r.event)),
            _ => None,
        });
        assert_eq!(found, Some((second, "b".to_string())));
        assert_eq!(read(&[0, 0, 0, 0, 1]), Read::Bad, "an empty record");
        assert_eq!(read(&[0xff, 0xff, 0xff, 0xff]), Read::Bad, "too long");
        let mut not_ours = vec![0, 0, 0, 1];
        not_ours.push(0xc0); // nil, not an array
        assert_eq!(read(&not_ours), Read::Bad);
    }

    #[test]
    fn an_oversized_record_keeps_its_event() {
        let mut r = rec("huge");
        r.fields = vec![("blob".into(), Value::Binary(vec![0; RECORD_MAX_BYTES]))];
        let bytes = encode(&r);
        let Read::Record(back, _) = read(&bytes) else {
            panic!("not readable")
        };
        assert_eq!(back.event, "huge");
        assert_eq!(
            back.fields,
            vec![("truncated".to_string(), Value::from(true))]
        );
    }
}
