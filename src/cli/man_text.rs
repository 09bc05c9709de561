//! The prose of the man pages, in roff: the sections every page shares, and each
//! role's own. [`super::man`] puts them together with each role's option list.

use super::Role;

pub(super) const COMMON_SECTIONS: &str = r#".SH EXIT STATUS
0 on success, 1 on a runtime failure (a store that cannot be opened, an address that
cannot be bound), 2 on a usage error (an unknown option, a bad value, a missing
required option). A usage error names the option and the form it expects.
.SH SIGNALS
SIGINT and SIGTERM stop the process cleanly after the store is flushed.
SIGHUP reopens the log files of \fB\-o\fR and \fB\-g\fR by their names, so that
logrotate can move them away: rename the file, then send SIGHUP, and the next line goes to a new file of the
old name (the reopen itself is logged there). \fBkumo local\fR passes SIGHUP on to its
children, which reopen theirs. SIGPIPE is ignored.
.SH HOST NAMES
An address may name a host. kumo looks the name up in \fB/etc/hosts\fR itself
(\fBlocalhost\fR is the loopback even without it), then asks the system resolver
(DNS). A statically linked kumo (\fBmake static\fR) has no resolver libraries: it
takes numeric addresses, \fBlocalhost\fR and the names of \fB/etc/hosts\fR, and DNS
names only where the glibc NSS libraries it was built with are installed.
.SH LOGGING
Each log line carries the local time, the level, the module and the message.
Without \fB\-v\fR only warnings and errors are shown; with it, debug messages too.
With \fB\-v\fR and the environment variable \fBKUMO_TRACE\fR set, a server also logs a
line per request (reads, coordinated writes, replica writes), for chasing a bug.
Colours are used only when the log goes to a terminal.
"#;

