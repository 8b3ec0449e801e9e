//! The host's side of the report: the open-file limit against the endpoints it allows, the
//! Docker plugin directory and Docker's API, the CNI directories, and uvlan's own daemon.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use uvlan_dataplane::port::probe;

use super::{check, Check, Status, FDS_PER_ENDPOINT, FDS_PER_FAST_EXTRA, FD_RESERVE};

/// Where runtimes look for CNI plugins (upstream's default, then Debian's and Fedora's).
pub const CNI_BIN_DIRS: [&str; 3] = ["/opt/cni/bin", "/usr/lib/cni", "/usr/libexec/cni"];
/// Where runtimes look for CNI configurations.
pub const CNI_CONF_DIRS: [&str; 1] = ["/etc/cni/net.d"];

/// One CNI plugin directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniBinDir {
    /// The directory.
    pub dir: PathBuf,
    /// uvlan's plugin names found there.
    pub uvlan: Vec<&'static str>,
    /// Whether `host-local` is there.
    pub host_local: bool,
}

/// One CNI configuration directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniConfDir {
    /// The directory.
    pub dir: PathBuf,
    /// Configuration files in it.
    pub files: usize,
    /// Of those, the ones naming a uvlan plugin.
    pub uvlan: usize,
}

/// What the host shows, outside the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// `RLIMIT_NOFILE` (soft, hard) of this process.
    pub nofile: Option<(u64, u64)>,
    /// Where `dockerd` is, if anywhere on `PATH` (or in /usr/sbin, /usr/bin).
    pub dockerd: Option<PathBuf>,
    /// Docker's API socket, and whether it answers a connection.
    pub docker_api: (PathBuf, bool),
    /// Docker's plugin directory, and whether it exists.
    pub plugin_dir: (PathBuf, bool),
    /// Whether a uvlan daemon serves the plugin sockets there.
    pub plugin_served: bool,
    /// The CNI plugin directories that exist.
    pub cni_bin: Vec<CniBinDir>,
    /// The CNI configuration directories that exist.
    pub cni_conf: Vec<CniConfDir>,
    /// uvlan's API socket, and whether a daemon answers there.
    pub daemon: (PathBuf, bool),
}

