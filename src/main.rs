//! The `strongroom` binary: parse, run, print the error chain, exit.

use clap::Parser;

use strongroom::cli::Cli;
use strongroom::error::{EXIT_OK, EXIT_USAGE, exit_code, is_broken_pipe};

fn main() {
    // Before any thread starts, so that every thread inherits the mask.
    strongroom::interrupt::install();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    strongroom::set_verbosity(if cli.global.quiet {
        -1
    } else {
        cli.global.verbose as i8
    });
    let code = match strongroom::commands::run(cli.command, cli.global) {
        Ok(()) => EXIT_OK,
        Err(e) if is_broken_pipe(&e) => EXIT_OK,
        Err(e) => {
            eprintln!("strongroom: {e:#}");
            exit_code(&e)
        }
    };
    std::process::exit(code);
}
