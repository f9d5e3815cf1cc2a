//! `hpclock-man DIR [DATE]`: writes the manual pages of the `hpclock` command
//! into DIR — hpclock.1, and hpclock-run.1, hpclock-info.1, … for its
//! subcommands — from the same clap definitions the command parses its
//! arguments with (`hpclock/cli.rs`), so the pages cannot drift from the
//! command. `make` runs it into build/man/man1; DATE (YYYY-MM-DD) is the
//! release's date from CHANGELOG.md. The library's page, hpclock(3), is
//! written by hand: man/man3/hpclock.3.

#[allow(dead_code)] // the fields are read by the command, not here
#[path = "hpclock/cli.rs"]
mod cli;

use clap::CommandFactory;
use clap_mangen::Man;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const MANUAL: &str = "hpclock manual";

fn source() -> String {
    format!("hpclock {}", env!("CARGO_PKG_VERSION"))
}

/// One page per command, the subcommands' first; hpclock.1 ends with a SEE
/// ALSO section that names them and the library's page.
fn write_pages(dir: &Path, date: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut command = cli::Cli::command().disable_help_subcommand(true);
    command.build();
    let mut written = Vec::new();
    let mut see_also = Vec::new();
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_display_name().unwrap_or_else(|| sub.get_name()).to_string();
        // A subcommand's after-help is its example and remarks.
        let mut roff = render(Man::new(sub.clone()).date(date).source(source()).manual(MANUAL), "NOTES")?;
        roff.extend_from_slice(b".SH \"SEE ALSO\"\n.BR hpclock (1),\n.BR hpclock (3)\n");
        written.push(write_page(dir, &format!("{name}.1"), &roff)?);
        see_also.push(name);
    }
    // The command's own after-help is the table of exit codes.
    let mut roff = render(Man::new(command).date(date).source(source()).manual(MANUAL), "EXIT STATUS")?;
    roff.extend_from_slice(b".SH \"SEE ALSO\"\n");
    let mut refs: Vec<String> = see_also.iter().map(|name| format!(".BR {name} (1),")).collect();
    refs.push(".BR hpclock (3),".into());
    refs.push(".BR flock (1),".into());
    refs.push(".BR flock (2)".into());
    for line in refs {
        roff.extend_from_slice(line.as_bytes());
        roff.push(b'\n');
    }
    roff.extend_from_slice(
        b".PP\nThe design \\(em the lock-file protocol, the holder record, the filesystems, the lease \\(em is \
          in the docs/ directory of the source distribution.\n",
    );
    written.push(write_page(dir, "hpclock.1", &roff)?);
    Ok(written)
}

/// The page as clap_mangen renders it, its section of after-help text
/// (which clap_mangen calls EXTRA) under the heading `extra`.
fn render(page: Man, extra: &str) -> std::io::Result<Vec<u8>> {
    let mut roff = Vec::new();
    page.render(&mut roff)?;
    let text = String::from_utf8_lossy(&roff).replace("\n.SH EXTRA\n", &format!("\n.SH \"{extra}\"\n"));
    Ok(text.into_bytes())
}

fn write_page(dir: &Path, name: &str, roff: &[u8]) -> std::io::Result<PathBuf> {
    let path = dir.join(name);
    let mut file = std::fs::File::create(&path)?;
    file.write_all(roff)?;
    file.flush()?;
    Ok(path)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, date) = match args.as_slice() {
        [dir] => (dir.as_str(), ""),
        [dir, date] => (dir.as_str(), date.as_str()),
        _ => {
            eprintln!("usage: hpclock-man DIR [YYYY-MM-DD]");
            return ExitCode::from(2);
        }
    };
    match std::fs::create_dir_all(dir).and_then(|()| write_pages(Path::new(dir), date)) {
        Ok(pages) => {
            for page in pages {
                println!("{}", page.display());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("hpclock-man: {dir}: {error}");
            ExitCode::FAILURE
        }
    }
}
