//! The keys of `tracer top` and the view state they change: focus, sort
//! key per panel, the `/` filter and its prompt, pause, interval, help.
//! Pure: a key in, an [`Action`] out.
use std::time::Duration;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::model::Panel;

/// The intervals `+` and `-` step through (the bounds of `--interval`).
pub const STEPS: [Duration; 11] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(60),
    Duration::from_secs(300),
    Duration::from_secs(900),
    Duration::from_secs(3600),
];

/// The footer's key hints.
pub const HINTS: &str = "q quit  Tab/arrows focus  s sort  / filter  +/- interval  p pause  ? help";

/// The help overlay, one line per key.
pub const HELP: [&str; 9] = [
    "q, Esc, Ctrl-C   quit",
    "Tab, arrows      move the focus between panels (Shift-Tab back)",
    "s                next sort key of the focused panel",
    "/                filter rows by text (Enter applies, Esc cancels)",
    "+, -             refresh less or more often",
    "p                pause and resume refreshing",
    "r                refresh now",
    "?                this help (any key closes it)",
    "",
];

/// What the loop does after a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Redraw (perhaps nothing changed).
    Redraw,
    /// Leave, restoring the terminal.
    Quit,
    /// Refresh on this interval from now on.
    Interval(Duration),
    /// Pause or resume refreshing.
    Pause(bool),
    /// Refresh now.
    Refresh,
}

/// The view's state.
#[derive(Clone, Debug, PartialEq)]
pub struct Ui {
    /// The focused panel.
    pub focus: Panel,
    /// Index into [`Panel::sorts`] per panel.
    pub sort: [usize; 6],
    /// The filter in force (empty: none).
    pub filter: String,
    /// The filter being typed, while the prompt is open.
    pub prompt: Option<String>,
    /// Refreshing stopped.
    pub paused: bool,
    /// The help overlay is shown.
    pub help: bool,
    /// The refresh interval.
    pub interval: Duration,
}

impl Ui {
    /// The starting state: focus on the states, first sort everywhere.
    pub fn new(interval: Duration) -> Ui {
        Ui {
            focus: Panel::States,
            sort: [0; 6],
            filter: String::new(),
            prompt: None,
            paused: false,
            help: false,
            interval,
        }
    }

    /// The sort key name and direction of `panel`.
    pub fn sort_of(&self, panel: Panel) -> (usize, &'static str, bool) {
        let sorts = panel.sorts();
        let i = self.sort[panel.index()] % sorts.len();
        (i, sorts[i].0, sorts[i].1)
    }

    fn step(&mut self, by: isize) -> Action {
        let now = STEPS
            .iter()
            .position(|&s| s >= self.interval)
            .unwrap_or(STEPS.len() - 1);
        let next = if by > 0 && STEPS[now] > self.interval {
            now
        } else {
            now.saturating_add_signed(by).min(STEPS.len() - 1)
        };
        self.interval = STEPS[next];
        Action::Interval(self.interval)
    }

    fn focus_by(&mut self, by: isize) {
        let n = Panel::ALL.len() as isize;
        let i = (self.focus.index() as isize + by).rem_euclid(n);
        self.focus = Panel::ALL[i as usize];
    }

    /// Apply one key press.
    pub fn key(&mut self, k: KeyEvent) -> Action {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if let Some(text) = &mut self.prompt {
            match k.code {
                KeyCode::Enter => {
                    self.filter = text.trim().to_owned();
                    self.prompt = None;
                }
                KeyCode::Esc => self.prompt = None,
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) if text.chars().count() < 64 => text.push(c),
                _ => {}
            }
            return Action::Redraw;
        }
        if self.help {
            self.help = false;
            return match k.code {
                KeyCode::Char('q') => Action::Quit,
                _ => Action::Redraw,
            };
        }
        match k.code {
            KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
            KeyCode::Tab | KeyCode::Right | KeyCode::Down => self.focus_by(1),
            KeyCode::BackTab | KeyCode::Left | KeyCode::Up => self.focus_by(-1),
            KeyCode::Char('s') => {
                let i = self.focus.index();
                self.sort[i] = (self.sort[i] + 1) % self.focus.sorts().len();
            }
            KeyCode::Char('/') => self.prompt = Some(self.filter.clone()),
            KeyCode::Char('+') | KeyCode::Char('=') => return self.step(1),
            KeyCode::Char('-') => return self.step(-1),
            KeyCode::Char('p') | KeyCode::Char(' ') => {
                self.paused = !self.paused;
                return Action::Pause(self.paused);
            }
            KeyCode::Char('r') => return Action::Refresh,
            KeyCode::Char('?') | KeyCode::Char('h') => self.help = true,
            _ => {}
        }
        Action::Redraw
    }
}

#[cfg(test)]
mod tests;
