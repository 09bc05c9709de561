//! The commands each tool takes after its addresses, with their help, in the order
//! `--help` and the man pages list them. They are part of the command line, kept
//! here with the option kinds; each tool runs its own.

/// kumoctl's commands.
pub const CTL: &[(&str, &str)] = &[
    (
        "status",
        "show the hash space, the attached servers and the servers not attached",
    ),
    ("attach", "attach every server that is not attached"),
    ("attach-noreplace", "attach without moving data"),
    ("detach", "detach every fault server"),
    ("detach-noreplace", "detach without moving data"),
    (
        "replace",
        "move data to match the current servers (finishes an interrupted replace)",
    ),
    (
        "full-replace",
        "send every record to every owner: repairs after three or more servers were lost",
    ),
    (
        "backup [SUFFIX]",
        "every server copies its store to PATH-SUFFIX (default today, YYYYMMDD)",
    ),
    (
        "enable-auto-replace",
        "attach and detach by the manager itself from now on",
    ),
    (
        "disable-auto-replace",
        "stop attaching and detaching automatically",
    ),
];

/// kumostat's commands.
pub const STAT: &[(&str, &str)] = &[
    ("pid", "process id of the server"),
    ("uptime", "seconds since the server started"),
    ("time", "the server's unix time"),
    ("version", "the server's version"),
    ("cmd_get", "gets served since start"),
    ("cmd_set", "writes coordinated since start"),
    ("cmd_delete", "deletes coordinated since start"),
    ("items", "keys with a value in the server's store"),
    ("stats", "all of the above, as memcached STAT lines"),
    ("whs", "the hash space that routes writes"),
    ("rhs", "the hash space that routes reads"),
    ("hscheck", "true if whs and rhs hold the same servers"),
    (
        "replstat",
        "inactive, copying, deleting, waiting (whs and rhs differ) or ready",
    ),
    (
        "set_delay",
        "turn TCP_NODELAY off on the server's sockets (throughput over latency)",
    ),
    (
        "unset_delay",
        "turn TCP_NODELAY on (latency over throughput)",
    ),
];

/// kumohash's commands.
pub const HASH: &[(&str, &str)] = &[
    ("hash KEY...", "the 64-bit hash of each key"),
    (
        "assign KEY...",
        "the hash and the three owners of each key (with -m, from the manager's write table)",
    ),
    ("dump", "every point of the hash ring and its server"),
];
