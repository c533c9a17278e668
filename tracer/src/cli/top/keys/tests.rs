//! Keys in, view state and actions out.
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::*;

fn press(ui: &mut Ui, code: KeyCode) -> Action {
    ui.key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn typed(ui: &mut Ui, text: &str) {
    for c in text.chars() {
        press(ui, KeyCode::Char(c));
    }
}

#[test]
fn tab_and_arrows_move_the_focus_round_the_panels() {
    let mut ui = Ui::new(Duration::from_secs(2));
    let mut seen = vec![ui.focus];
    for _ in 0..6 {
        assert_eq!(press(&mut ui, KeyCode::Tab), Action::Redraw);
        seen.push(ui.focus);
    }
    assert_eq!(seen[..6], Panel::ALL);
    assert_eq!(seen[6], Panel::States, "wraps");
    press(&mut ui, KeyCode::BackTab);
    assert_eq!(ui.focus, Panel::TwRemotes);
    press(&mut ui, KeyCode::Right);
    press(&mut ui, KeyCode::Down);
    assert_eq!(ui.focus, Panel::Dwell);
    press(&mut ui, KeyCode::Left);
    assert_eq!(ui.focus, Panel::States);
}

#[test]
fn s_cycles_the_sort_of_the_focused_panel_only() {
    let mut ui = Ui::new(Duration::from_secs(2));
    press(&mut ui, KeyCode::Tab);
    press(&mut ui, KeyCode::Tab);
    assert_eq!(ui.sort_of(Panel::CloseWait), (0, "age", true));
    press(&mut ui, KeyCode::Char('s'));
    assert_eq!(ui.sort_of(Panel::CloseWait), (1, "pid", false));
    press(&mut ui, KeyCode::Char('s'));
    press(&mut ui, KeyCode::Char('s'));
    assert_eq!(ui.sort_of(Panel::CloseWait), (0, "age", true), "wraps");
    assert_eq!(ui.sort_of(Panel::States), (0, "state", false));
}

#[test]
fn the_filter_prompt_applies_on_enter_and_cancels_on_esc() {
    let mut ui = Ui::new(Duration::from_secs(2));
    press(&mut ui, KeyCode::Char('/'));
    assert_eq!(ui.prompt.as_deref(), Some(""));
    // Keys are text while the prompt is open: q does not quit.
    typed(&mut ui, "javaq");
    assert_eq!(press(&mut ui, KeyCode::Backspace), Action::Redraw);
    assert_eq!(ui.prompt.as_deref(), Some("java"));
    assert_eq!(ui.filter, "");
    press(&mut ui, KeyCode::Enter);
    assert_eq!((ui.filter.as_str(), ui.prompt.is_none()), ("java", true));
    press(&mut ui, KeyCode::Char('/'));
    assert_eq!(ui.prompt.as_deref(), Some("java"), "starts from the filter");
    typed(&mut ui, "x");
    assert_eq!(press(&mut ui, KeyCode::Esc), Action::Redraw, "Esc cancels");
    assert_eq!((ui.filter.as_str(), ui.prompt.is_none()), ("java", true));
    // An empty filter clears it.
    press(&mut ui, KeyCode::Char('/'));
    for _ in 0..4 {
        press(&mut ui, KeyCode::Backspace);
    }
    press(&mut ui, KeyCode::Enter);
    assert_eq!(ui.filter, "");
}

#[test]
fn plus_and_minus_step_the_interval_within_its_bounds() {
    let mut ui = Ui::new(Duration::from_secs(2));
    assert_eq!(
        press(&mut ui, KeyCode::Char('+')),
        Action::Interval(Duration::from_secs(5))
    );
    press(&mut ui, KeyCode::Char('-'));
    press(&mut ui, KeyCode::Char('-'));
    assert_eq!(ui.interval, Duration::from_secs(1));
    for _ in 0..5 {
        press(&mut ui, KeyCode::Char('-'));
    }
    assert_eq!(ui.interval, Duration::from_millis(250), "the lower bound");
    for _ in 0..20 {
        press(&mut ui, KeyCode::Char('+'));
    }
    assert_eq!(ui.interval, Duration::from_secs(3600), "the upper bound");
    // From an interval between steps: to the next step either way.
    let mut ui = Ui::new(Duration::from_secs(3));
    assert_eq!(
        press(&mut ui, KeyCode::Char('+')),
        Action::Interval(Duration::from_secs(5))
    );
    let mut ui = Ui::new(Duration::from_secs(3));
    assert_eq!(
        press(&mut ui, KeyCode::Char('-')),
        Action::Interval(Duration::from_secs(2))
    );
}

#[test]
fn pause_help_and_the_ways_out() {
    let mut ui = Ui::new(Duration::from_secs(2));
    assert_eq!(press(&mut ui, KeyCode::Char('p')), Action::Pause(true));
    assert_eq!(press(&mut ui, KeyCode::Char('p')), Action::Pause(false));
    assert_eq!(press(&mut ui, KeyCode::Char('r')), Action::Refresh);
    press(&mut ui, KeyCode::Char('?'));
    assert!(ui.help);
    // Any key closes the help, and does nothing else.
    assert_eq!(press(&mut ui, KeyCode::Tab), Action::Redraw);
    assert_eq!((ui.help, ui.focus), (false, Panel::States));
    assert_eq!(press(&mut ui, KeyCode::Char('q')), Action::Quit);
    assert_eq!(press(&mut ui, KeyCode::Esc), Action::Quit);
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    press(&mut ui, KeyCode::Char('/'));
    assert_eq!(ui.key(ctrl_c), Action::Quit, "even in the prompt");
}
