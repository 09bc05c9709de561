//! kumomergedb DST SRC...: merges stores or backups into DST. Newer ClockTime wins,
//! so a tombstone wins over an older value and an older tombstone loses to a newer
//! value; records that lose are counted as skipped.

use crate::cli::options::{OptionList, LOGGING};
use crate::cli::{Args, EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::store::{Options, Store, SyncPolicy};

/// The options of kumomergedb, all shared with other tools.
pub static OPTIONS: OptionList = &[LOGGING];

pub fn main(args: Args) -> i32 {
    let program = args.role.program();
    if args.positional.len() < 2 {
        eprintln!(
            "{program}: expected a destination and at least one source: {program} DST SRC..."
        );
        eprintln!("Try '{program} --help' for more information.");
        return EXIT_USAGE;
    }
    let _ = crate::daemon::init_logging(&args);
    // Durability comes from the final sync, not from every write.
    let options = Options {
        sync: SyncPolicy::None,
        ..Options::default()
    };
    let dst = match Store::open(args.positional[0].as_ref(), options.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{program}: {e}");
            return EXIT_FAILURE;
        }
    };
    let (mut read, mut written, mut skipped, mut damaged) = (0u64, 0u64, 0u64, 0u64);
    for src_path in &args.positional[1..] {
        let src = match Store::open(src_path.as_ref(), options.clone()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{program}: {e}");
                return EXIT_FAILURE;
            }
        };
        // The newest flush point of the sources hides, in the result, what it hid
        // in each of them.
        if src.flush_point() > dst.flush_point() {
            if let Err(e) = dst.record_flush(src.flush_point()) {
                eprintln!("{program}: writing to {}: {e}", args.positional[0]);
                return EXIT_FAILURE;
            }
        }
        let (r0, w0, s0) = (read, written, skipped);
        for item in src.snapshot() {
            match item {
                Ok((key, rec)) => {
                    read += 1;
                    match dst.update(&key, &rec) {
                        Ok(true) => written += 1,
                        Ok(false) => skipped += 1,
                        Err(e) => {
                            eprintln!("{program}: writing to {}: {e}", args.positional[0]);
                            return EXIT_FAILURE;
                        }
                    }
                }
                Err(e) => {
                    damaged += 1;
                    eprintln!("{program}: {src_path}: {e}; record skipped");
                }
            }
        }
        println!(
            "merging {src_path}... {} records read, {} written, {} skipped",
            read - r0,
            written - w0,
            skipped - s0
        );
    }
    dst.close();
    println!("merged {} sources into {}: {read} records read, {written} written, {skipped} skipped (older or equal), {damaged} damaged",
        args.positional.len() - 1, args.positional[0]);
    if damaged > 0 {
        EXIT_FAILURE
    } else {
        EXIT_OK
    }
}
