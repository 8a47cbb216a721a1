//! The seed scenario, end to end: MariaDB with its datadir on Tandem
//! (nbdfuse → loop → ext4 at `data/mysql`) on the Primary, a client
//! committing numbered transactions and recording every COMMIT that
//! returned. The Primary node dies (daemon and database, kill -9); the
//! cluster manager's steps follow: promote the Secondary, fsck, mount, start
//! MariaDB (crash recovery). Every acknowledged transaction must be there.
//! Then a clean switchover back (umount, secondary, primary, mount), and the
//! same check. The failover time is printed split into detection,
//! promotion, mount + fsck and database recovery.

mod common;

use common::pair::*;
use common::stack::Stack;
use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SIZE: u64 = 384 << 20;

/// One `mariadbd` on a datadir, owned: Drop kills it.
struct Mariadb {
    cnf: PathBuf,
    pid_file: PathBuf,
    log: PathBuf,
}

impl Mariadb {
    fn configure(run: &Path, datadir: &Path, port: u16) -> Mariadb {
        std::fs::create_dir_all(run).expect("run dir");
        let cnf = run.join("my.cnf");
        let (sock, pid_file, log) = (run.join("mysqld.sock"), run.join("mysqld.pid"), run.join("mysqld.err"));
        std::fs::write(
            &cnf,
            format!(
                "[client]\nsocket={sock}\nuser=root\n[mariadbd]\nuser=root\ndatadir={data}\nsocket={sock}\nport={port}\nbind-address=127.0.0.1\npid-file={pid}\nlog-error={log}\nskip-name-resolve\ninnodb_buffer_pool_size=64M\ninnodb_log_file_size=16M\ninnodb_flush_log_at_trx_commit=1\ninnodb_flush_method=O_DIRECT\ninnodb_doublewrite=1\nlog-bin=binlog\nsync_binlog=1\nserver-id=1\n",
                sock = sock.display(),
                data = datadir.display(),
                pid = pid_file.display(),
                log = log.display()
            ),
        )
        .expect("my.cnf");
        Mariadb { cnf, pid_file, log }
    }

    fn install(&self, datadir: &Path) {
        let _ = std::fs::remove_dir(datadir.join("lost+found"));
        run_ok(Command::new("mariadb-install-db").args([
            &format!("--defaults-file={}", self.cnf.display()),
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]));
    }

