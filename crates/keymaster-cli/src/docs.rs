//! `keymaster completions SHELL` and `keymaster man`: the shell completion script and the man
//! page, both generated from the command-line definition in `main.rs`, so that they list exactly
//! the commands and flags the binary takes. Printed on stdout for the packager to install.

use std::io::Write;

use clap::{Args, Command, ValueEnum};

/// Print a shell completion script.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  keymaster completions bash > /etc/bash_completion.d/keymaster
  keymaster completions zsh > \"${fpath[1]}/_keymaster\"
  keymaster completions fish > ~/.config/fish/completions/keymaster.fish")]
pub struct CompletionsArgs {
    /// The shell to complete in.
    shell: Shell,
}

/// The shells a script is made for.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Prints the completion script for `args.shell` of the command `cmd`.
pub fn completions(args: CompletionsArgs, mut cmd: Command) -> anyhow::Result<()> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let name = cmd.get_name().to_owned();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    std::io::stdout().write_all(&out)?;
    Ok(())
}

/// Prints the man page (roff) of the command `cmd`, its subcommands included.
pub fn man(cmd: Command) -> anyhow::Result<()> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out)?;
    std::io::stdout().write_all(&out)?;
    Ok(())
}
