//! `uvlan completions SHELL` and `uvlan man DIR`: shell completions and manual pages made
//! from the command line's own definition, for packagers and install steps (no build script).

use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::{Cli, Failure};

/// `uvlan completions`.
#[derive(Args, Debug)]
#[command(after_help = "\
Install, for example:
  uvlan completions bash > /usr/share/bash-completion/completions/uvlan
  uvlan completions zsh  > /usr/local/share/zsh/site-functions/_uvlan
  uvlan completions fish > /usr/share/fish/vendor_completions.d/uvlan.fish")]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish (also elvish, powershell).
    #[arg(value_enum)]
    pub shell: Shell,
}

/// `uvlan man`.
#[derive(Args, Debug)]
#[command(after_help = "\
Writes uvlan.1 and one page per subcommand (uvlan-network-create.1, ...). Install, for example:
  uvlan man /usr/local/share/man/man1 && mandb -q")]
pub struct ManArgs {
    /// The directory to write the pages to (created if missing).
    pub dir: PathBuf,
}

/// Writes the completion script for `shell` to `out`.
pub fn write_completions(shell: Shell, out: &mut dyn std::io::Write) {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "uvlan", out);
}

/// Writes the manual pages into `dir` (created if missing); answers their paths, sorted.
pub fn write_man_pages(dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .map_err(|e| format!("cannot write the pages to {}: {e}", dir.display()))?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == "uvlan.1" || (n.starts_with("uvlan-") && n.ends_with(".1")))
        })
        .collect();
    pages.sort();
    Ok(pages)
}

/// Prints the completion script for `a.shell` on stdout.
pub fn completions(a: CompletionsArgs) -> Result<i32, Failure> {
    write_completions(a.shell, &mut std::io::stdout());
    Ok(0)
}

/// Writes the manual pages into `a.dir` and prints their paths.
pub fn man(a: ManArgs) -> Result<i32, Failure> {
    for p in write_man_pages(&a.dir).map_err(Failure::msg)? {
        println!("{}", p.display());
    }
    Ok(0)
}
