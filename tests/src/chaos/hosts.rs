//! The cluster as separate hosts: the compose project of `deploy/compose/` (3 metadata members,
//! 6 storage nodes in 3 zones, TLS and tokens on), each a container with its own address on the
//! project's private network, and the means to hurt them: kill -9 and restart, SIGSTOP and
//! SIGCONT, iptables and `tc` inside a container's network namespace (entered from the
//! host with nsenter: the image has no shell and no tools). Every node's archive port is
//! published on a loopback port picked before start, so it stays the same across restarts.
//! Everything started here (containers, network, volumes) is removed by name when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bitmountain_client::ArchiveClient;
use bitmountain_proto::Credentials;

use super::disks::{self, SmallDisk, SMALL_DISK};

/// The metadata members' service names.
pub const MEMBERS: [&str; 3] = ["m1", "m2", "m3"];
/// The storage nodes' service names, two per zone (z1: n1 n2, z2: n3 n4, z3: n5 n6).
pub const NODES: [&str; 6] = ["n1", "n2", "n3", "n4", "n5", "n6"];
/// The archive port every node listens on inside its container (and advertises).
const NODE_ARCHIVE_PORT: u16 = 7700;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `cmd`; its output, or a panic naming it and what it printed.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `cmd`'s output, whatever its exit status (for faults on a container that may be down).
fn try_sh(cmd: &mut Command) -> Option<Output> {
    cmd.output().ok()
}

/// A free loopback port (bound and released: the container publishes it a moment later).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// An image of the binary under test, tagged for one run and removed when dropped.
#[derive(Debug)]
pub struct Image {
    pub tag: String,
}

impl Image {
    pub fn build(unique: &str) -> Image {
        let image = Image {
            tag: format!("bitmountain:{unique}"),
        };
        sh(Command::new(repo().join("deploy/image/build"))
            .args(["--tag", &image.tag])
            .env("BITMOUNTAIN_BIN", crate::bitmountain_bin()));
        image
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.tag])
            .output();
    }
}

/// A running compose project.
#[derive(Debug)]
pub struct Hosts {
    /// [`SMALL_DISK`]: dropped after the containers (`Drop::drop` runs first) and before
    /// the directory it is mounted in (fields drop in order).
    small: SmallDisk,
    pub name: String,
    image: String,
    dir: tempfile::TempDir,
    /// Loopback address of each node's archive port, in [`NODES`] order.
    pub node_addrs: Vec<String>,
    /// The cluster CA and the admin token.
    pub credentials: Credentials,
}

impl Hosts {
    /// Starts the project `name` from `image` and waits for the admin token.
    pub fn start(name: &str, image: &Image) -> Hosts {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<u16> = NODES.iter().map(|_| free_port()).collect();
        let small = SmallDisk::create(dir.path());
        let file = override_file(&ports, small.mount_point());
        std::fs::write(dir.path().join("chaos.yml"), file).expect("override");
        let mut hosts = Hosts {
            name: name.to_owned(),
            image: image.tag.clone(),
            dir,
            node_addrs: ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
            credentials: Credentials::insecure(),
            small,
        };
        sh(hosts.compose().args(["up", "-d"]));
        let exports = sh(Command::new(repo().join("deploy/compose/client-env"))
            .env("COMPOSE_PROJECT_NAME", &hosts.name)
            .env("BITMOUNTAIN_IMAGE", &hosts.image)
            .env("BITMOUNTAIN_PUBLISH", &hosts.node_addrs[0])
            .env("CLIENT_DIR", hosts.dir.path().join("client")));
        assert!(exports.contains("BITMOUNTAIN_CA="), "{exports}");
        let client = hosts.dir.path().join("client");
        let ca = std::fs::read(client.join("ca.pem")).expect("ca.pem");
        let token = std::fs::read_to_string(client.join("admin.token")).expect("admin.token");
        hosts.credentials = Credentials::tls(&ca, None)
            .with_token(token.trim())
            .expect("token");
        hosts
    }

    fn compose(&self) -> Command {
        let mut c = Command::new("docker-compose");
        c.current_dir(repo().join("deploy/compose"))
            .args(["-f", "docker-compose.yml", "-f"])
            .arg(self.dir.path().join("chaos.yml"))
            .env("COMPOSE_PROJECT_NAME", &self.name)
            .env("BITMOUNTAIN_IMAGE", &self.image)
            .env("BITMOUNTAIN_PUBLISH", &self.node_addrs[0])
            .env("BITMOUNTAIN_CONSOLE_PUBLISH", "127.0.0.1:");
        c
    }

