//! A tiny file tool: `read P`, `read-after-stdin P` (reads stdin to its
//! end first), `write P TEXT`, `append P TEXT`, `ls P`,
//! `mkdir P`, `rm P`, and `cat` (stdin to stdout, then a byte count on
//! stderr). Errors go to stderr with exit code 1.
use std::io::{Read, Write};

fn run(args: &[String]) -> std::io::Result<()> {
    match args {
        [cmd, p] if cmd == "read-after-stdin" => {
            std::io::stdin().read_to_end(&mut Vec::new())?;
            print!("{}", std::fs::read_to_string(p)?);
        }
        [cmd, p] if cmd == "read" => {
            let s = std::fs::read_to_string(p)?;
            print!("{s}");
        }
        [cmd, p, text] if cmd == "write" => std::fs::write(p, text)?,
        [cmd, p, text] if cmd == "append" => {
            let mut f = std::fs::OpenOptions::new().append(true).create(true).open(p)?;
            f.write_all(text.as_bytes())?;
        }
        [cmd, p] if cmd == "ls" => {
            let mut names: Vec<String> = std::fs::read_dir(p)?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<_, _>>()?;
            names.sort();
            for n in names {
                println!("{n}");
            }
        }
        [cmd] if cmd == "cat" => {
            let mut input = Vec::new();
            std::io::stdin().read_to_end(&mut input)?;
            std::io::stdout().write_all(&input)?;
            eprintln!("file-tool: read {} bytes from stdin", input.len());
        }
        [cmd, p] if cmd == "mkdir" => std::fs::create_dir_all(p)?,
        [cmd, p] if cmd == "rm" => std::fs::remove_file(p)?,
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "usage: file-tool read|write|append|ls|mkdir|rm PATH [TEXT]",
            ))
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("file-tool: {e} (kind {:?})", e.kind());
        std::process::exit(1);
    }
}
