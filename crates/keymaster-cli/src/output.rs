//! How commands print: text for people, one JSON document per line with `--json`, and the
//! one-line error message. Commands decide *what* to print; this module decides *how*.

use std::io::Write;

use anyhow::Context;
use serde::Serialize;

/// The output mode chosen on the command line.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Output { json }
    }

    /// `--json` was given.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Prints `value` as one line of JSON on stdout.
    pub fn json<T: Serialize + ?Sized>(&self, value: &T) -> anyhow::Result<()> {
        let text = serde_json::to_string(value).context("cannot encode the output as JSON")?;
        line(&text)
    }

    /// Prints `text` on stdout unless `--json` was given.
    pub fn text(&self, text: &str) -> anyhow::Result<()> {
        if self.json {
            return Ok(());
        }
        line(text)
    }
}

/// Writes one line to stdout and flushes it (so that `--wait` shows the code at once). A closed
/// stdout is an error, not a panic as with `println!`.
pub fn line(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")
}

/// An error chain as one line: causes joined with `: `, line breaks folded into spaces.
pub fn one_line(err: &anyhow::Error) -> String {
    let text = format!("{err:#}");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_line_with_their_causes() {
        let err = anyhow::anyhow!("bad\nthing").context("reading x");
        assert_eq!(one_line(&err), "reading x: bad thing");
    }
}
