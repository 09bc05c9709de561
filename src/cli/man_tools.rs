//! The prose of the tools' man pages (kumoctl, kumostat, kumotop, kumohash,
//! kumomergedb), in roff; [`super::man_text`] holds the daemons'.

use super::Role;

/// Prose sections of a tool's page; empty for a daemon.
pub(super) fn tool_sections(role: Role) -> &'static str {
    match role {
        Role::Ctl => {
            r#".SH DESCRIPTION
\fBkumoctl\fR shows a manager's view of the cluster and runs its control commands.
\fIMANAGER\fR is the manager's address (port 19700 by default).
.SH OUTPUT
\fBstatus\fR prints the hash space's time and Lamport clock, the attached servers
with \fB(active)\fR or \fB(fault)\fR, and the servers that keep in touch but are not
attached:
.PP
.nf
hash space timestamp:
  Thu Nov 26 08:15:55 +0000 2026 clock 62
attached node:
  127.0.0.1:19800  (active)
  127.0.0.1:19801  (fault)
not attached node:
  127.0.0.1:19801
.fi
.PP
While a replace runs, \fBstatus\fR adds its phase, how many servers have finished
it, and the records and bytes copied:
.PP
.nf
replace:
  copying (1 of 3 servers done), 12040 records, 1405311 bytes copied
.fi
.PP
A server whose store ran out of disk space is listed under \fBstore full\fR until a
write fits again:
.PP
.nf
store full (writes to their keys fail until space is freed):
  127.0.0.1:19800
.fi
.PP
\fBattach\fR and \fBdetach\fR start a replace (see \fBkumo\-manager\fR(1)); the
\fB\-noreplace\fR forms only change the tables, and a later \fBreplace\fR or
\fBattach\fR moves the data. \fBbackup\fR prints \fBsuffix=\fR\fIsuffix\fR and a line
per server with its backup's path. The other commands print \fIcommand\fR\fB: done\fR,
or \fB: nothing to do\fR when there was nothing to attach or detach. With \fB\-\-json\fR every command prints one
JSON object instead. A manager that cannot be reached is an error (exit status 1).
"#
        }
        Role::Stat => {
            r#".SH DESCRIPTION
\fBkumostat\fR prints one status value of a server (port 19800 by default), or with
\fB\-m\fR of every active attached server, each line then prefixed by the server's
address. \fBstats\fR prints memcached \fBSTAT\fR \fIname value\fR lines and \fBEND\fR;
\fBwhs\fR and \fBrhs\fR print a hash space as \fBkumoctl status\fR does, under
\fBnode:\fR. With \fB\-\-json\fR the output is one JSON object keyed by server
address. A server that cannot be reached is reported and makes the exit status 1.
"#
        }
        Role::Hash => {
            r#".SH DESCRIPTION
\fBkumohash\fR computes where keys are placed, with the code the gateway and the
servers route by: a key's hash is the first 8 bytes of its SHA\-1, read as a
little\-endian number; each server has 128 points on the ring; a key's owners are
the first three servers from its hash onwards. Give the servers (port 19800 by
default) in attach order before \fB\-\-\fR, or \fB\-m\fR \fIMANAGER\fR to use the
manager's write table.
.SH OUTPUT
\fBhash\fR: \fIhash\fR (16 hex digits), two spaces, the key. \fBassign\fR: that line,
then \fB  0:\fR \fIaddress\fR, \fB  1:\fR ..., \fB  2:\fR ... (a fault owner is marked
\fB(fault)\fR and is skipped when routing). \fBdump\fR: every ring point and its server.
"#
        }
        Role::Top => {
            r#".SH DESCRIPTION
\fBkumotop\fR shows every server of a cluster on one screen, refreshed every
\fB\-i\fR seconds like \fBtop\fR(1): one row per server with its gets, sets and deletes
per second (over the last interval), its items, the bytes of its store, and its
replace state (ready, waiting, copying, deleting, inactive) with the records it has
sent and received in the newest replace. A server that does not answer is shown
\fBdown\fR with the reason, and the others go on. With \fB\-m\fR the servers are asked of
the manager at every frame, so a server that joins appears.
.PP
\fBq\fR or Ctrl\-C quits and gives the terminal back as it was (so do SIGTERM and
SIGHUP). \fB\-\-once\fR prints one frame as plain text after one interval and exits;
\fB\-\-json\fR prints it as one JSON document. When standard output is not a terminal,
frames are printed one after another.
.SH OUTPUT
The heading, then \fBSERVER STATE GET/s SET/s DEL/s ITEMS BYTES REPLACE\fR and a row
per server; numbers past 999 are shortened (1.2k, 3.4M). The JSON document is
\fB{"time":\fR\fIunix\fR\fB,"servers":[{"server":...,"up":true,"get_per_sec":...,"set_per_sec":...,"delete_per_sec":...,"items":...,"bytes":...,"replace":{"state":...,"records_sent":...,"records_received":...}}]}\fR,
a server that does not answer being \fB{"server":...,"up":false,"error":...}\fR. The exit
status is 1 when no server answered.
.SH EXAMPLE
.nf
kumotop \-m 127.0.0.1
kumotop \-\-once svr1 svr2 svr3
kumotop \-\-json \-i 5 \-m mgr1 | jq '.servers[] | select(.up == false)'
.fi
"#
        }
        Role::Log => {
            r#".SH DESCRIPTION
\fBkumolog\fR prints the binary log that \fBkumo\-manager\fR, \fBkumo\-server\fR and
\fBkumo\-gateway\fR write with \fB\-g\fR \fIFILE\fR, a record a line. \fIFILE\fR \fB\-\fR reads
standard input. Without \fB\-t\fR or \fB\-h\fR every record is printed.
.PP
\fB\-t\fR prints the last \fIN\fR records and \fB\-h\fR the first \fIN\fR (\fB\-n\fR, 10 by
default). A negative \fB\-n \-\fR\fIN\fR turns them round: \fB\-t \-n \-\fR\fIN\fR skips the
first \fIN\fR, \fB\-h \-n \-\fR\fIN\fR leaves out the last \fIN\fR. \fB\-f\fR prints the last
\fIN\fR and then each new record as it is written, as \fBtail \-f\fR does, and goes on
from the start of a new file when logrotate moves the old one away.
.PP
Damaged bytes are skipped up to the next record that reads, and counted on
standard error; so is an unfinished record at the end (a process killed while
writing it).
.SH OUTPUT
\fIYYYY\-MM\-DD HH:MM:SS.mmm\fR (local time) \fILEVEL\fR \fIROLE\fR \fIEVENT\fR, then the
fields as \fIname\fR\fB=\fR\fIvalue\fR sorted by name. The events: \fBstart\fR (version, pid,
listen) and \fBstop\fR (signal) of every daemon; on a manager \fBserver_joined\fR and
\fBserver_lost\fR (server), \fBattach_detach\fR (attached, detached, replace),
\fBreplace_start\fR and \fBreplace_phase\fR (id, phase, servers, records, bytes) and
\fBreplace_end\fR (id, records, bytes); on a server \fBreplace_copy_done\fR (id,
records, bytes, ms, failed) and \fBreplace_delete_done\fR (id, erased, failed, ms);
and \fBerror\fR (module, message) for every error a daemon logs.
.PP
The file is a sequence of records, each a 4\-byte big\-endian length and a msgpack
array [\fItime_ms\fR, \fIlevel\fR, \fIrole\fR, \fIevent\fR, {\fIfield\fR: \fIvalue\fR}].
.SH EXAMPLE
.nf
kumo\-manager \-l svr1 \-g /var/log/kumo/manager.mpac
kumolog \-t \-n 50 /var/log/kumo/manager.mpac
kumolog \-f /var/log/kumo/manager.mpac
.fi
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
        _ => "",
    }
}
