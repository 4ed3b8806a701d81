//! A PostgreSQL server for the tests, from the machine's Debian packages:
//! one per test process, started on first use in a fresh data directory
//! on a free loopback port, and stopped when the process ends. Each test
//! takes a database of its own.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The server every test of this process shares.
pub struct Postgres {
    port: u16,
    data: PathBuf,
    /// Who runs it: PostgreSQL refuses to run as root.
    user: Option<(u32, u32)>,
}

static SERVER: OnceLock<Postgres> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// A new, empty database; its URL.
pub fn database() -> String {
    let name = format!("test_{}", DATABASES.fetch_add(1, Ordering::Relaxed));
    sql(&format!("CREATE DATABASE {name}"));
    server().url(&name)
}

/// Runs one SQL command on the server as its superuser (e.g. to cut a
/// database off).
pub fn sql(command: &str) {
    server().psql(command);
}

fn server() -> &'static Postgres {
    SERVER.get_or_init(Postgres::start)
}

impl Postgres {
    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs one SQL command as the superuser; panics, saying why, if it fails.
    fn psql(&self, sql: &str) {
        let output = Command::new(bin("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("running psql");
        assert!(
            output.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn start() -> Postgres {
        remove_stale_directories();
        let data = std::env::temp_dir().join(format!("sessionbox-pg-{}", std::process::id()));
        std::fs::create_dir_all(&data).unwrap();
        let user = (unsafe { libc::geteuid() } == 0).then(postgres_user);
        if let Some((uid, gid)) = user {
            chown(&data, uid, gid);
        }
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        let server = Postgres {
            port: free_port(),
            data,
            user,
        };
        let initdb = server
            .command("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&server.data)
            .output()
            .expect("running initdb: is the postgresql package installed?");
        assert!(
            initdb.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        server.run();
        server
    }

    /// Starts the server from a thread that outlives every test: the
    /// server gets SIGQUIT (an immediate stop) when that thread, and so
    /// the test process, ends.
    fn run(&self) {
        let mut postgres = self.command("postgres");
        postgres
            .arg("-D")
            .arg(&self.data)
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.data.display()))
            .args(["-c", "max_connections=300", "-c", "shared_buffers=32MB"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        unsafe {
            postgres.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
                Ok(())
            });
        }
        let (started, spawned) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("test-postgres".into())
            .spawn(move || {
                let mut child = postgres.spawn().expect("starting postgres");
                started.send(()).unwrap();
                let _ = child.wait();
            })
            .unwrap();
        spawned.recv().unwrap();
        // Ready once it accepts a query (pg_isready answers before that).
        for _ in 0..300 {
            let ready = Command::new(bin("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("postgres did not start on port {}", self.port);
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(bin(program));
        if let Some((uid, gid)) = self.user {
            command.uid(uid).gid(gid);
        }
        command
    }
}

/// A PostgreSQL program of the newest version installed.
fn bin(program: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.filter_map(|dir| Some(dir.ok()?.path())).collect())
        .unwrap_or_default();
    versions.sort_by_key(|dir| {
        dir.file_name()
            .and_then(|name| name.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions
        .pop()
        .map(|dir| dir.join("bin").join(program))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from(program))
}

/// The `postgres` account the Debian package creates.
fn postgres_user() -> (u32, u32) {
    let name = std::ffi::CString::new("postgres").unwrap();
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !entry.is_null(),
        "no postgres user: is the postgresql package installed?"
    );
    unsafe { ((*entry).pw_uid, (*entry).pw_gid) }
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Data directories of test processes that are gone.
fn remove_stale_directories() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix("sessionbox-pg-"))
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
