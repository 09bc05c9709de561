//! Man pages, generated from the option table and the prose below. `make man` writes
//! them into `man/`; a test fails when a page there differs from what this produces,
//! so a changed option cannot ship with a stale page.

use super::options::{self, Kind};
use super::{Role, VERSION};

/// Escapes text for roff: backslashes and leading dots or quotes.
fn esc(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with(['.', '\'']) {
        format!("\\&{t}")
    } else {
        t
    }
}

fn header(name: &str, summary: &str) -> String {
    format!(
        ".TH {} 1 \"\" \"kumo {VERSION}\" \"kumo manual\"\n.SH NAME\n{} \\- {}\n",
        name.to_uppercase(),
        esc(name),
        esc(summary)
    )
}

const COMMON_SECTIONS: &str = r#".SH EXIT STATUS
0 on success, 1 on a runtime failure (a store that cannot be opened, an address that
cannot be bound), 2 on a usage error (an unknown option, a bad value, a missing
required option). A usage error names the option and the form it expects.
.SH SIGNALS
SIGINT and SIGTERM stop the process cleanly after the store is flushed.
SIGPIPE is ignored.
.SH LOGGING
Each log line carries the local time, the level, the module and the message.
Without \fB\-v\fR only warnings and errors are shown; with it, debug messages too.
Colours are used only when the log goes to a terminal.
"#;

/// Prose sections specific to a role, in roff.
fn role_sections(role: Role) -> &'static str {
    match role {
        Role::Server => {
            r#".SH DESCRIPTION
\fBkumo\-server\fR is the storage node of a kumo cluster. It listens on the address
given by \fB\-l\fR, which is also the address other nodes use to reach it and its
identity on the hash ring. It serves msgpack\-rpc: any msgpack\-rpc client can call
its methods.
.SH RPC METHODS
.TP
\fBGetStatus\fR [\fIname\fR]
Returns one status value: \fBpid\fR, \fBuptime\fR (seconds), \fBtime\fR (unix
seconds) or \fBversion\fR. An unknown name is an error reply; the connection stays
open.
.TP
\fBKeepAlive\fR []
Returns nil. Peers call it on idle links.
.SH STORE
The store is a directory of numbered segment files holding checksummed records,
with hint files that let it reopen without reading every value, and a LOCK file
holding the pid of the process that has it open. A write is in the file before it is
acknowledged, so killing the process loses nothing acknowledged; \fB#sync=\fR decides
when it is also flushed to the disk. On open, a torn record at the end is cut off
and logged with its size; a damaged record elsewhere is reported and never served.
Segments with many overwritten or deleted records are compacted while the server
runs. Deleted keys leave tombstones, collected after \fB\-gX\fR seconds (or \fB\-gN\fR
once their bookkeeping passes \fB\-gS\fR KiB).
"#
        }
        Role::MergeDb => {
            r#".SH DESCRIPTION
\fBkumomergedb\fR merges the stores or backups \fISRC\fR into the store \fIDST\fR,
creating it if needed. For each key the record with the newer ClockTime wins, so a
delete (tombstone) wins over an older value and loses to a newer one. Backups made by
\fBkumoctl backup\fR are stores and can be merged directly. A source that is in use by
a running server is refused.
.SH OUTPUT
One line per source: \fBmerging\fR \fISRC\fR\fB...\fR \fIN\fR \fBrecords read,\fR \fIW\fR
\fBwritten,\fR \fIS\fR \fBskipped\fR; then a summary line with the totals and the number of
damaged records, which are skipped and make the exit status 1.
.SH EXAMPLE
kumomergedb /var/kumo/merged /backup/db\-20261126 /backup/db2\-20261126
"#
        }
    }
}