fn answers(sock: &Path) -> bool {
    UnixStream::connect(sock).is_ok()
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Host {
    /// Looks at this host.
    pub fn probe() -> Host {
        let docker = crate::docker::PluginConfig::from_flags(None, None);
        let api = docker
            .docker_host
            .strip_prefix("unix://")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"));
        let plugin_served = ["uvlan-ipvlan", "uvlan-macvlan"]
            .iter()
            .all(|n| answers(&docker.dir.join(format!("{n}.sock"))));
        let cni_bin = CNI_BIN_DIRS
            .iter()
            .map(PathBuf::from)
            .filter(|d| d.is_dir())
            .map(|dir| CniBinDir {
                uvlan: ["uvlan-ipvlan", "uvlan-macvlan"]
                    .into_iter()
                    .filter(|n| dir.join(n).exists())
                    .collect(),
                host_local: dir.join("host-local").exists(),
                dir,
            })
            .collect();
        let cni_conf = CNI_CONF_DIRS
            .iter()
            .map(PathBuf::from)
            .filter(|d| d.is_dir())
            .map(|dir| {
                let files: Vec<PathBuf> = std::fs::read_dir(&dir)
                    .map(|rd| {
                        rd.filter_map(|e| e.ok())
                            .map(|e| e.path())
                            .filter(|p| {
                                p.extension()
                                    .is_some_and(|x| x == "conf" || x == "conflist" || x == "json")
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let uvlan = files
                    .iter()
                    .filter(|p| {
                        std::fs::read_to_string(p).is_ok_and(|t| {
                            t.contains("\"uvlan-ipvlan\"") || t.contains("\"uvlan-macvlan\"")
                        })
                    })
                    .count();
                CniConfDir {
                    dir,
                    files: files.len(),
                    uvlan,
                }
            })
            .collect();
        let socket = crate::api::socket_path(None);
        Host {
            nofile: probe::open_file_limit().ok(),
            dockerd: find_program("dockerd"),
            docker_api: (api.clone(), answers(&api)),
            plugin_served,
            plugin_dir: (docker.dir.clone(), docker.dir.is_dir()),
            cni_bin,
            cni_conf,
            daemon: (socket.clone(), answers(&socket)),
        }
    }

    /// The endpoints a daemon with this open-file limit can hold, about.
    pub fn endpoints_allowed(soft: u64) -> u64 {
        soft.saturating_sub(FD_RESERVE) / FDS_PER_ENDPOINT
    }

    /// The host's lines of the report, and what they mean for uvlan.
    pub fn checks(&self, checks: &mut Vec<Check>, plan: &mut Vec<String>) {
        match self.nofile {
            Some((soft, hard)) => {
                let n = Host::endpoints_allowed(soft);
                let low = n < 256;
                let advice = if low {
                    " (raise it: ulimit -n, or LimitNOFILE= in packaging/uvlan.service)"
                } else {
                    ""
                };
                checks.push(check(
                    "nofile",
                    "open files",
                    if low { Status::Limited } else { Status::Ok },
                    format!(
                        "{soft} (hard {hard}): a daemon started here holds about {n} \
                         endpoints, ~{FDS_PER_ENDPOINT} descriptors each, ~{} with the \
                         fast path{advice}",
                        FDS_PER_ENDPOINT + FDS_PER_FAST_EXTRA
                    ),
                ));
            }
            None => checks.push(check(
                "nofile",
                "open files",
                Status::Skipped,
                "getrlimit failed".to_string(),
            )),
        }

        let (api, api_up) = &self.docker_api;
        let (dir, dir_there) = &self.plugin_dir;
        let docker = match (&self.dockerd, api_up) {
            (None, false) => "no dockerd".to_string(),
            (Some(p), false) => format!(
                "{} (its API {} does not answer)",
                p.display(),
                api.display()
            ),
            (_, true) => format!("running (API {})", api.display()),
        };
        let plugin = if self.plugin_served {
            format!("uvlan's plugin served in {}", dir.display())
        } else if *dir_there {
            format!(
                "{} exists, uvlan's plugin not served (uvlan daemon --docker-plugin)",
                dir.display()
            )
        } else {
            format!("no {}", dir.display())
        };
        checks.push(check(
            "docker",
            "Docker",
            Status::Info,
            format!("{docker}; {plugin}"),
        ));

        let bins: Vec<String> = self
            .cni_bin
            .iter()
            .map(|b| {
                let uv = if b.uvlan.is_empty() {
                    "no uvlan plugin".to_string()
                } else {
                    b.uvlan.join(", ")
                };
                let hl = if b.host_local { ", host-local" } else { "" };
                format!("{} ({uv}{hl})", b.dir.display())
            })
            .collect();
        let confs: Vec<String> = self
            .cni_conf
            .iter()
            .map(|c| {
                let s = if c.files == 1 { "" } else { "s" };
                format!(
                    "{} ({} file{s}, {} with uvlan)",
                    c.dir.display(),
                    c.files,
                    c.uvlan
                )
            })
            .collect();
        let none = || "none".to_string();
        checks.push(check(
            "cni",
            "CNI",
            Status::Info,
            format!(
                "plugins: {}; configurations: {}",
                if bins.is_empty() {
                    none()
                } else {
                    bins.join(", ")
                },
                if confs.is_empty() {
                    none()
                } else {
                    confs.join(", ")
                }
            ),
        ));
        if self.cni_bin.iter().any(|b| b.uvlan.len() == 2) {
            plan.push("CNI runtimes find uvlan-ipvlan and uvlan-macvlan".to_string());
        }

        let (sock, up) = &self.daemon;
        checks.push(check(
            "daemon",
            "uvlan daemon",
            Status::Info,
            if *up {
                format!("running ({})", sock.display())
            } else {
                format!("not running ({})", sock.display())
            },
        ));
    }
}
