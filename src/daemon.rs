//! Process set-up shared by every daemon: logging (`-v`, `-o`), daemonizing (`-d`),
//! the network settings of the common options, and waiting for a stop signal.
//! SIGHUP reopens the log files, so that logrotate can move them away.

use crate::cli::Args;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A log file that SIGHUP reopens by its path: after logrotate renames it, the
/// next line goes to a new file of the old name.
pub struct LogFile {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

/// Every log file of this process, for [`reopen_logs`].
static LOG_FILES: Mutex<Vec<Arc<LogFile>>> = Mutex::new(Vec::new());

impl LogFile {
    /// Opens `path` for appending, creating it, and registers it for SIGHUP.
    pub fn open(path: &Path) -> Result<Arc<LogFile>, String> {
        let log = Arc::new(LogFile {
            path: path.to_path_buf(),
            file: Mutex::new(open_append(path)?),
        });
        LOG_FILES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(log.clone());
        Ok(log)
    }

    fn reopen(&self) -> Result<(), String> {
        let fresh = open_append(&self.path)?;
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// Appends `bytes` whole: one record of the log is never split between files.
    pub fn append(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(bytes)
    }
}

fn open_append(path: &Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open log file {}: {e}", path.display()))
}

/// Reopens every log file (SIGHUP); says which could not be.
pub fn reopen_logs() {
    let logs = LOG_FILES.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut failed = Vec::new();
    for l in &logs {
        if let Err(e) = l.reopen() {
            failed.push(e);
        }
    }
    if failed.is_empty() {
        log::warn!("SIGHUP: {} log file(s) reopened", logs.len());
    } else {
        log::error!("SIGHUP: {}; the old file is kept", failed.join("; "));
    }
}

/// The binary log (`-g`), once opened, and the role that writes it.
static BINARY_LOG: std::sync::OnceLock<(Arc<LogFile>, &'static str)> = std::sync::OnceLock::new();

/// Opens `-g`'s file, if given, for [`event`]; `role` names this process in it.
pub fn open_binary_log(args: &Args, role: &'static str) -> Result<(), String> {
    let Some(path) = args.opt_path("binary-log") else {
        return Ok(());
    };
    let log = LogFile::open(&path)?;
    let _ = BINARY_LOG.set((log, role));
    Ok(())
}

/// Writes one event to the binary log, when there is one.
pub fn event(level: log::Level, event: &str, fields: &[(&str, rmpv::Value)]) {
    let Some((log, role)) = BINARY_LOG.get() else {
        return;
    };
    let record = crate::proto::binlog::Record {
        time_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        level: level.as_str().to_string(),
        role: role.to_string(),
        event: event.to_string(),
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    };
    if let Err(e) = log.append(&crate::proto::binlog::encode(&record)) {
        // Not through log::error!, which would come back here.
        eprintln!("cannot write the binary log {}: {e}", log.path.display());
    }
}

/// The text log's target: a [`LogFile`], written a record at a time (env_logger
/// hands each record over whole).
struct TextLog(Arc<LogFile>);

impl Write for TextLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.append(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sets up the log as `-v` and `-o` ask. Must run before any thread starts.
pub fn init_logging(args: &Args) -> Result<(), String> {
    // KUMO_TRACE=1 adds a line per request on servers, for chasing a bug.
    let level = if args.switch("verbose") && std::env::var_os("KUMO_TRACE").is_some() {
        log::LevelFilter::Trace
    } else if args.switch("verbose") {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Warn
    };
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    match args.opt_path("log") {
        None => {
            builder
                .target(env_logger::Target::Stdout)
                .write_style(env_logger::WriteStyle::Auto);
        }
        Some(p) if p == Path::new("-") => {
            builder
                .target(env_logger::Target::Stdout)
                .write_style(env_logger::WriteStyle::Never);
        }
        Some(p) => {
            builder
                .target(env_logger::Target::Pipe(Box::new(TextLog(LogFile::open(
                    &p,
                )?))))
                .write_style(env_logger::WriteStyle::Never);
        }
    }
    builder.format(|buf, record| {
        // Errors go to the binary log too, whatever logged them.
        if record.level() == log::Level::Error {
            event(
                log::Level::Error,
                "error",
                &[
                    (
                        "module",
                        rmpv::Value::from(record.module_path().unwrap_or("kumo")),
                    ),
                    ("message", rmpv::Value::from(record.args().to_string())),
                ],
            );
        }
        let style = buf.default_level_style(record.level());
        writeln!(
            buf,
            "{} {style}{:<5}{style:#} {}: {}",
            local_time(),
            record.level(),
            record.module_path().unwrap_or("kumo"),
            record.args()
        )
    });
    builder
        .try_init()
        .map_err(|e| format!("cannot set up logging: {e}"))
}

/// `YYYY-MM-DD HH:MM:SS` in local time.
pub fn local_time() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    format_local(now, "%Y-%m-%d %H:%M:%S")
}

/// Formats unix seconds in local time with strftime(3).
pub fn format_local(secs: libc::time_t, fmt: &str) -> String {
    // SAFETY: localtime_r writes into `tm`, which we own; strftime writes at most
    // buf.len() bytes and returns how many it wrote.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return secs.to_string();
        }
        let mut buf = [0u8; 128];
        let cfmt = std::ffi::CString::new(fmt).unwrap_or_default();
        let n = libc::strftime(buf.as_mut_ptr().cast(), buf.len(), cfmt.as_ptr(), &tm);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// The CPU cores this process may run on: the default number of workers, so
/// that a process does not run more busy threads than it has cores.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The network-layer settings of the common options.
pub fn net_config(args: &Args) -> crate::net::Config {
    crate::net::Config {
        workers: match args.get("worker-threads") {
            Some(_) => args.count("worker-threads").clamp(1, 1024) as usize,
            None => cores(),
        },
        senders: args.count("sender-threads").clamp(1, 1024) as usize,
        connect_timeout: args.seconds("connect-timeout"),
        retry_limit: args.count("connect-retry-limit").min(u32::MAX as u64) as u32,
        keepalive: args
            .seconds("clock-interval")
            .max(std::time::Duration::from_millis(100)),
    }
}

/// With `-d PIDFILE`: forks twice, starts a new session, points stdio at /dev/null
/// and writes the pid file atomically (a temporary file renamed into place). Must
/// run before any thread is started: fork keeps only the calling thread.
pub fn daemonize_if_asked(args: &Args) -> Result<(), String> {
    let Some(pidfile) = args.opt_path("daemon") else {
        return Ok(());
    };
    // SAFETY: fork/setsid/dup2 are called while the process has a single thread.
    unsafe {
        match libc::fork() {
            -1 => return Err(format!("fork failed: {}", std::io::Error::last_os_error())),
            0 => {}
            _ => libc::_exit(0),
        }
        if libc::setsid() == -1 {
            return Err(format!(
                "setsid failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        match libc::fork() {
            -1 => return Err(format!("fork failed: {}", std::io::Error::last_os_error())),
            0 => {}
            _ => libc::_exit(0),
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
    }
    crate::fs::write_atomically(&pidfile, format!("{}\n", std::process::id()).as_bytes())
        .map_err(|e| format!("cannot write pid file {}: {e}", pidfile.display()))
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread and every thread started after,
/// so that [`wait_for_stop`] alone receives them. Call it first thing in a daemon.
pub fn block_signals() {
    // SAFETY: plain signal-mask manipulation on an owned, initialised sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits for SIGINT or SIGTERM and returns its name. SIGHUP reopens the log files
/// and waits on.
pub fn wait_for_stop() -> &'static str {
    wait_for_stop_with(&|| {})
}

/// [`wait_for_stop`], calling `on_hangup` after each SIGHUP's reopen (`kumo local`
/// passes it on to its children).
pub fn wait_for_stop_with(on_hangup: &dyn Fn()) -> &'static str {
    loop {
        // SAFETY: sigwait on the same set block_signals installed.
        let sig = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::sigaddset(&mut set, s);
            }
            let mut sig = 0;
            libc::sigwait(&set, &mut sig);
            sig
        };
        match sig {
            libc::SIGINT => return "SIGINT",
            libc::SIGTERM => return "SIGTERM",
            _ => {
                reopen_logs();
                on_hangup();
            }
        }
    }
}

/// Reports a fatal start-up error the way every role does, and gives the exit code.
pub fn fatal(program: &str, msg: impl std::fmt::Display) -> i32 {
    eprintln!("{program}: {msg}");
    log::error!("{msg}");
    crate::cli::EXIT_FAILURE
}

/// This process's start time in nanoseconds, fixed at the first call: it tells a
/// restarted process apart from one that kept running, and names a process that
/// has no address of its own in the cluster (a gateway's reports).
pub fn incarnation() -> u64 {
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    })
}
