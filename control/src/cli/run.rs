//! `uvlan run`: the daemon creates the namespace and attaches the endpoint; this process
//! enters the namespace (`setns`) and runs the command there.

use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};

use clap::Args;

use crate::api::{self, Connect, Request, RunInfo};
use crate::netns::{Netns, Rtnl};

use super::{socket, Failure};

/// `uvlan run`.
#[derive(Args, Debug)]
#[command(trailing_var_arg = true)]
pub struct RunArgs {
    /// Network name or ID.
    #[arg(long = "net", visible_alias = "network", value_name = "NETWORK")]
    pub net: String,
    /// Namespace name (default: uvlan-<8 hex>).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// IPv4 address.
    #[arg(long, value_name = "IP")]
    pub ip: Option<String>,
    /// IPv6 address.
    #[arg(long, value_name = "IP")]
    pub ip6: Option<String>,
    /// MAC address (macvlan only).
    #[arg(long = "mac-address", value_name = "MAC")]
    pub mac_address: Option<String>,
    /// Detach: start the command in the background and print the namespace name.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Remove the endpoint and the namespace when the command exits.
    #[arg(long)]
    pub rm: bool,
    /// The command and its arguments (after `--`).
    #[arg(required = true, allow_hyphen_values = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

/// Keeps this process alive through SIGINT/SIGTERM/SIGHUP while it waits, so `--rm` still
/// cleans up. A handler (signal-hook's, setting a flag nobody reads), not SIG_IGN, is used so
/// the command, after exec, gets the default dispositions back.
fn survive_signals() {
    let caught = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        // Registering fails only for signals that cannot be caught; these three can.
        let _ = signal_hook::flag::register(sig, caught.clone());
    }
}

/// Moves this (single-threaded) process into the namespace at `path`.
fn enter_netns(path: &str) -> Result<(), String> {
    let f = File::open(path).map_err(|e| format!("cannot open namespace {path}: {e}"))?;
    // The CLI runs no other threads: changing this thread's namespace is safe.
    crate::sys::enter_netns(std::os::fd::AsFd::as_fd(&f))
        .map_err(|e| format!("cannot enter namespace {path}: {e}"))
}

fn remove(net: &str, ns: &str) -> Result<(), Failure> {
    api::call(
        &socket(),
        &Request::RunRemove {
            network: net.to_string(),
            netns: ns.to_string(),
        },
    )?;
    Ok(())
}

/// Creates the namespace with `lo` up.
fn create_netns(name: &str) -> Result<(), String> {
    let ns = Netns::create(name).map_err(|e| e.to_string())?;
    let lo = Rtnl::open(&ns).and_then(|mut r| {
        let lo = r.link_get("lo")?;
        r.link_set_up(lo.index, true)
    });
    if let Err(e) = lo {
        let _ = Netns::delete(name);
        return Err(format!("cannot bring lo up in {name}: {e}"));
    }
    Ok(())
}

/// Runs `uvlan run`; returns the command's exit status.
pub fn run(a: RunArgs) -> Result<i32, Failure> {
    let sock = socket();
    // Fail early (before creating anything) when the daemon is down.
    api::call(&sock, &Request::Ping)?;
    let name = match &a.name {
        Some(n) => n.clone(),
        None => format!(
            "uvlan-{}",
            crate::ids::random_hex(4)
                .map_err(|e| Failure::msg(format!("cannot generate a name: {e}")))?
        ),
    };
    create_netns(&name).map_err(Failure::msg)?;
    let setup = api::call_typed::<RunInfo>(
        &sock,
        &Request::RunSetup(Connect {
            network: a.net.clone(),
            netns: name.clone(),
            ip: a.ip.clone(),
            ip6: a.ip6.clone(),
            mac: a.mac_address.clone(),
            ..Connect::default()
        }),
    );
    let info = match setup {
        Ok(i) => i,
        Err(e) => {
            let _ = Netns::delete(&name);
            return Err(e.into());
        }
    };
    let cleanup_on_error = |f: Failure| -> Failure {
        if a.rm {
            let _ = remove(&a.net, &info.netns);
        }
        f
    };
    enter_netns(&info.netns_path).map_err(|m| cleanup_on_error(Failure::msg(m)))?;
    if !info.dns.is_empty() {
        // As Docker writes a container's resolv.conf: the lease's DNS servers, for the
        // command only (a mount namespace of its own; the host's file is untouched).
        let text: String = info
            .dns
            .iter()
            .map(|a| format!("nameserver {a}\n"))
            .collect();
        let text = format!("# the DHCP lease of {} (uvlan run)\n{text}", info.netns);
        if let Err(e) = crate::sys::private_resolv_conf(&text, &std::env::temp_dir()) {
            eprintln!(
                "uvlan run: the command sees the host's /etc/resolv.conf, not the DHCP \
                 lease's DNS servers ({}): {e}",
                info.dns.join(", ")
            );
        }
    }
    let mut cmd = Command::new(&a.cmd[0]);
    cmd.args(&a.cmd[1..]);
    if a.detach {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
    } else {
        survive_signals();
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            let f = Failure {
                message: format!("cannot run {:?}: {e}", a.cmd[0]),
                code,
            };
            return Err(cleanup_on_error(f));
        }
    };
    if a.detach {
        if a.rm {
            let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
            api::call(
                &sock,
                &Request::RunWatch {
                    network: a.net.clone(),
                    netns: info.netns.clone(),
                    pid,
                },
            )?;
        }
        println!("{}", info.netns);
        return Ok(0);
    }
    let status = child
        .wait()
        .map_err(|e| Failure::msg(format!("waiting for the command: {e}")))?;
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => 1,
    };
    if a.rm {
        remove(&a.net, &info.netns)?;
    }
    Ok(code)
}
