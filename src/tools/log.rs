//! kumolog [options] FILE: the binary log of `-g` as text, a record a line, as
//! the guide has it: `-t` the last N records, `-h` the first N, `-n [-]N` sets N
//! (negative: `-t -n -N` skips the first N, `-h -n -N` leaves out the last N), `-f`
//! follows the file as `tail -f` does, through logrotate's renames. Damaged bytes
//! are skipped, with a warning, up to the next record that reads.

use crate::cli::options::{Kind, Opt, OptionList};
use crate::cli::{Args, EXIT_FAILURE, EXIT_OK};
use crate::proto::binlog::{self, Read, Record};
use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

/// The options of kumolog, the guide's.
pub static OPTIONS: OptionList = &[OWN_OPTIONS];

#[rustfmt::skip]
static OWN_OPTIONS: &[Opt] = &[
    Opt { short: Some("f"), long: "follow", kind: Kind::Switch, default: None, required: false,
        help: "After the records, print new ones as they are written, as tail -f does (the last N first, unless -h)." },
    Opt { short: Some("t"), long: "tail", kind: Kind::Switch, default: None, required: false,
        help: "Print only the last N records." },
    Opt { short: Some("h"), long: "head", kind: Kind::Switch, default: None, required: false,
        help: "Print only the first N records." },
    Opt { short: Some("n"), long: "lines", kind: Kind::Text, default: Some("10"), required: false,
        help: "N for -t and -h. A negative -N turns them round: -t -n -N skips the first N records, -h -n -N leaves out the last N." },
];

/// How often `-f` looks for new records.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Which records to print.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pick {
    All,
    Head(i64),
    Tail(i64),
}

/// The records `pick` keeps of `n`, as a range.
pub fn picked(pick: Pick, n: usize) -> std::ops::Range<usize> {
    let k = |v: i64| (v.unsigned_abs() as usize).min(n);
    match pick {
        Pick::All => 0..n,
        Pick::Head(v) if v >= 0 => 0..k(v),
        Pick::Head(v) => 0..n - k(v),
        Pick::Tail(v) if v >= 0 => n - k(v)..n,
        Pick::Tail(v) => k(v)..n,
    }
}

/// Records from the front of `buf`: those that read, the bytes they and any
/// damage took (the rest is an unfinished record), and the damaged bytes skipped.
pub fn scan(buf: &[u8]) -> (Vec<Record>, usize, usize) {
    let (mut records, mut at, mut damaged) = (Vec::new(), 0, 0);
    while at < buf.len() {
        match binlog::read(&buf[at..]) {
            Read::Record(r, len) => {
                records.push(r);
                at += len;
            }
            // A record that runs past the end is the unfinished last one, unless a
            // whole record follows: then its length was damage.
            Read::NeedMore => match (at + 1..buf.len())
                .find(|&i| matches!(binlog::read(&buf[i..]), Read::Record(..)))
            {
                Some(next) => {
                    damaged += next - at;
                    at = next;
                }
                None => break,
            },
            Read::Bad => {
                at += 1;
                damaged += 1;
            }
        }
    }
    (records, at, damaged)
}

/// One record as a line: local time with milliseconds, level, role, event, then
/// the fields sorted by name.
pub fn line(r: &Record) -> String {
    let secs = (r.time_ms / 1000) as libc::time_t;
    let time = crate::daemon::format_local(secs, "%Y-%m-%d %H:%M:%S");
    let mut fields: Vec<&(String, rmpv::Value)> = r.fields.iter().collect();
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = format!(
        "{time}.{:03} {:<5} {} {}",
        r.time_ms % 1000,
        r.level,
        r.role,
        r.event
    );
    for (k, v) in fields {
        out += &format!(" {k}={}", binlog::field_text(v));
    }
    out
}