    /// Start and wait until it answers; returns how long that took.
    fn start(&self) -> Duration {
        let t0 = Instant::now();
        let out = std::fs::File::create(self.log.with_extension("out")).expect("log");
        let status = Command::new("setsid")
            .args(["-f", "mariadbd", &format!("--defaults-file={}", self.cnf.display())])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .status()
            .expect("mariadbd");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ping = Command::new("mariadb-admin")
                .arg(format!("--defaults-file={}", self.cnf.display()))
                .arg("ping")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if ping.is_ok_and(|s| s.success()) {
                return t0.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd did not start:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn sql(&self, q: &str) -> String {
        run_ok(
            Command::new("mariadb")
                .arg(format!("--defaults-file={}", self.cnf.display()))
                .args(["-N", "-e", q]),
        )
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(&self.pid_file).ok()?.trim().parse().ok()
    }

    fn kill9(&self) {
        if let Some(pid) = self.pid() {
            // SAFETY: signalling a process this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let deadline = Instant::now() + Duration::from_secs(10);
            // SAFETY: signal 0 only checks that the process exists.
            while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn shutdown(&self) {
        run_ok(
            Command::new("mariadb-admin")
                .arg(format!("--defaults-file={}", self.cnf.display()))
                .arg("shutdown"),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.pid_file.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The client: numbered transactions, each number printed only after its
/// COMMIT returned. Its own process group, killed on drop.
struct Writer {
    child: Option<std::process::Child>,
}

impl Writer {
    fn start(db: &Mariadb, from: u64, acked: &Path) -> Writer {
        let script = format!(
            "for ((i={from};i<{};i++)); do echo \"BEGIN; INSERT INTO t.k (id,v) VALUES ($i, SHA1($i)); COMMIT; SELECT $i;\"; done | mariadb --defaults-file={} -N --unbuffered >> {} 2>/dev/null",
            from + 10_000_000,
            db.cnf.display(),
            acked.display()
        );
        // setsid without -f runs bash in a new session as our child: its
        // pid is the process group of the whole pipeline.
        let child = Command::new("setsid")
            .args(["bash", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("writer");
        Writer { child: Some(child) }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: the writer's own process group.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn numbers(path: &Path) -> BTreeSet<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Every acknowledged transaction is in the table, and the table is sound.
fn verify(db: &Mariadb, acked: &BTreeSet<u64>) -> usize {
    let present: BTreeSet<u64> = db
        .sql("SELECT id FROM t.k")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let missing: Vec<&u64> = acked.difference(&present).take(10).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged commits missing, e.g. {missing:?}",
        acked.difference(&present).count()
    );
    let check = db.sql("CHECK TABLE t.k");
    assert!(check.contains("\tOK"), "{check}");
    let bad = db.sql("SELECT COUNT(*) FROM t.k WHERE v<>CONVERT(SHA1(id) USING latin1)");
    assert_eq!(bad.trim(), "0", "rows with wrong contents");
    present.len()
}

fn fsck(dev: &str) {
    // -p repairs what a crash leaves (journal replay): 0 clean, 1 fixed.
    let out = run(Command::new("e2fsck").args(["-p", dev]));
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "e2fsck -p: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn mariadb_survives_primary_death_and_a_clean_switchover_without_losing_a_commit() {
    for (tool, pkg) in [
        ("mariadbd", "mariadb-server"),
        ("mariadb", "mariadb-client"),
        ("nbdfuse", "libnbd-bin"),
        ("mkfs.ext4", "e2fsprogs"),
    ] {
        require_tool(tool, pkg);
    }
    let mut p = Pair::up_full("s3cret", SIZE, "c-max-rate 4G;", "", "");
    p.alpha.wait_for("cs:Connected", 20);
    // Both disks are all zeroes: no initial sync needed.
    p.alpha.adm_ok(&["new-current-uuid", "--clear-bitmap", "r0"]);
    p.alpha.adm_ok(&["primary", "r0"]);
    let base = p.dir.path().to_owned();
    let (uri_a, uri_b) = (
        format!("nbd://127.0.0.1:{}/r0", p.nbd_alpha),
        format!("nbd://127.0.0.1:{}/r0", p.nbd_beta),
    );

    // alpha: filesystem, database, a committing client.
    let mut stack_a = Stack::up(&uri_a, &base.join("node"));
    run_ok(Command::new("mkfs.ext4").args(["-q", "-F", stack_a.dev()]));
    stack_a.mount();
    let db_a = Mariadb::configure(&base.join("db-a"), &stack_a.mnt, free_port());
    db_a.install(&stack_a.mnt);
    db_a.start();
    db_a.sql("CREATE DATABASE t; CREATE TABLE t.k (id INT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB");
    let acked_path = base.join("acked.txt");
    let mut writer = Writer::start(&db_a, 1, &acked_path);
    let deadline = Instant::now() + Duration::from_secs(60);
    while numbers(&acked_path).len() < 500 {
        assert!(Instant::now() < deadline, "the writer did not get going");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The Primary node dies: daemon and database at once.
    let t0 = Instant::now();
    p.alpha.kill9();
    db_a.kill9();
    writer.stop();
    stack_a.abandon();
    let acked = numbers(&acked_path);

    // The cluster manager's failover on beta.
    p.beta.wait_for("cs:WFConnection", 30);
    let detect = t0.elapsed();
    let t1 = Instant::now();
    p.beta.adm_ok(&["primary", "r0"]);
    let promote = t1.elapsed();
    let t2 = Instant::now();
    let mut stack_b = Stack::up(&uri_b, &base.join("node"));
    fsck(stack_b.dev());
    stack_b.mount();
    let mount = t2.elapsed();
    let db_b = Mariadb::configure(&base.join("db-b"), &stack_b.mnt, free_port());
    let recovery = db_b.start();
    let rows = verify(&db_b, &acked);
    println!(
        "failover: {} commits acknowledged, {rows} rows present; detection {detect:?}, promotion {promote:?}, mount+fsck {mount:?}, database recovery {recovery:?}, total {:?}",
        acked.len(),
        t0.elapsed()
    );

    // Service continues on beta; the old Primary comes back as Secondary.
    let acked2_path = base.join("acked2.txt");
    let from = acked.iter().max().copied().unwrap_or(0) + 1_000_000;
    let mut writer = Writer::start(&db_b, from, &acked2_path);
    p.alpha.start();
    p.alpha.adm_ok(&["up", "r0"]);
    p.alpha
        .wait_for("cs:Connected ro:Secondary/Primary ds:UpToDate/UpToDate", 120);
    while numbers(&acked2_path).len() < 300 {
        assert!(
            Instant::now() < deadline + Duration::from_secs(120),
            "the second writer stalled"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    writer.stop();
    let acked2 = numbers(&acked2_path);

    // A clean switchover back to alpha: the planned path.
    let t3 = Instant::now();
    db_b.shutdown();
    stack_b.umount();
    drop(stack_b);
    p.beta.adm_ok(&["secondary", "r0"]);
    p.alpha.adm_ok(&["primary", "r0"]);
    let mut stack_a = Stack::up(&uri_a, &base.join("node"));
    fsck(stack_a.dev());
    stack_a.mount();
    let db_a = Mariadb::configure(&base.join("db-a2"), &stack_a.mnt, free_port());
    db_a.start();
    let all: BTreeSet<u64> = acked.union(&acked2).copied().collect();
    let rows = verify(&db_a, &all);
    println!(
        "switchover: {} commits acknowledged in all, {rows} rows present; took {:?}",
        all.len(),
        t3.elapsed()
    );
    db_a.shutdown();
    stack_a.umount();
}
