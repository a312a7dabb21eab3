//! One module per subcommand, and how they write text: [`outln!`] for results on stdout,
//! [`errln!`] for progress and notes on stderr, and [`printable`] for every name that comes from
//! data.

use std::borrow::Cow;

/// `println!` that hands back the write's error instead of panicking. Results go through it and
/// `?`: when stdout is a pipe whose reader has gone (`regioncl inspect DS | head -1`), the
/// command stops there and `main` exits 0 quietly, as ripgrep does. Write result files before
/// printing, so they exist whatever the reader does. (Defined before the subcommand modules, it
/// is in their scope without an import.)
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// `s` with every control character (C0, DEL, C1) and bidirectional control written as its Rust
/// escape (`\u{1b}`, `\n`, `\t`, ...): an escape sequence in a class or file name could
/// otherwise recolour, clear or retitle the terminal, and a bidi control show text in another
/// order than it is stored. Borrowed when there is nothing to escape.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if needs_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    // U+061C, U+200E/F, U+202A..E, U+2066..9: the bidi marks, embeddings, overrides, isolates.
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}')
        || matches!(c, '\u{2066}'..='\u{2069}')
}

/// `eprintln!` that ignores a closed stderr: progress and notes are best effort, and a training
/// must not stop, nor panic, because the reader of its log went away. (In the subcommand modules'
/// scope by textual order, as [`outln!`].)
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

pub(crate) use errln;

pub mod bench;
pub mod bench_loader;
pub mod bench_train;
pub mod compare;
pub mod convert;
pub mod env;
pub mod eval;
pub mod export;
pub mod inspect;
pub mod plot;
pub mod train;

/// The checkout this binary was built from (binaries are run from it; see the README).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A file of the checkout, which must exist.
///
/// # Errors
/// When it does not.
pub fn repo_file(rel: &str) -> anyhow::Result<std::path::PathBuf> {
    let p = repo_root().join(rel);
    anyhow::ensure!(p.exists(), "{}: missing (run regioncl from its checkout)", p.display());
    Ok(p)
}

/// The venv's Python (torch, torchvision): `REGIONCL_PYTHON`, else `<checkout>/.venv/bin/python`.
///
/// # Errors
/// When neither exists (run `make venv`).
pub fn venv_python() -> anyhow::Result<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("REGIONCL_PYTHON") {
        return Ok(p.into());
    }
    let p = repo_root().join(".venv/bin/python");
    anyhow::ensure!(p.exists(), "{}: no venv; run `make venv`", p.display());
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12 #16: class and file names with terminal escape sequences were printed raw.
    #[test]
    fn escape_sequences_are_printed_escaped() {
        assert_eq!(printable("n01440764"), "n01440764");
        assert!(matches!(printable("plain é ü 猫"), Cow::Borrowed(_)));
        assert_eq!(printable("\u{1b}[31mred\u{1b}[0m"), "\\u{1b}[31mred\\u{1b}[0m");
        assert_eq!(printable("a\tb\nc\r\u{7f}\u{9b}"), "a\\tb\\nc\\r\\u{7f}\\u{9b}");
        assert_eq!(printable("abc\u{202e}gpj.exe"), "abc\\u{202e}gpj.exe");
    }
}