    /// A client of every node, with the CA and the admin token.
    pub fn client(&self) -> ArchiveClient {
        // The nodes advertise their service names, which only the project's network resolves.
        let map = NODES
            .iter()
            .zip(&self.node_addrs)
            .map(|(n, addr)| (format!("{n}:{NODE_ARCHIVE_PORT}"), addr.clone()))
            .collect();
        ArchiveClient::new(&self.node_addrs)
            .expect("client")
            .with_credentials(self.credentials.clone())
            .with_address_map(map)
    }

    /// The container of `service`.
    pub fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.name)
    }

    fn inspect(&self, service: &str, format: &str) -> Option<String> {
        let out = try_sh(Command::new("docker").args([
            "inspect",
            "--format",
            format,
            &self.container(service),
        ]))?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The host pid of the container's process; `None` when it is not running.
    fn pid(&self, service: &str) -> Option<u32> {
        self.inspect(service, "{{.State.Pid}}")?
            .parse()
            .ok()
            .filter(|p| *p > 0)
    }

    /// The container's address on the project's network.
    pub fn ip(&self, service: &str) -> Option<String> {
        self.inspect(
            service,
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        )
        .filter(|ip| !ip.is_empty())
    }

    /// kill -9 of the container's process (the container stays down until [`Hosts::restart`]).
    pub fn kill(&self, service: &str) {
        let _ = try_sh(Command::new("docker").args([
            "kill",
            "--signal",
            "KILL",
            &self.container(service),
        ]));
    }

    /// Starts a killed container again (nothing if it runs).
    pub fn restart(&self, service: &str) {
        let _ = try_sh(Command::new("docker").args(["start", &self.container(service)]));
    }

    /// SIGSTOP (`stop`) or SIGCONT to the container's process.
    pub fn signal_stop(&self, service: &str, stop: bool) {
        if let Some(pid) = self.pid(service) {
            let sig = if stop { "-STOP" } else { "-CONT" };
            let _ = try_sh(Command::new("kill").args([sig, &pid.to_string()]));
        }
    }

    /// Runs `program args` inside the container's network namespace.
    fn in_netns(&self, service: &str, program: &str, args: &[&str]) {
        let Some(pid) = self.pid(service) else { return };
        let out = try_sh(
            Command::new("nsenter")
                .args(["-t", &pid.to_string(), "-n", program])
                .args(args),
        );
        if let Some(o) = out.filter(|o| !o.status.success()) {
            panic!(
                "{program} {args:?} in {service}'s network namespace failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }

    /// Drops the traffic between `service` and each of `peers`: both directions, or only what
    /// `service` receives from them (`inbound_only`: it still sends, and is not heard back).
    pub fn cut(&self, service: &str, peers: &[&str], inbound_only: bool) {
        for peer in peers {
            let Some(ip) = self.ip(peer) else { continue };
            self.in_netns(
                service,
                "iptables",
                &["-I", "INPUT", "-s", &ip, "-j", "DROP"],
            );
            if !inbound_only {
                self.in_netns(
                    service,
                    "iptables",
                    &["-I", "OUTPUT", "-d", &ip, "-j", "DROP"],
                );
            }
        }
    }

    /// A slow, lossy link for everything `service` sends: a token-bucket rate limit (queued
    /// packets wait, up to 400 ms) and random loss. (This machine's kernel has no `netem`
    /// qdisc; `tbf` and iptables' `statistic` match give the same effect on the sender.)
    pub fn slow(&self, service: &str, rate_mbit: u32, loss_percent: u32) {
        let rate = format!("{rate_mbit}mbit");
        self.in_netns(
            service,
            "tc",
            &[
                "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", &rate, "burst", "32kbit",
                "latency", "400ms",
            ],
        );
        let p = format!("{:.2}", f64::from(loss_percent) / 100.0);
        self.in_netns(
            service,
            "iptables",
            &[
                "-I",
                "OUTPUT",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &p,
                "-j",
                "DROP",
            ],
        );
    }

    /// Fills [`SMALL_DISK`] up.
    pub fn fill_small_disk(&self) {
        self.small.fill();
    }

    /// The host directory of a node's disk (`disk`: 1 or 2) in its named volume.
    fn disk_dir(&self, node: &str, disk: usize) -> Option<PathBuf> {
        disks::volume_dir(&format!("{}_{node}-disk{disk}", self.name))
    }

    /// Makes the contents of a node's disk vanish (see [`disks::vanish`]).
    pub fn vanish_disk(&self, node: &str, disk: usize) {
        if let Some(dir) = self.disk_dir(node, disk) {
            disks::vanish(&dir);
        }
    }

    /// Undoes every fault on `service`: running, not stopped, no iptables rules, no qdisc,
    /// its disks back and not full.
    pub fn heal(&self, service: &str) {
        if service == SMALL_DISK.0 {
            self.small.empty();
        }
        // Members have no disk volumes: no `docker volume inspect` for them.
        for disk in [1, 2].into_iter().filter(|_| NODES.contains(&service)) {
            if let Some(dir) = self.disk_dir(service, disk) {
                disks::restore(&dir);
            }
        }
        self.restart(service);
        self.signal_stop(service, false);
        if let Some(pid) = self.pid(service) {
            let pid = pid.to_string();
            let _ = try_sh(Command::new("nsenter").args(["-t", &pid, "-n", "iptables", "-F"]));
            let _ = try_sh(Command::new("nsenter").args([
                "-t", &pid, "-n", "tc", "qdisc", "del", "dev", "eth0", "root",
            ]));
        }
    }

    /// Every "became leader" a member logged: (member, term).
    pub fn elections(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for m in MEMBERS {
            let Some(logs) = try_sh(Command::new("docker").args(["logs", &self.container(m)]))
            else {
                continue;
            };
            let text = String::from_utf8_lossy(&logs.stderr).into_owned()
                + &String::from_utf8_lossy(&logs.stdout);
            for line in text.lines() {
                if let Some(rest) = line.split("became leader at term ").nth(1) {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    if let Ok(term) = digits.parse() {
                        out.push((m.to_owned(), term));
                    }
                }
            }
        }
        out
    }

    /// The last `lines` of a service's log.
    pub fn log_tail(&self, service: &str, lines: usize) -> String {
        try_sh(Command::new("docker").args([
            "logs",
            "--tail",
            &lines.to_string(),
            &self.container(service),
        ]))
        .map(|o| {
            String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout)
        })
        .unwrap_or_default()
    }

    /// Stops the members and runs `meta check` on each one's data volume in a container of
    /// its own: (member, what it printed) for each that failed.
    pub fn meta_check(&self) -> Vec<(String, String)> {
        for m in MEMBERS {
            let _ =
                try_sh(Command::new("docker").args(["stop", "--time", "10", &self.container(m)]));
        }
        let mut failed = Vec::new();
        for m in MEMBERS {
            let name = format!("{}_{m}-data", self.name);
            // `docker run -v` would make an empty volume of a wrong name and check nothing.
            sh(Command::new("docker").args(["volume", "inspect", &name]));
            let volume = format!("{name}:/data");
            let out = sh_output(Command::new("docker").args([
                "run",
                "--rm",
                "--network",
                "none",
                "-v",
                &volume,
                &self.image,
                "meta",
                "check",
                "--data",
                "/data",
            ]));
            if !out.status.success() {
                let text = String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr);
                failed.push((m.to_owned(), text));
            }
        }
        failed
    }

    /// Waits until every node is registered and up as the group sees it.
    pub async fn wait_all_up(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let client = self.client();
        loop {
            let last = match client.status().await {
                Ok(s)
                    if s.nodes.len() == NODES.len() && s.nodes.iter().all(|n| n.state == "up") =>
                {
                    return Ok(())
                }
                Ok(s) => format!(
                    "nodes: {:?}",
                    s.nodes
                        .iter()
                        .map(|n| (&n.host, &n.state))
                        .collect::<Vec<_>>()
                ),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn sh_output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // A stopped process would keep `down` waiting for its timeout.
        for s in MEMBERS.iter().chain(NODES.iter()) {
            self.signal_stop(s, false);
        }
        compose_down(|| self.compose());
    }
}

/// Removes a compose project (containers, network, volumes), printing the tail of its logs
/// first when the test is failing. `compose` makes the project's `docker-compose` command.
pub fn compose_down(compose: impl Fn() -> Command) {
    if std::thread::panicking() {
        if let Ok(l) = compose().args(["logs", "--tail", "20"]).output() {
            eprintln!("{}", String::from_utf8_lossy(&l.stdout));
        }
    }
    let _ = compose()
        .args(["down", "-v", "--remove-orphans", "--timeout", "5"])
        .output();
}

/// The chaos run's additions to the compose file: no restart policy (the harness decides when
/// a killed container comes back), every node's archive port on the host's loopback, and
/// [`SMALL_DISK`] on its small filesystem.
fn override_file(ports: &[u16], small_disk: &Path) -> String {
    let mut text = String::from("version: \"2.4\"\nservices:\n");
    for m in MEMBERS {
        text.push_str(&format!("  {m}:\n    restart: \"no\"\n"));
    }
    for (i, (n, port)) in NODES.iter().zip(ports).enumerate() {
        text.push_str(&format!("  {n}:\n    restart: \"no\"\n"));
        // n1 is published by the base file (BITMOUNTAIN_PUBLISH).
        if i > 0 {
            text.push_str(&format!(
                "    ports: [\"127.0.0.1:{port}:{NODE_ARCHIVE_PORT}\"]\n"
            ));
        }
        if *n == SMALL_DISK.0 {
            let (host, inside) = (small_disk.display(), SMALL_DISK.1);
            text.push_str(&format!("    volumes: [\"{host}:{inside}\"]\n"));
        }
    }
    text
}
