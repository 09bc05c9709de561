//! kumomergedb through the binary: newer ClockTime wins, tombstones included.

mod common;
use common::kumo_bin;
use kumo::store::{Kind, Options, Record, Store};

#[test]
fn merge_keeps_the_newest_record_of_every_key_and_reports_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, dst) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("merged"),
    );
    {
        let sa = Store::open(&a, Options::default()).unwrap();
        let sb = Store::open(&b, Options::default()).unwrap();
        for i in 0..100u64 {
            let k = format!("k{i}");
            sa.put(
                k.as_bytes(),
                &Record::value(100 + i, 1, 0, format!("a{i}").into_bytes()),
            )
            .unwrap();
            // b is newer for even keys, older for odd ones.
            let c = if i % 2 == 0 { 200 + i } else { 50 + i };
            sb.put(
                k.as_bytes(),
                &Record::value(c, 2, 0, format!("b{i}").into_bytes()),
            )
            .unwrap();
        }
        // A newer delete in b wins over a's value; an older delete in a loses.
        sb.delete(b"k1", 1000).unwrap();
        sa.delete(b"k2", 10).unwrap();
    }
    let out = std::process::Command::new(kumo_bin())
        .args([
            "mergedb",
            dst.to_str().unwrap(),
            a.to_str().unwrap(),
            b.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "merging {}... 100 records read, 100 written, 0 skipped",
            a.display()
        )),
        "{text}"
    );
    assert!(
        text.contains("200 records read, 151 written, 49 skipped"),
        "{text}"
    );
    let m = Store::open(&dst, Options::default()).unwrap();
    for i in 0..100u64 {
        let r = m.get(format!("k{i}").as_bytes()).unwrap().unwrap();
        match i {
            1 => assert_eq!((r.kind, r.clock), (Kind::Tombstone, 1000)),
            _ if i % 2 == 0 => assert_eq!(r.data, format!("b{i}").into_bytes()),
            _ => assert_eq!(r.data, format!("a{i}").into_bytes()),
        }
    }
    assert_eq!(m.items(kumo::time::unix_now()), 99);
    let usage = std::process::Command::new(kumo_bin())
        .args(["mergedb", "only-one"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
}
