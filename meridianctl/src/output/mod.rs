//! Everything about what reaches the terminal: the output format, the JSON printer,
//! the table renderers ([`text`]), the exit-code rule, and [`emit`], the one function
//! that writes to stdout.

use std::io::{self, Write};
use std::process::ExitCode;

use serde::Serialize;

use crate::error::CtlError;

pub mod text;
pub mod watch;

/// What `-o` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables and short sentences for people.
    Table,
    /// One JSON document for scripts, with field names scripts can rely on.
    Json,
}

/// How the process ends once the output is written.
///
/// The rule: `Success` (0) when the command did what was asked; `Refused` (1) when the
/// replica answered but refused the input (`apply` with validation errors), the same
/// status as any failure; `Unhealthy` (2) when `status` finds no leader or an
/// unhealthy store, so scripts can tell "the control plane is sick" from "the CLI
/// failed". `change show --watch` and `drain --wait` end with how the change ended
/// (see [`change_end`]): `Success` (0) completed or reverted, `RolledBack` (4),
/// `Paused` (5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success,
    Refused,
    Unhealthy,
    RolledBack,
    Paused,
}

impl Exit {
    /// The process exit status of this outcome.
    pub fn status(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Refused => 1,
            Exit::Unhealthy => 2,
            Exit::RolledBack => 4,
            Exit::Paused => 5,
        }
    }

    /// The same, as what `main` returns.
    pub fn code(self) -> ExitCode {
        ExitCode::from(self.status())
    }
}

/// How watching a change in `state` (a [`crate::views::change_state_name`]) ends:
/// `None` while it is still moving (pending, progressing, rolling back); 0 when it
/// completed or was reverted, 4 rolled back, 5 paused. A state this CLI does not
/// know ends the watch with status 1 rather than waiting for ever.
pub fn change_end(state: &str) -> Option<Exit> {
    match state {
        "pending" | "progressing" | "rolling_back" => None,
        "completed" | "reverted" => Some(Exit::Success),
        "rolled_back" => Some(Exit::RolledBack),
        "paused" => Some(Exit::Paused),
        _ => Some(Exit::Refused),
    }
}

/// A command's whole output, rendered before anything is written, and how to exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub text: String,
    pub exit: Exit,
}

impl Report {
    /// A successful command that prints `text`.
    pub fn success(text: String) -> Self {
        Report {
            text,
            exit: Exit::Success,
        }
    }
}

/// `view` as indented JSON followed by a newline.
pub fn json_pretty<T: Serialize>(view: &T) -> Result<String, CtlError> {
    let mut text = serde_json::to_string_pretty(view)?;
    text.push('\n');
    Ok(text)
}

/// `view` as one line of JSON followed by a newline.
pub fn json_line<T: Serialize>(view: &T) -> Result<String, CtlError> {
    let mut text = serde_json::to_string(view)?;
    text.push('\n');
    Ok(text)
}

/// Renders `view` in `format`: indented JSON, or the table `table` draws.
pub fn render<T: Serialize>(format: Format, view: &T, table: impl FnOnce(&T) -> String) -> Result<String, CtlError> {
    match format {
        Format::Json => json_pretty(view),
        Format::Table => Ok(table(view)),
    }
}

/// Writes `text` to `out` (a locked stdout in the binary) and flushes it.
///
/// A reader that went away (`meridianctl plan | head -3`) is not an error: the rest
/// of the output is simply not wanted, so `BrokenPipe` counts as success, as in other
/// Unix tools. Any other error is returned.
pub fn emit<W: Write>(mut out: W, text: &str) -> io::Result<()> {
    let written = write!(out, "{text}").and_then(|()| out.flush());
    match written {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts `room` bytes, then fails every write and flush with `kind`.
    struct Closing {
        room: usize,
        kind: io::ErrorKind,
        got: Vec<u8>,
    }

    impl Write for Closing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from(self.kind));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            if self.room == 0 {
                return Err(io::Error::from(self.kind));
            }
            Ok(())
        }
    }

    #[test]
    fn emit_writes_everything_to_an_open_writer() {
        let mut out = Vec::new();
        emit(&mut out, "line one\nline two\n").unwrap();
        assert_eq!(out, b"line one\nline two\n");
    }

    #[test]
    fn emit_treats_a_closed_reader_as_success() {
        let mut out = Closing {
            room: 5,
            kind: io::ErrorKind::BrokenPipe,
            got: Vec::new(),
        };
        emit(&mut out, "plan v12 by cp-a\nmore\n").unwrap();
        assert_eq!(out.got, b"plan ");
    }

    #[test]
    fn emit_reports_other_write_errors() {
        let mut out = Closing {
            room: 0,
            kind: io::ErrorKind::StorageFull,
            got: Vec::new(),
        };
        let err = emit(&mut out, "x\n").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    }

    #[test]
    fn exit_rule() {
        assert_eq!(Exit::Success.status(), 0);
        assert_eq!(Exit::Refused.status(), 1);
        assert_eq!(Exit::Unhealthy.status(), 2);
        assert_eq!(Exit::RolledBack.status(), 4);
        assert_eq!(Exit::Paused.status(), 5);
    }

    #[test]
    fn each_end_state_of_a_change_has_its_exit_status() {
        let status = |s: &str| change_end(s).map(Exit::status);
        assert_eq!(status("completed"), Some(0));
        assert_eq!(status("reverted"), Some(0));
        assert_eq!(status("rolled_back"), Some(4));
        assert_eq!(status("paused"), Some(5));
        for moving in ["pending", "progressing", "rolling_back"] {
            assert_eq!(status(moving), None, "{moving} is still moving");
        }
        assert_eq!(
            status("unknown"),
            Some(1),
            "never wait for ever on a state we cannot read"
        );
    }

    #[test]
    fn json_output_ends_with_a_newline_and_table_uses_the_renderer() {
        #[derive(Serialize)]
        struct V {
            a: u32,
        }
        assert_eq!(
            render(Format::Json, &V { a: 1 }, |_| unreachable!()).unwrap(),
            "{\n  \"a\": 1\n}\n"
        );
        assert_eq!(
            render(Format::Table, &V { a: 1 }, |v| format!("a={}\n", v.a)).unwrap(),
            "a=1\n"
        );
        assert_eq!(json_line(&V { a: 2 }).unwrap(), "{\"a\":2}\n");
    }
}
