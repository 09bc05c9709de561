//! A session against a service that reads one method raw.
use super::*;
use std::io::Read;
use std::sync::Mutex;

/// Records every call, and whether it came raw; answers each with its method.
#[derive(Default)]
struct Recorder(Mutex<Vec<(String, bool, Vec<Value>)>>);

impl Service for Recorder {
    fn call(&self, method: &str, params: Vec<Value>, reply: Reply) {
        self.0.lock().unwrap().push((method.into(), false, params));
        reply.ok(Value::from(method));
    }
    fn reads_raw(&self, method: &str) -> bool {
        method == "Raw"
    }
    fn call_raw(&self, method: &str, params: &[u8], reply: Reply) {
        let params = rpc::params_as_values(params).unwrap();
        self.0.lock().unwrap().push((method.into(), true, params));
        reply.ok(Value::from(method));
    }
}

/// Requests of the raw method reach `call_raw` with their params, the others
/// `call`, in order and each answered under its msgid: whether a frame arrives
/// whole or in pieces, and whether a large one is gathered.
#[test]
fn a_raw_method_is_served_in_place_and_the_rest_as_values() {
    let big = Value::Binary(vec![9u8; rpc::GATHER_MIN_BYTES * 2]);
    let calls: Vec<(u32, &str, Vec<Value>)> = vec![
        (
            1,
            "Raw",
            vec![Value::from(1), Value::Binary(b"key".to_vec())],
        ),
        (2, "Other", vec![Value::from("x")]),
        (3, "Raw", vec![]),
        (
            4,
            "Raw",
            vec![Value::Array((0..3000).map(Value::from).collect())],
        ),
        (5, "Raw", vec![big.clone()]),
        (6, "Other", vec![big]),
        (7, "Raw", vec![Value::Nil]),
    ];
    let mut wire = Vec::new();
    for (id, m, p) in &calls {
        rpc::encode_request(&mut wire, *id, m, p);
    }
    for piece in [wire.len(), 1000, 7] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut theirs, _) = listener.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        let peer = ours.peer_addr().unwrap();
        let stream = Arc::new(mio::net::TcpStream::from_std(ours));
        let sender = super::super::sender::spawn_sender(0).unwrap();
        let out = Arc::new(Writer::new(stream, peer, sender, false));
        let service = Arc::new(Recorder::default());
        let mut session = RpcSession::factory(service.clone())(peer);
        // As a worker feeds it: what it did not use is offered again with more.
        let mut input = Vec::new();
        for chunk in wire.chunks(piece) {
            input.extend_from_slice(chunk);
            let used = session.on_input(&input, &out).unwrap();
            input.drain(..used);
        }
        assert!(
            input.is_empty(),
            "fed {piece} at a time: {} bytes left",
            input.len()
        );
        let got = service.0.lock().unwrap().clone();
        // A large frame that comes in pieces is gathered and decoded as Values,
        // whatever its method; whole, it is read in place like the others.
        let gathered = |i: usize| i == 4 && piece < wire.len();
        let kinds: Vec<(String, bool)> = got.iter().map(|(m, raw, _)| (m.clone(), *raw)).collect();
        let want: Vec<(String, bool)> = calls
            .iter()
            .enumerate()
            .map(|(i, (_, m, _))| (m.to_string(), *m == "Raw" && !gathered(i)))
            .collect();
        assert_eq!(kinds, want, "fed {piece} at a time");
        for ((_, _, params), (id, _, sent)) in got.iter().zip(&calls) {
            assert!(
                params == sent,
                "fed {piece} at a time: the params of call {id} differ"
            );
        }
        let mut answers = Vec::new();
        theirs
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = vec![0u8; 1 << 16];
        while answers.len() < calls.len() {
            let n = theirs.read(&mut buf).unwrap();
            answers.extend_from_slice(&buf[..n]);
            let mut at = 0;
            let mut seen = Vec::new();
            while let Ok(rpc::Decoded::Frame { message, len }) = rpc::decode(&answers[at..]) {
                seen.push(message);
                at += len;
            }
            if seen.len() == calls.len() {
                for ((id, m, _), answer) in calls.iter().zip(seen) {
                    assert_eq!(
                        answer,
                        rpc::Message::Response {
                            msgid: *id,
                            error: Value::Nil,
                            result: Value::from(*m)
                        }
                    );
                }
                break;
            }
        }
    }
}