/// The man page of a role.
pub fn page(role: Role) -> String {
    let mut s = header(role.program(), role.summary());
    s += ".SH SYNOPSIS\n";
    s += &format!("\\fB{}\\fR", esc(role.program()));
    for o in options::for_role(role).filter(|o| o.required) {
        s += &format!(
            " \\fB\\-{}\\fR \\fI{}\\fR",
            esc(o.short.unwrap_or(o.long)),
            esc(o.kind.placeholder())
        );
    }
    s += " [\\fIoptions\\fR]";
    if !role.positional_usage().is_empty() {
        s += &format!(" {}", esc(role.positional_usage()));
    }
    s += "\n.br\n";
    s += &format!("\\fBkumo {}\\fR ...\n", esc(role.subcommand()));
    s += role_sections(role);
    s += ".SH OPTIONS\n";
    for o in options::for_role(role) {
        s += ".TP\n";
        if let Some(sh) = o.short {
            s += &format!("\\fB\\-{}\\fR, ", esc(sh));
        }
        s += &format!("\\fB\\-\\-{}\\fR", esc(o.long));
        if o.kind != Kind::Switch {
            s += &format!(" \\fI{}\\fR", esc(o.kind.placeholder()));
        }
        s += "\n";
        s += &esc(o.help);
        if o.kind != Kind::Switch {
            s += &format!(" Expects {}.", esc(&o.kind.expected()));
        }
        if o.required {
            s += " Required.";
        }
        if let Some(d) = o.default {
            s += &format!(" Default: {}.", esc(d));
        }
        s += "\n";
    }
    s += ".TP\n\\fB\\-h\\fR, \\fB\\-\\-help\\fR\nPrint the options and exit.\n";
    s += ".TP\n\\fB\\-\\-version\\fR\nPrint the version and exit.\n";
    s += COMMON_SECTIONS;
    s += ".SH SEE ALSO\n\\fBkumo\\fR(1)\n";
    s
}

/// kumo(1): the multicall binary itself.
pub fn kumo_page() -> String {
    let mut s = header(
        "kumo",
        "a distributed key\u{2011}value store speaking the memcached protocol",
    );
    s += ".SH SYNOPSIS\n\\fBkumo\\fR \\fIROLE\\fR [\\fIoptions\\fR]\n.br\n\\fBkumo\\-\\fR\\fIROLE\\fR [\\fIoptions\\fR]\n";
    s += r#".SH DESCRIPTION
\fBkumo\fR is one executable that plays every role of a kumo cluster. It picks the
role from the name it was run as (a symlink such as \fBkumo\-server\fR) or from its
first argument (\fBkumo server\fR).
.SH ROLES
"#;
    for r in Role::ALL {
        s += &format!(
            ".TP\n\\fB{}\\fR (\\fBkumo {}\\fR)\n{}\n",
            esc(r.program()),
            esc(r.subcommand()),
            esc(r.summary())
        );
    }
    s += ".SH OPTIONS\n.TP\n\\fB\\-h\\fR, \\fB\\-\\-help\\fR\nList the roles and exit.\n.TP\n\\fB\\-V\\fR, \\fB\\-\\-version\\fR\nPrint the version and exit.\n";
    s += ".SH EXIT STATUS\n0 on success, 2 for an unknown role. Each role documents its own.\n";
    s += ".SH SEE ALSO\n";
    let refs: Vec<String> = Role::ALL
        .iter()
        .map(|r| format!("\\fB{}\\fR(1)", esc(r.program())))
        .collect();
    s += &refs.join(", ");
    s += "\n";
    s
}

/// Every page as (file name, content).
pub fn all_pages() -> Vec<(String, String)> {
    let mut pages = vec![("kumo.1".to_string(), kumo_page())];
    for r in Role::ALL {
        pages.push((format!("{}.1", r.program()), page(*r)));
    }
    pages
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed pages must be what the table produces. `make man` regenerates
    /// them (it runs this test with KUMO_WRITE_MAN=1).
    #[test]
    fn man_pages_in_the_tree_are_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
        let write = std::env::var_os("KUMO_WRITE_MAN").is_some();
        for (name, content) in all_pages() {
            let path = dir.join(&name);
            if write {
                std::fs::write(&path, &content).unwrap();
            }
            let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(on_disk == content, "man/{name} is stale: run `make man`");
        }
    }

    #[test]
    fn every_option_is_in_its_page() {
        for r in Role::ALL {
            let p = page(*r);
            for o in options::for_role(*r) {
                assert!(
                    p.contains(&format!("\\-\\-{}", esc(o.long))),
                    "{} lacks --{}",
                    r.program(),
                    o.long
                );
            }
        }
    }
}
