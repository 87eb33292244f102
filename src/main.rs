//! The `strongroom` binary: parse, run, print the error chain, exit.

use clap::Parser;

use strongroom::cli::Cli;
use strongroom::error::{EXIT_OK, EXIT_USAGE, exit_code, is_broken_pipe};
use strongroom::escape;

fn main() {
    // First: no other thread may exist yet.
    strongroom::aligned::tune_allocator();
    // Before any secret is in memory: a passphrase from the environment,
    // a key file, or a key `keygen` makes.
    strongroom::keys::keep_out_of_core_dumps();
    // SAFETY: early in `main`; no other thread exists yet.
    unsafe { strongroom::keys::take_env_passphrase() };
    // Before any thread starts, so that every thread inherits the mask.
    strongroom::interrupt::install();
    strongroom::fs::raise_descriptor_limit();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            if code != EXIT_OK && wants_json() {
                let text = e.render().to_string();
                let first = text.lines().next().unwrap_or_default();
                print_json_error(first.trim_start_matches("error: "), code);
            }
            std::process::exit(code);
        }
    };
    // Before the command starts threads (only the signal thread, which
    // waits, exists yet): mallopt is not safe beside other allocations.
    if matches!(cli.command, strongroom::cli::Command::Backup(_)) {
        strongroom::aligned::tune_allocator_for_backup();
    }
    strongroom::set_verbosity(if cli.global.quiet {
        -1
    } else {
        cli.global.verbose as i8
    });
    let json = cli.global.json;
    let code = match strongroom::commands::run(cli.command, cli.global) {
        Ok(()) => EXIT_OK,
        Err(e) if is_broken_pipe(&e) => EXIT_OK,
        Err(e) => {
            let code = exit_code(&e);
            let message = format!("{e:#}");
            // The chain may name what a repository holds: escaped on a terminal.
            eprintln!("strongroom: {}", escape::text(&message));
            if json {
                print_json_error(&message, code);
            }
            code
        }
    };
    std::process::exit(code);
}

/// `--json` among the arguments, for errors clap reports before parsing ends.
fn wants_json() -> bool {
    std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

fn print_json_error(message: &str, code: i32) {
    let _ = strongroom::commands::print_json(&serde_json::json!({
        "message_type": "error",
        "message": message,
        "exit_code": code,
    }));
}
