//! What `change show --watch` and `drain --wait` print at each poll, decided from
//! the views alone (the polling loop is in `commands::watch`).
//!
//! Decisions: on a terminal the view is redrawn in place every poll (ANSI clear,
//! so the bake bar moves); into a pipe or file a new block is printed only when the
//! view changed, so a log does not fill with identical frames. With `-o json`, one
//! line per change of state, phase or step, and the final record once more if it
//! differs from the last line printed. The watch ends when the change ends or
//! pauses, with the status [`change_end`] gives.

use crate::error::CtlError;
use crate::output::{change_end, json_line, text, Exit, Format};
use crate::views::ChangeDetailView;

/// Clears the screen and puts the cursor home.
pub const CLEAR: &str = "\x1b[H\x1b[2J";

/// The state of one watch: what was printed last.
#[derive(Debug)]
pub struct Watcher {
    format: Format,
    tty: bool,
    /// The last view printed (text) or last JSON line printed.
    printed: Option<ChangeDetailView>,
}

/// What one poll prints, and how the watch ends if it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Written as is (may be empty: nothing new).
    pub text: String,
    /// `Some` once the change ended or paused: stop and exit with it.
    pub end: Option<Exit>,
}

impl Watcher {
    /// A watch printing in `format`; `tty` when stdout is a terminal.
    pub fn new(format: Format, tty: bool) -> Self {
        Watcher {
            format,
            tty,
            printed: None,
        }
    }

    /// The frame for `view`, seen at `now_ms` (the local clock, for the bake bar).
    pub fn observe(&mut self, view: &ChangeDetailView, now_ms: i64) -> Result<Frame, CtlError> {
        let end = change_end(view.state);
        let mut text = String::new();
        match self.format {
            Format::Json => {
                let moved = self
                    .printed
                    .as_ref()
                    .is_none_or(|p| (p.state, &p.phase, p.step) != (view.state, &view.phase, view.step));
                let final_differs = end.is_some() && self.printed.as_ref() != Some(view);
                if moved || final_differs {
                    text = json_line(view)?;
                    self.printed = Some(view.clone());
                }
            }
            Format::Table if self.tty => {
                text = format!("{CLEAR}{}", text::change_detail(view, now_ms));
                self.printed = Some(view.clone());
            }
            Format::Table => {
                if self.printed.as_ref() != Some(view) {
                    if self.printed.is_some() {
                        text.push('\n');
                    }
                    text.push_str(&text::change_detail(view, now_ms));
                    self.printed = Some(view.clone());
                }
            }
        }
        if end.is_some() && self.format == Format::Table {
            text.push_str(&text::change_ending(view).unwrap_or_default());
        }
        Ok(Frame { text, end })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::views::ChangeDetailView;
    use meridian_proto::v1 as pb;

    fn view(state: pb::ChangeState, step: u32, phase: &str) -> ChangeDetailView {
        let mut c = fixtures::ladder();
        c.state = state as i32;
        c.step = step;
        c.phase = phase.into();
        if state != pb::ChangeState::Paused {
            c.state_reason.clear();
        }
        ChangeDetailView::new(c, Err("not asked".into()))
    }

    #[test]
    fn json_prints_a_line_per_state_phase_or_step_and_the_final_record() {
        let mut w = Watcher::new(Format::Json, false);
        let bake = view(pb::ChangeState::Progressing, 1, "bake");
        let f = w.observe(&bake, 0).unwrap();
        assert_eq!(f.end, None);
        let line: serde_json::Value = serde_json::from_str(f.text.trim_end()).unwrap();
        assert_eq!((line["phase"].as_str(), line["step"].as_u64()), (Some("bake"), Some(1)));
        assert_eq!(f.text.lines().count(), 1);
        // Same state, phase and step (the clock moved, agents changed): nothing.
        let mut again = bake.clone();
        again.agents_error = Some("other".into());
        assert_eq!(w.observe(&again, 5_000).unwrap().text, "");
        // A new phase: a line.
        let f = w.observe(&view(pb::ChangeState::Progressing, 1, "analyse"), 0).unwrap();
        assert!(f.text.contains("\"phase\":\"analyse\""), "{}", f.text);
        // The end: the final record, and the status.
        let f = w.observe(&view(pb::ChangeState::RolledBack, 0, ""), 0).unwrap();
        assert_eq!(f.end, Some(Exit::RolledBack));
        assert!(f.text.contains("\"state\":\"rolled_back\""), "{}", f.text);
        assert_eq!(f.text.lines().count(), 1, "JSON lines only, no sentence");
    }

    #[test]
    fn json_prints_the_final_record_even_when_only_other_fields_changed() {
        let mut w = Watcher::new(Format::Json, false);
        let mut done = view(pb::ChangeState::Completed, 2, "");
        w.observe(&view(pb::ChangeState::Completed, 2, ""), 0).unwrap();
        done.history.pop();
        let f = w.observe(&done, 0).unwrap();
        assert_eq!(f.end, Some(Exit::Success));
        assert_eq!(f.text.lines().count(), 1);
    }

    #[test]
    fn a_pipe_gets_a_new_block_only_when_the_view_changed() {
        let mut w = Watcher::new(Format::Table, false);
        let bake = view(pb::ChangeState::Progressing, 1, "bake");
        let first = w.observe(&bake, 0).unwrap();
        assert!(first.text.starts_with("change   "), "{}", first.text);
        assert!(!first.text.contains(CLEAR));
        assert_eq!(w.observe(&bake, 30_000).unwrap().text, "", "only the clock moved");
        let next = w
            .observe(&view(pb::ChangeState::Progressing, 2, "await_acks"), 0)
            .unwrap();
        assert!(
            next.text.starts_with("\nchange   "),
            "blocks are separated: {}",
            next.text
        );
        let paused = w.observe(&view(pb::ChangeState::Paused, 2, ""), 0).unwrap();
        assert_eq!(paused.end, Some(Exit::Paused));
        assert!(
            paused
                .text
                .contains("paused: inconclusive: no load data for ams1\nresume it with `meridianctl change resume"),
            "{}",
            paused.text
        );
    }

    #[test]
    fn a_terminal_is_cleared_and_redrawn_every_poll() {
        let mut w = Watcher::new(Format::Table, true);
        let bake = view(pb::ChangeState::Progressing, 1, "bake");
        let a = w.observe(&bake, fixtures::BAKE_SINCE_MS).unwrap();
        let b = w.observe(&bake, fixtures::BAKE_SINCE_MS + 30_000).unwrap();
        assert!(a.text.starts_with(CLEAR) && b.text.starts_with(CLEAR));
        assert_ne!(a.text, b.text, "the bar moved");
        let done = w.observe(&view(pb::ChangeState::Completed, 2, ""), 0).unwrap();
        assert_eq!(done.end, Some(Exit::Success));
        assert!(
            done.text.ends_with("change drain-fra1-1700000000000 completed\n"),
            "{}",
            done.text
        );
    }
}