pub fn main(args: Args) -> i32 {
    let program = args.role.program();
    let [file] = args.positional.as_slice() else {
        return super::usage(&args, "expected one FILE (or - for standard input)");
    };
    let n = match args.text("lines") {
        Some(t) => match t.trim().parse::<i64>() {
            Ok(v) => v,
            Err(_) => return super::usage(&args, &format!("-n: expected [-]N, not '{t}'")),
        },
        None => 10,
    };
    let (head, tail, follow) = (
        args.switch("head"),
        args.switch("tail"),
        args.switch("follow"),
    );
    if head && tail {
        return super::usage(&args, "-h and -t cannot go together");
    }
    let pick = match (head, tail || follow) {
        (true, _) => Pick::Head(n),
        (_, true) => Pick::Tail(n),
        _ => Pick::All,
    };
    let bytes = if file == "-" {
        let mut b = Vec::new();
        if let Err(e) = std::io::stdin().read_to_end(&mut b) {
            eprintln!("{program}: standard input: {e}");
            return EXIT_FAILURE;
        }
        b
    } else {
        match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{program}: {file}: {e}");
                return EXIT_FAILURE;
            }
        }
    };
    let (records, used, damaged) = scan(&bytes);
    if damaged > 0 {
        eprintln!("{program}: {file}: {damaged} damaged bytes skipped");
    }
    for r in &records[picked(pick, records.len())] {
        println!("{}", line(r));
    }
    if follow && file != "-" {
        return follow_file(Path::new(file), used as u64);
    }
    if used < bytes.len() {
        eprintln!(
            "{program}: {file}: the last {} bytes are an unfinished record",
            bytes.len() - used
        );
    }
    EXIT_OK
}

/// Prints records appended to `path` from `offset` on, forever. A file that
/// shrank or was replaced (logrotate) is read again from its start.
fn follow_file(path: &Path, mut offset: u64) -> i32 {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    let inode = |p: &Path| std::fs::metadata(p).map(|m| (m.ino(), m.len())).ok();
    let mut current = inode(path).map(|(i, _)| i);
    loop {
        std::thread::sleep(FOLLOW_POLL);
        let Some((ino, len)) = inode(path) else {
            continue;
        };
        if Some(ino) != current || len < offset {
            current = Some(ino);
            offset = 0;
        }
        if len == offset {
            continue;
        }
        let Ok(mut f) = std::fs::File::open(path) else {
            continue;
        };
        let mut buf = Vec::new();
        use std::io::Seek;
        if f.seek(std::io::SeekFrom::Start(offset)).is_err() || f.read_to_end(&mut buf).is_err() {
            continue;
        }
        let (records, used, _) = scan(&buf);
        let mut out = std::io::stdout().lock();
        for r in &records {
            if writeln!(out, "{}", line(r)).is_err() {
                return EXIT_OK;
            }
        }
        let _ = out.flush();
        offset += used as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_tail_and_their_negatives_pick_as_the_guide_says() {
        assert_eq!(picked(Pick::All, 5), 0..5);
        assert_eq!(picked(Pick::Head(2), 5), 0..2);
        assert_eq!(picked(Pick::Tail(2), 5), 3..5);
        assert_eq!(picked(Pick::Tail(-2), 5), 2..5, "skips the first 2");
        assert_eq!(picked(Pick::Head(-2), 5), 0..3, "leaves out the last 2");
        assert_eq!(picked(Pick::Tail(10), 5), 0..5);
        assert_eq!(picked(Pick::Head(-10), 5), 0..0);
    }

    #[test]
    fn a_record_prints_as_one_line_with_sorted_fields() {
        let r = Record {
            time_ms: 1_000_123,
            level: "WARN".into(),
            role: "manager".into(),
            event: "server_lost".into(),
            fields: vec![
                ("z".into(), rmpv::Value::from(1)),
                ("server".into(), rmpv::Value::from("127.0.0.1:19801")),
            ],
        };
        let l = line(&r);
        assert!(
            l.ends_with(".123 WARN  manager server_lost server=127.0.0.1:19801 z=1"),
            "{l}"
        );
        let mut log = binlog::encode(&r);
        log.extend([0xde, 0xad]);
        log.extend(binlog::encode(&r));
        log.extend(&binlog::encode(&r)[..7]);
        let (records, used, damaged) = scan(&log);
        assert_eq!((records.len(), damaged), (2, 2));
        assert_eq!(log.len() - used, 7, "the unfinished record is left");
    }
}