/// Prose sections specific to a role, in roff.
pub(super) fn role_sections(role: Role) -> &'static str {
    match role {
        Role::Manager => {
            r#".SH DESCRIPTION
\fBkumo\-manager\fR keeps the list of servers of a kumo cluster and its two hash
spaces: \fIwhs\fR routes writes and \fIrhs\fR routes reads. A server that keeps in
touch with the manager but is not yet part of the hash spaces is \fInot attached\fR
until \fBkumoctl attach\fR (or auto replace, \fB\-a\fR) attaches it; one that the
manager cannot reach at that moment (it died after keeping in touch) is left
waiting, with a warning in the log, rather than attached only to be marked fault.
The manager watches every server with keepalives every \fB\-Ci\fR seconds; a server whose
connection fails \fB\-Yn\fR reconnects of up to \fB\-Ys\fR seconds each is lost and
marked \fB(fault)\fR. A fault server keeps its place on the ring, so its keys have
one copy fewer until it comes back and is attached again, or is detached.
.PP
Every change is pushed at once to every server and gateway; keepalives carry the
tables too, so a lost push is repaired within one interval. Nothing is stored on
disk: a restarted manager learns the tables back from the servers as they keep in
touch (the newer table wins), and watches every server those tables call active,
whether it has heard from it or not, so a server that died while the managers were
down is found and marked fault too. Until it has heard a full keepalive interval
(\fB\-Ci\fR, plus a second), or has heard its partner, it holds requests that
change the tables (\fBattach\fR, \fBdetach\fR, \fBreplace\fR, auto replace) and
carries them out then: an attach before that would build a table from only the
servers heard so far. With every manager down, servers and gateways go on serving
with the last tables they have.
.PP
Anyone who can reach the port can send a keepalive, so registrations are bounded:
the manager watches at most 1024 servers, attached or not, and refuses keepalives
from further unknown addresses; a server that is never attached and stops keeping
in touch is forgotten. Hash spaces stamped more than 60 seconds ahead of this
host's clock are refused, not adopted. With \fB\-\-cluster\-key\fR \fIFILE\fR,
every connection to any node must open with the request \fBAuth\fR
[\fItoken\fR], the token being the SHA\-1 of the bytes \fBkumo cluster key\fR, a
zero byte and the file's contents without trailing whitespace; anything else first,
or a wrong token, gets an error reply and a closed connection. Every node and tool
of the cluster must be given the same file.
.SH PARTITIONS
A cut the manager cannot see (between a gateway and a server, or between servers,
while the manager reaches everyone) would otherwise stall the writes of the cut
server's keys for as long as it lasts. Gateways and servers therefore report the
servers they cannot reach (a link silent for 1.5 s with requests waiting, or a
failed connect, within the last 1.5 seconds) with \fBReportUnreachable\fR, to every
manager. A report names every server its reporter cannot reach now, and replaces
the reporter's last one; when a server it named answers again, the reporter says
so in a new report (with none named, if it reaches them all), so that a cut that
healed before the decision blames no one. The leading manager gathers the reported broken links for 0.4 seconds
after the first, and then blames nodes in order of how many broken links they
have, marking a blamed server fault as if it had lost it. On a tie it blames a
server before a gateway, then one it does not hear from itself, then one that did
not report (a reporter is alive), then the larger address. A decision uses up the
reports it was made on, and the reports of a server are forgotten, and ignored for
2 seconds, when it is lost, restarts or is attached; a cut that lasts is reported
again. A blamed gateway
cannot be marked fault, so its links are set aside; the last active server is never marked fault. So a server cut from
everyone, or from its peers, is marked fault whichever side reports first; a
gateway cut from one server has that server marked fault, and its keys are served
by their two other owners until it is attached again; a gateway cut from several
servers marks none, and its clients get errors within its deadline; of two servers
cut only from each other, one is marked fault. Found silent, a server is marked
fault within about 2 seconds; after the link heals, \fBkumoctl attach\fR (or auto
replace) brings it back and the replace sends it what it missed.
.PP
The \fB\-l\fR port also serves \fBkumoctl\fR; \fB\-c\fR opens a second port for it.
.SH REPLACE
Attaching or detaching servers changes whs; a \fIreplace\fR then moves the data, in
two phases. In the copy phase every server sends each record (tombstones included)
that it is the first live old owner of to the key's new owners, over their stream
ports (\fB\-L\fR); the receiver keeps the newer version. Writes already follow the new
whs, reads still follow rhs. When every server has reported the copy done, rhs :=
whs and each server drops the records it no longer owns (the delete phase). Each
replace has an id (the whs timestamp); start messages and the servers' reports are
repeated until acknowledged. If a server is lost during a replace, the replace
starts over on the new tables. A replace that was started finishes without an
operator while any manager lives: each server tells the managers in its keepalives
which replace it was last asked to run, and the leading manager (the smaller
address, or the only one reachable) starts again any replace whose reads still use
the old table, its own or one whose manager restarted or was lost. A manager
restarted after a \fB\-noreplace\fR change has forgotten that the move was put off,
and finishes it. \fBkumoctl status\fR shows a running replace.
.PP
The first attach of a new cluster moves nothing: there is no data yet, so reads
follow the new table at once. In general reads always have a table to follow
whenever writes do: a read table with no active server becomes the write table.
\fBfull\-replace\fR sends every record to every owner (a repair after three or more
servers were lost at once).
.PP
A server that comes back with its old store is safe: while it was away it was
fault, so the replace that attaches it again sends it every newer value and every
tombstone it missed. A server restarted so fast that no keepalive missed it is
recognised by its new start time and treated the same way. Tombstones are not
collected while any server is fault, so this holds however long it was away, as
long as it was not detached meanwhile. A detached server that returns after longer
than \fB\-gN\fR copies its store aside and starts empty by itself (see
\fBkumo\-server\fR(1)).
.SH BACKUP AND RESTORE
\fBkumoctl backup\fR [\fIsuffix\fR] makes every server write a consistent copy of its
store at \fIPATH\fR\fB\-\fR\fIsuffix\fR while it keeps serving. To restore, merge
the copies with \fBkumomergedb\fR, put the merged store in place as every server's
\fB\-s\fR store, start the servers and run \fBkumoctl attach\fR: the replace's delete
phase trims what each server does not own.
.SH TWO MANAGERS
Start each with \fB\-p\fR naming the other. They keep each other's hash spaces in
step (newer wins) over a link whose keepalives carry the tables, so a lost update is
repeated until the partner has it. Servers and gateways are given both (\fB\-m\fR and
\fB\-p\fR) and take whichever table is newer. A replace runs on the manager that was
asked (or, for auto replace, on the one with the smaller address while both are
up); servers report to every manager that asked for it. A restarted manager catches up
from its partner and from the servers by itself; \fBkumoctl replace\fR on the
surviving manager also brings both in line. With every manager down, data keeps
flowing on the last tables; restarted managers learn the tables back from the
servers, and \fBkumoctl attach\fR attaches any server that is new.
.SH RPC METHODS
msgpack\-rpc over TCP; any msgpack\-rpc client can call them.
.TP
\fBGetNodesInfo\fR []
A map: \fBwhs\fR, \fBrhs\fR (each \fB[[node...], clocktime]\fR, a node being a
binary of one active byte and the address), \fBnewcomers\fR (the addresses not
attached) and \fBauto_replace\fR.
.TP
\fBAttachNewServers\fR [\fIreplace\fR], \fBDetachFaultServers\fR [\fIreplace\fR]
Attach every newcomer, or detach every fault server; true if the tables changed.
.TP
\fBSetAutoReplace\fR [\fIenable\fR]
Switches auto replace and returns the old setting; enabling it attaches and
detaches at once.
.TP
\fBHashSpaceRequest\fR [\fIwhs_clock\fR, \fIrhs_clock\fR, \fIwait_ms\fR]
\fB[whs, rhs]\fR, after waiting up to \fIwait_ms\fR for them to differ from the
given versions (gateways keep one such request open).
.TP
\fBStartReplace\fR [\fIfull\fR]
Starts a replace to the current whs.
.TP
\fBCreateBackup\fR [\fIsuffix\fR]
Every server backs up its store; the answer lists each server with its backup's
path or the error.
.TP
\fBReplaceCopyEnd\fR, \fBReplaceDeleteEnd\fR [\fIclock\fR, \fIid\fR, \fIaddress\fR, ...]
A server's report that it finished a phase of replace \fIid\fR.
.TP
\fBKeepAlive\fR [\fIclock\fR, \fIaddress\fR, \fIwhs\fR, \fIrhs\fR, \fIstream_port\fR, \fIincarnation\fR, \fIreplace_id\fR, \fIstore_full\fR, \fIlost_data\fR, \fIflush_point\fR]
A server keeping in touch; answered with \fB[whs, rhs, flush_point]\fR, the newest
flush_all point any server reported.
.TP
\fBHashSpaceSync\fR [\fIclock\fR, \fIwhs\fR, \fIrhs\fR]
The partner's tables; true if any was newer and taken.
.TP
\fBReportUnreachable\fR [\fIreporter\fR, [\fIaddress\fR...]]
A server (\fIreporter\fR is its address) or a gateway (an integer id it chose)
cannot reach these servers now, and reaches the others it named before (the
list may be empty); see PARTITIONS.
.SH LOG
With \fB\-v\fR: \fBnew node\fR \fIaddress\fR when a server first keeps in touch,
\fBlost node\fR \fIaddress\fR when one is lost, and a line for every change of the
tables.
.SH METRICS
With \fB\-\-metrics\fR \fIADDRESS\fR, \fBGET /metrics\fR answers in the Prometheus text
format (0.0.4): \fBkumo_manager_servers\fR{state=active|fault|not_attached},
\fBkumo_manager_full_servers\fR, \fBkumo_manager_auto_replace\fR,
\fBkumo_manager_replace_phase\fR{phase=none|copying|settling|deleting} and the running
replace's \fBkumo_manager_replace_servers\fR, \fB_servers_done\fR, \fB_records\fR and
\fB_bytes\fR.
.PP
\fBkumo_peer_link_up\fR{peer} (1 while the link to that server is connected and
answers), \fBkumo_hash_space_time_seconds\fR{table=whs|rhs} and
\fBkumo_hash_space_clock\fR{table} (the two parts of each hash space's ClockTime),
\fBkumo_uptime_seconds\fR.
"#
        }
        Role::Server => {
            r#".SH DESCRIPTION
\fBkumo\-server\fR is the storage node of a kumo cluster. It listens on the address
given by \fB\-l\fR, which is also the address other nodes use to reach it and its
identity on the hash ring. It keeps in touch with its manager(s) every \fB\-Ci\fR
seconds and takes the newer hash spaces from them.
.PP
Each key has up to three owners: the first three servers on the hash ring from the
key's hash. A write goes to the key's \fIcoordinator\fR, its first active owner in
whs. The coordinator refuses a write it does not coordinate (answering its own
tables, so the sender can catch up), decides it atomically against the stored
record (add, cas, incr and the rest), stamps it with a new ClockTime (unix seconds
and a Lamport counter; also the memcached CAS value), stores it, and sends it to the
other active owners. It answers only once every one of them has stored it. An owner
it cannot reach is retried until the manager marks it fault (it is then not an owner
and not waited for) or the write's deadline passes: the gateway gives each write
what is left of its \fB\-\-deadline\fR, and the coordinator answers the error
\fBdeadline passed before every owner stored the write\fR 0.1 s before it runs out
(20 seconds for a caller that gives none). Replicas keep the newer version of a
key, so late or repeated copies do no harm.
.PP
Links to other servers are watched as the gateway's are (a heartbeat after 250 ms
of silence with requests waiting, dead after 1.5 s, then aborted so that nothing
sent on it arrives late). A server that cannot reach a peer, or cannot connect to
it, reports it to the managers, which mark it fault unless the reporter is the one
cut off (see \fBkumo\-manager\fR(1)). A replica whose tables call the coordinator of
a write fault refuses the write without storing it; the coordinator, learning that
the cluster has marked it fault, drops its own copy of the key and answers with its
new tables, and the gateway retries on the key's next owner. So a server cut off
from the cluster, which may not know it yet, never lands a write, and comes back
without one that could outlive the writes made while it was away.
.PP
Hosts must keep their clocks within a second or two of each other (NTP): versions
compare their seconds first. A version more than 60 seconds ahead of this host's
clock (a hash space, or a record sent by a replica, a replace or a coordinator) is
refused and logged, not taken: it would win every later comparison. So is a message
counter that would jump by half the counter space. Frames between nodes are bounded
by the largest value (64 MiB) plus 64 KiB for its key and headers, so a value of
any allowed size replicates on the same link.
.PP
A member server records in its store (the file \fBmember\fR, every 30 seconds)
that it belongs to the cluster. Servers hold back tombstone collection while a
server of the cluster is fault, so one that comes back from a fault is safe; one
that was \fIdetached\fR is not waited for. A server that starts with records,
finds the cluster's tables without itself, and last belonged longer ago than
\fB\-gN\fR seconds could bring back values deleted meanwhile (their tombstones may
have been collected everywhere else). It therefore copies its store aside to
\fIPATH\fR\fB\-stale\-\fR\fIunixtime\fR (hard links, as a backup), empties it, logs
an error that says so, and the replace after its \fBattach\fR fills it again. A
store that never belonged (a new one, or one merged from backups by
\fBkumomergedb\fR for a restore) is served as it is.
.PP
A write that finds the disk full (ENOSPC, EDQUOT) is refused at once with the
error \fBout of memory storing object\fR, which the gateway passes to the client
as memcached would (\fBSERVER_ERROR out of memory storing object\fR), without
retrying; the log names the file. Nothing of the refused write stays behind, reads
and deletes go on, and writes work again as soon as space is freed. No error sent
to a peer carries a file path.
.PP
A read is answered only by a server that holds the data: an active owner in rhs,
or, while a replace settles, an owner in the whs that the asking gateway already
reads by. A new or wiped server that owns a key only in whs refuses the read (with
its tables), and the gateway asks the next owner.
.SH RPC METHODS
msgpack\-rpc over TCP.
.TP
\fBGetStatus\fR [\fIname\fR]
One status value: \fBpid\fR, \fBuptime\fR (seconds), \fBtime\fR (unix seconds),
\fBversion\fR, \fBcmd_get\fR, \fBcmd_set\fR, \fBcmd_delete\fR (requests served
since start), \fBitems\fR (keys with a value), \fBclocktime\fR, \fBwhs\fR, \fBrhs\fR,
\fBhscheck\fR (whs and rhs hold the same servers), \fBstore_full\fR (the last
write found the disk full), \fBgroup_commits\fR (fsyncs made for acknowledgements
under \fB#sync=always\fR) or \fBstats\fR (a map of the counters). An unknown name is an error reply; the connection stays open.
.TP
\fBGet\fR [\fIkey\fR], \fBWrite\fR [\fIkey\fR, \fIop\fR, \fIarg\fR, \fIflags\fR, \fIexptime\fR, \fIdata\fR, \fIasync\fR, \fIbudget_ms\fR], \fBReplicate\fR [\fIclock\fR, \fIkey\fR, \fIrecord\fR, \fIwhs_clock\fR, \fIcoordinator\fR]
The data path used by gateways and other servers.
.TP
\fBHashSpaceSync\fR [\fIclock\fR, \fIwhs\fR, \fIrhs\fR], \fBKeepAlive\fR [\fIclock\fR]
From the manager.
.TP
\fBReplaceCopyStart\fR, \fBReplaceDeleteStart\fR, \fBCreateBackup\fR [\fIsuffix\fR]
From the manager: the phases of a replace (see \fBkumo\-manager\fR(1)), and a backup
of the store to \fIPATH\fR\fB\-\fR\fIsuffix\fR.
.TP
\fBReplacePush\fR [\fIclock\fR, \fIid\fR, \fIrecords\fR]
On the stream port (\fB\-L\fR) only: records sent by other servers during a replace,
applied newer\-wins. \fIrecords\fR is one binary holding records in the store's
format (see \fBSTORE\fR), each with its checksum; a record that fails its check
refuses the push. The copy sends at most \fB\-M\fR bytes ahead.
.TP
\fBSetConfig\fR [\fB"nodelay"\fR, \fIbool\fR]
Sets TCP_NODELAY on every socket of the process; returns how many took it.
.SH STORE
The store is a directory of numbered segment files holding checksummed records,
with hint files that let it reopen without reading every value, and a LOCK file
holding the pid of the process that has it open. A write is in the file before it is
acknowledged, so killing the process loses nothing acknowledged; \fB#sync=\fR decides
when it is also flushed to the disk. With \fB#sync=always\fR a write is answered once
an fsync that began after it has returned, and writes that arrive together share one
fsync (group commit): a write is never answered before it is on the disk, and the
server goes on serving while the disk works. When that fsync fails, the writes it was
to cover are answered with an error. On open, a torn record at the end is cut off
and logged with its size; a damaged record elsewhere is reported and never served.
Segments with many overwritten or deleted records are compacted while the server
runs. Deleted keys leave tombstones, collected after \fB\-gX\fR seconds (or \fB\-gN\fR
once their bookkeeping passes \fB\-gS\fR KiB), but never while a server of the cluster
is fault: the tombstones are what keep that server's stale values from coming back
when it returns with its old store.
.SH METRICS
With \fB\-\-metrics\fR \fIADDRESS\fR, \fBGET /metrics\fR answers in the Prometheus text
format (0.0.4): \fBkumo_server_requests_total\fR{command=get|set|delete},
\fBkumo_server_replicate_failures_total\fR; the store's \fBkumo_store_items\fR,
\fBkumo_store_bytes\fR, \fBkumo_store_segments\fR, \fBkumo_store_compactions_total\fR,
\fBkumo_store_group_commits_total\fR (fsyncs made for acknowledgements under \fB#sync=always\fR)
and \fBkumo_store_full\fR; the replace's \fBkumo_replace_state\fR{state=inactive|ready|waiting|copying|deleting},
\fBkumo_replace_id\fR, \fBkumo_replace_records_total\fR{direction=sent|received},
\fBkumo_replace_sent_bytes_total\fR, \fBkumo_replace_erased_total\fR and
\fBkumo_replace_phase_seconds\fR{phase=copy|delete}.
.PP
\fBkumo_peer_link_up\fR{peer} (1 while the link to that server is connected and
answers), \fBkumo_hash_space_time_seconds\fR{table=whs|rhs} and
\fBkumo_hash_space_clock\fR{table} (the two parts of each hash space's ClockTime),
\fBkumo_uptime_seconds\fR.
"#
        }
        Role::Gateway => {
            r#".SH DESCRIPTION
\fBkumo\-gateway\fR serves the memcached text protocol to applications, which see
it as a memcached on \fB\-t\fR. It routes each request by the key's hash: reads by
rhs, writes by whs to the key's coordinator, never elsewhere.
.PP
Every request is answered within \fB\-\-deadline\fR seconds (0.8 by default, below
a client's usual 1 s timeout): a value, a miss, or \fBSERVER_ERROR\fR, never
silence. Retries happen only within it.
.PP
A get asks the key's first active owner in rhs, passing over servers that are
\fIsuspect\fR (a link silent for 250 ms with requests waiting, or a failed
connect). If no answer has come after 40 ms it asks the next owner as well, and
the first answer wins; any owner in rhs may answer, because a write is
acknowledged only once all of them hold it. An error moves on to the next owner at
once; after every owner has failed, the round starts again 0.1 s later, up to
\fB\-G\fR rounds.
.PP
A write goes to the key's coordinator with what is left of the deadline; the
coordinator gives up on owners that have not stored it in time and answers
\fBSERVER_ERROR deadline passed before every owner stored the write\fR (the key is
then undefined, as after any failed write: set or delete it again). A write the
coordinator refused or could not receive is retried up to \fB\-S\fR (\fB\-D\fR for
delete) times within the deadline, at once when the refusal brought newer tables,
otherwise 0.1 s later; a write that may have run already is retried only when
running it twice is harmless (set, touch, delete). This keeps the rule of the data:
every active owner in whs stores a write before it is acknowledged. A write whose
coordinator is behind a cut therefore fails until the coordinator is marked fault
(see below), after which its keys' writes go to the next owner.
.PP
Links to servers are watched while requests wait on them: after 250 ms of silence
a heartbeat is sent, and after 1.5 s of silence the link is dead. It is then
aborted, so nothing sent on it is delivered when it heals, and the gateway reports
the server to the managers, which mark it fault unless the gateway itself is the
one cut off (see \fBkumo\-manager\fR(1)). A failed connect is reported the same way.
.PP
The gateway follows the managers' hash spaces by a long poll, and takes a refusing
server's newer tables too. A request that arrives before the gateway knows any
server (it started before the first attach, or before a manager answered) waits for
the tables within its deadline and attempts, and gets \fBSERVER_ERROR no server
holds this key\fR only when they run out.
.PP
A client may pipeline: the commands of one connection take effect as if run one by
one, in order (a get sees the set sent before it), while commands on different keys
run at the same time. Up to 1024 commands of a connection run at once and 16384 more
may wait. A client that sends more, or whose answers pile up unread past 4 MiB, is
not read from until it has caught up: it is held back, never cut off. A multi\-get
streams: each value goes out as soon as it and those before it are in, and values
are asked for only as fast as the client takes them, so the gateway's memory is
bounded by its connections, not by what they ask for.
.SH COMMANDS
\fBget\fR and \fBgets\fR \fIkey...\fR (any number of keys; a line past 64 KiB is taken key by key as it arrives),
\fBset\fR, \fBadd\fR, \fBreplace\fR, \fBappend\fR, \fBprepend\fR \fIkey flags exptime bytes\fR [\fBnoreply\fR],
\fBcas\fR \fIkey flags exptime bytes cas\fR [\fBnoreply\fR],
\fBdelete\fR \fIkey\fR [\fBnoreply\fR],
\fBincr\fR and \fBdecr\fR \fIkey delta\fR [\fBnoreply\fR],
\fBtouch\fR \fIkey exptime\fR [\fBnoreply\fR],
\fBgat\fR and \fBgats\fR \fIexptime key...\fR,
\fBflush_all\fR [\fIdelay\fR] [\fBnoreply\fR],
\fBstats\fR [\fBitems\fR|\fBsettings\fR|\fBconns\fR|\fBslabs\fR|\fBsizes\fR|\fBreset\fR|\fBdetail on\fR|\fBdetail off\fR|\fBdetail dump\fR],
\fBversion\fR, \fBverbosity\fR \fIlevel\fR [\fBnoreply\fR], \fBquit\fR,
and the meta commands \fBmg\fR \fIkey flags...\fR, \fBms\fR \fIkey datalen flags...\fR,
\fBmd\fR, \fBma\fR and \fBme\fR \fIkey flags...\fR, and \fBmn\fR.
.PP
Replies are memcached's. Flags are 32 bits. An exptime up to 30 days is relative,
a larger one a unix time, a negative one already expired. The CAS value of
\fBgets\fR is the key's ClockTime; touch gives the key a new one. \fBincr\fR wraps
at 2^64 and \fBdecr\fR stops at 0. \fBnoreply\fR (like \fB\-As\fR/\fB\-Ad\fR) answers
nothing and does not wait for replicas. An unknown command gets \fBERROR\fR and a bad
line \fBCLIENT_ERROR\fR \fIwhy\fR; the connection stays open. Keys are at most 250
bytes. A value over \fB\-I\fR gets \fBSERVER_ERROR object too large for cache\fR and
is skipped, so the stream stays in step. A failed request gets \fBSERVER_ERROR\fR
\fIwhy\fR. A write that a server's full disk cannot keep gets \fBSERVER_ERROR out
of memory storing object\fR at once, as from memcached, and is not retried. In a
multi\-key get, a key that cannot be read is left out.
.PP
\fBstats\fR gives the gateway's counters (\fBcmd_get\fR, \fBget_hits\fR,
\fBget_misses\fR, \fBcurr_connections\fR, ...), \fBcluster_items\fR (the item count
of every active server, summed: each key counts once per copy; an expired or
flushed item counts no more, and the servers reclaim its space in the background),
\fBcurr_items\fR (that divided by the number of copies, 3 or fewer with fewer
servers) and \fBcluster_servers\fR. \fBstats items\fR gives that item count as
one class, \fBstats settings\fR this gateway's settings, \fBstats detail\fR
counts per key prefix (before the first \fB:\fR) while on, \fBstats reset\fR
zeroes the counters, \fBstats conns\fR lists the open client connections (address,
the address they came in on, state, seconds since the last command); \fBstats
slabs\fR and \fBsizes\fR say there are none. Another group gets \fBERROR\fR.
.PP
\fBversion\fR answers \fBVERSION 1.6.18\-kumo\-\fR\fIkumo's version\fR: the
memcached protocol version the gateway speaks comes first, since clients read it to
tell what a server understands.
.PP
The meta commands take memcached 1.6's flags: \fBb\fR (base64 key), \fBc\fR,
\fBf\fR, \fBk\fR, \fBs\fR, \fBt\fR, \fBv\fR, \fBO\fR\fIopaque\fR, \fBq\fR
(quiet: a miss of \fBmg\fR, the success of the others, say nothing; \fBmn\fR
answers \fBMN\fR after them), \fBu\fR, \fBT\fR\fIttl\fR, \fBN\fR\fIttl\fR (make
the item on a miss), \fBR\fR\fIttl\fR, \fBI\fR (invalidate: \fBmd\fR marks the item
stale, \fBms\fR with an older \fBC\fR stores it stale), \fBC\fR\fIcas\fR,
\fBF\fR\fIflags\fR, \fBM\fR\fImode\fR (\fBms\fR: \fBS E A P R\fR; \fBma\fR:
\fBI + D \-\fR), \fBJ\fR\fIinitial\fR and \fBD\fR\fIdelta\fR, and the replies
\fBW\fR, \fBX\fR and \fBZ\fR: the key's coordinator hands out the recache token,
so one client in the whole cluster wins it. The marks stay with the item through
restarts and replaces. \fBh\fR and \fBl\fR (hit before, last access) and \fBE\fR
(choose the CAS value) are refused with \fBCLIENT_ERROR invalid flag\fR, as
memcached refuses a flag it does not know: the first two would make every read a
write on three servers, and the CAS value is the version that orders the copies.
\fBme\fR shows \fBexp\fR, \fBcas\fR and \fBsize\fR.
.PP
With \fB\-b\fR the gateway also speaks memcached's binary protocol, on its own
address: GET, GETK, GAT, GATK and their quiet forms, SET, ADD, REPLACE, APPEND,
PREPEND and their quiet forms (a CAS in the header makes SET, ADD and REPLACE a
compare\-and\-swap, and is compared by APPEND, PREPEND, DELETE, INCREMENT and
DECREMENT), DELETE, INCREMENT and DECREMENT (an expiration other than 0xffffffff
makes a missing counter with its initial value), TOUCH, FLUSH, STAT (with a group
as its key), NOOP, VERSION, QUIT and QUITQ, answered as memcached 1.6 answers them,
in request order, on the same pipeline and with the same memory bounds as the text
protocol. VERBOSITY is an unknown command, as in memcached. A request the cluster
cannot answer in time gets status 0x86 (temporary failure) with the reason, and a
full store 0x82 (out of memory). A packet whose lengths do not add up gets
\fBInvalid arguments\fR (or \fBUnknown command\fR) and the connection closes; a
wrong magic byte closes it without a word.
.PP
\fBflush_all\fR empties the whole cluster, not one server: every server takes the
same flush point and keeps it in its store, so what was stored before the flush
stays gone through restarts, replaces and a server's return; a server that was
down during the flush learns it from a manager before it serves again.
\fBflush_all\fR \fIN\fR empties it N seconds from now (what is stored until then
goes too). \fBOK\fR comes once every server holding data took the point, and
\fBSERVER_ERROR\fR names a server that did not.
.SH METRICS
With \fB\-\-metrics\fR \fIADDRESS\fR, \fBGET /metrics\fR answers in the Prometheus text
format (0.0.4): \fBkumo_gateway_commands_total\fR{command=get|set|touch},
\fBkumo_gateway_results_total\fR{command,result} (hit, miss, error, badval: the
counts of \fBstats\fR), \fBkumo_gateway_write_errors_total\fR,
\fBkumo_gateway_retries_total\fR, the histogram
\fBkumo_gateway_request_duration_seconds\fR (each command, from read whole to its
answer handed to the connection; buckets from 100 us to 2.5 s),
\fBkumo_gateway_connections\fR and \fBkumo_gateway_connections_total\fR.
.PP
\fBkumo_peer_link_up\fR{peer} (1 while the link to that server is connected and
answers), \fBkumo_hash_space_time_seconds\fR{table=whs|rhs} and
\fBkumo_hash_space_clock\fR{table} (the two parts of each hash space's ClockTime),
\fBkumo_uptime_seconds\fR.
"#
        }
        Role::Ctl | Role::Stat | Role::Top | Role::Log | Role::Hash | Role::MergeDb => {
            super::man_tools::tool_sections(role)
        }
        Role::Local => {
            r#".SH DESCRIPTION
\fBkumo local\fR runs a whole kumo cluster on this host with one command: a manager
(\fB\-m\fR), \fB\-n\fR servers on consecutive ports from \fB\-l\fR, and a gateway
serving memcached on \fB\-t\fR, as child processes of the same binary. It attaches the
servers, waits until the gateway answers, and prints how to connect. The stores are
\fIDIR\fR\fB/server1\fR, \fB/server2\fR, ...; each process logs to
\fIDIR\fR\fB/logs/\fR\fIname\fR\fB.log\fR. SIGINT (Ctrl\-C) or SIGTERM stops every
child; the data stays, and the next start serves it again. If a child dies while
the cluster starts, the cluster is stopped with a message naming it and its log.
.PP
Once the cluster is up, \fBkumo local\fR supervises it, so that it keeps serving
through the loss of a server, as a real cluster does. A child that dies (for example
\fBkill \-9\fR of a server) is reported on the terminal and in the log, and is
started again, a server on its own store, after 5 seconds; a child that dies again
soon after each start waits twice as long each time, up to 60 seconds. Meanwhile the
manager marks the server \fBfault\fR (\fBkumoctl status\fR shows it) and the other
two owners of each of its keys serve them. Once the manager sees the server back,
\fBkumo local\fR attaches it again, and the replace brings it the writes it missed.
.PP
The processes share this host's cores: each server and the gateway runs
\fIcores\fR / (\fB\-n\fR + 1) worker threads (\fB\-TR\fR), at least one, rather than
one per core each, which on a small host would run several times more busy threads
than there are cores.
.SH EXAMPLE
.nf
kumo local
printf 'set k 0 0 5\\r\\nhello\\r\\nget k\\r\\n' | nc 127.0.0.1 11211
pkill \-9 \-f 'kumo server \-l 127.0.0.1:19801'   # server2 dies
kumoctl 127.0.0.1 status                        # server2 fault, then active
.fi
"#
        }
    }
}
