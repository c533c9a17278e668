//! How `tracer top` draws a [`Model`] with ratatui: a header, the six
//! panels, a footer with the key hints (or the filter prompt), and the
//! help overlay. The same drawing, on an off-screen buffer, is the plain
//! text `--once` prints.
use ratatui::{
    Frame, Terminal,
    backend::TestBackend,
    layout::{Constraint, Layout, Rect},
    style::{Style, Stylize as _},
    text::Line,
    widgets::{Block, Clear, Paragraph, Row, Table, Wrap},
};

use super::{
    keys::{HELP, HINTS, Ui},
    model::{Model, Panel, Row as ModelRow},
};

/// What one frame shows.
pub struct Screen<'a> {
    /// The data.
    pub model: &'a Model,
    /// Focus, sorts, filter, prompt, pause, help.
    pub ui: &'a Ui,
    /// The agent asked.
    pub url: &'a str,
    /// The command line's filters (`--port 8080`), empty for none: the
    /// counts and panels are of what they keep.
    pub only: &'a str,
    /// Why the last refresh failed, while it does.
    pub error: Option<&'a str>,
    /// Live (footer and interval shown), or one `--once` frame.
    pub live: bool,
}

/// Rows shown at most per table in a `--once` frame.
const ONCE_ROWS: usize = 20;
/// Lines of the states and dwell panels: every state, a header, borders.
const STATES_HEIGHT: u16 = 13 + 3;

/// The CLOSE_WAIT panel's CONTAINER column: as wide as its widest cell,
/// from the header's width up to this, and never at the cost of the
/// connection's [`CONNECTION_MIN`] columns.
const CONTAINER_MAX: u16 = 24;
/// The columns the CLOSE_WAIT panel's connection keeps at least.
const CONNECTION_MIN: u16 = 30;

/// The column widths of `panel`, whose rows are `rows`, `inner` columns
/// wide inside its borders.
fn widths(panel: Panel, rows: &[&ModelRow], inner: u16) -> Vec<Constraint> {
    use Constraint::{Length, Min};
    match panel {
        Panel::States => vec![Length(14), Length(8), Length(9)],
        Panel::Dwell => vec![
            Length(14),
            Length(8),
            Length(9),
            Length(9),
            Length(9),
            Length(9),
        ],
        Panel::CloseWait => {
            let [age, pid, comm, fd, eof] = [8, 7, 15, 4, 8];
            let header = "CONTAINER".len() as u16;
            // What the other columns and the six gaps between all seven leave.
            let room = inner.saturating_sub(age + pid + comm + fd + eof + 6 + CONNECTION_MIN);
            let widest = rows
                .iter()
                .map(|r| Line::from(r.cells[5].as_str()).width())
                .max()
                .unwrap_or(0);
            let container = u16::try_from(widest)
                .unwrap_or(u16::MAX)
                .clamp(header, CONTAINER_MAX.min(room).max(header));
            vec![
                Length(age),
                Length(pid),
                Length(comm),
                Length(fd),
                Min(CONNECTION_MIN),
                Length(container),
                Length(eof),
            ]
        }
        Panel::Procs => vec![
            Length(7),
            Length(15),
            Length(10),
            Length(5),
            Length(8),
            Length(10),
        ],
        Panel::TwPorts => vec![Length(8), Length(8)],
        Panel::TwRemotes => vec![Min(24), Length(8)],
    }
}

fn header_lines(s: &Screen<'_>) -> Vec<Line<'static>> {
    let m = s.model;
    let mut first = format!("tracer top  {}  at {}  tracked {}", s.url, m.now, m.tracked);
    if s.live {
        first.push_str(&format!(
            "  every {}",
            humantime::format_duration(s.ui.interval)
        ));
        if s.ui.paused {
            first.push_str("  PAUSED");
        }
    }
    if !s.ui.filter.is_empty() {
        first.push_str(&format!("  filter: {}", s.ui.filter));
    }
    let mut second = format!("leaks {}", m.leak_count);
    if !m.leak_kinds.is_empty() {
        second.push_str(&format!(" ({})", m.leak_kinds));
    }
    if !s.only.is_empty() {
        second.push_str(&format!(" (only {})", s.only));
    }
    if let Some(h) = m.handshakes {
        let (ok, failed, rates) = (h.ok, h.failed, h.rates);
        let r = |v: Option<f64>| v.map_or(String::new(), |v| format!(" ({v:+.1}/s)"));
        second.push_str(&format!(
            "  handshakes: {ok} established{}, {failed} failed{}",
            r(rates.map(|r| r.0)),
            r(rates.map(|r| r.1))
        ));
    }
    let third = match (s.error, &m.soonest) {
        (Some(e), _) => {
            Line::from(format!("agent not answering, showing the last data: {e}")).red()
        }
        (None, Some((line, now))) => {
            let l = Line::from(format!("forecast: {line}"));
            if *now { l.red().bold() } else { l.yellow() }
        }
        (None, None) if m.unfollowed_netns > 0 => Line::from(format!(
            "{} network namespace(s) not followed (the agent's log says why): their leaks are \
             not shown",
            m.unfollowed_netns
        ))
        .yellow(),
        (None, None) => Line::from(""),
    };
    vec![Line::from(first).bold(), Line::from(second), third]
}

fn panel(f: &mut Frame<'_>, s: &Screen<'_>, p: Panel, area: Rect) {
    let (sort, key, desc) = s.ui.sort_of(p);
    let rows = s.model.rows(p, sort, &s.ui.filter);
    let all = s.model.tables[p.index()].len();
    let focused = s.live && s.ui.focus == p;
    let mut title = format!(" {}{} ", if focused { "> " } else { "" }, p.title());
    // Rows past the panel's height are not drawn: say how many are.
    let fits = usize::from(area.height.saturating_sub(3));
    let shown = if rows.len() > fits {
        format!(", {fits} shown")
    } else {
        String::new()
    };
    // An empty CLOSE_WAIT panel beside CLOSE_WAIT sockets in the states
    // panel: they are younger than the threshold, not missed.
    let after = match (p, s.model.close_wait_after) {
        (Panel::CloseWait, Some(t)) if all == 0 => {
            format!(
                "; flagged after {}",
                crate::leaks::table::fmt_age(Some(t), false)
            )
        }
        _ => String::new(),
    };
    if rows.len() != all {
        title.push_str(&format!("({} of {all}{shown}) ", rows.len()));
    } else if p != Panel::States {
        title.push_str(&format!("({all}{shown}{after}) "));
    }
    if matches!(p, Panel::TwPorts | Panel::TwRemotes) && s.model.time_wait_read.1 {
        title.push_str("sampled ");
    }
    title.push_str(&format!("sort: {key}{} ", if desc { " v" } else { " ^" }));
    let mut block = Block::bordered().title(title);
    if focused {
        block = block.border_style(Style::new().yellow().bold());
    }
    let header = Row::new(p.header().iter().copied()).bold();
    let body = rows.iter().map(|r| Row::new(r.cells.iter().cloned()));
    let table = Table::new(body, widths(p, &rows, area.width.saturating_sub(2)))
        .header(header)
        .block(block);
    f.render_widget(table, area);
}

/// Table heights of a `--once` frame: as many rows as there are, up to
/// [`ONCE_ROWS`].
fn fitted(s: &Screen<'_>, a: Panel, b: Panel) -> u16 {
    let n = |p| s.model.rows(p, 0, &s.ui.filter).len();
    n(a).max(n(b)).clamp(1, ONCE_ROWS) as u16 + 3
}

/// The height a `--once` frame needs.
pub fn once_height(s: &Screen<'_>) -> u16 {
    3 + STATES_HEIGHT
        + fitted(s, Panel::CloseWait, Panel::Procs)
        + fitted(s, Panel::TwPorts, Panel::TwRemotes)
}

/// The smallest terminal the live view draws its panels in.
pub const MIN_SIZE: (u16, u16) = (60, 16);

/// Draw one frame.
pub fn draw(f: &mut Frame<'_>, s: &Screen<'_>) {
    use Constraint::{Fill, Length, Percentage};
    let area = f.area();
    if s.live && (area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1) {
        let said = format!(
            "terminal too small ({}x{}): tracer top needs {}x{}; q quits",
            area.width, area.height, MIN_SIZE.0, MIN_SIZE.1
        );
        f.render_widget(Paragraph::new(said).wrap(Wrap { trim: true }), area);
        return;
    }
    let (middle, bottom, footer) = if s.live {
        (Fill(3), Fill(2), 1)
    } else {
        (
            Length(fitted(s, Panel::CloseWait, Panel::Procs)),
            Length(fitted(s, Panel::TwPorts, Panel::TwRemotes)),
            0,
        )
    };
    let [head, top, mid, low, foot] = Layout::vertical([
        Length(3),
        Length(STATES_HEIGHT),
        middle,
        bottom,
        Length(footer),
    ])
    .areas(f.area());
    f.render_widget(Paragraph::new(header_lines(s)), head);
    let [states, dwell] = Layout::horizontal([Length(44), Fill(1)]).areas(top);
    let [cw, procs] = Layout::horizontal([Fill(1), Length(62)]).areas(mid);
    let [ports, remotes] = Layout::horizontal([Percentage(35), Fill(1)]).areas(low);
    for (p, area) in [
        (Panel::States, states),
        (Panel::Dwell, dwell),
        (Panel::CloseWait, cw),
        (Panel::Procs, procs),
        (Panel::TwPorts, ports),
        (Panel::TwRemotes, remotes),
    ] {
        panel(f, s, p, area);
    }
    if !s.live {
        return;
    }
    let footer = match &s.ui.prompt {
        Some(text) => Line::from(format!("filter: {text}_  (Enter applies, Esc cancels)")).bold(),
        None => Line::from(HINTS).reversed(),
    };
    f.render_widget(Paragraph::new(footer), foot);
    if s.ui.help {
        let area = f.area();
        let w = 76.min(area.width);
        let h = (HELP.len() as u16 + 2).min(area.height);
        let r = Rect::new(
            area.x + (area.width - w) / 2,
            area.y + (area.height - h) / 2,
            w,
            h,
        );
        f.render_widget(Clear, r);
        let lines: Vec<Line<'_>> = HELP.iter().map(|l| Line::from(format!(" {l}"))).collect();
        f.render_widget(
            Paragraph::new(lines).block(Block::bordered().title(" Keys of tracer top ")),
            r,
        );
    }
}

/// One frame as plain text, `width` columns wide: what `--once` prints.
pub fn text(s: &Screen<'_>, width: u16) -> anyhow::Result<String> {
    let mut term = Terminal::new(TestBackend::new(width, once_height(s)))?;
    term.draw(|f| draw(f, s))?;
    Ok(buffer_text(term.backend().buffer()))
}

/// A buffer's lines, trailing blanks trimmed.
pub fn buffer_text(b: &ratatui::buffer::Buffer) -> String {
    let w = b.area.width as usize;
    let mut out = String::new();
    for row in b.content().chunks(w.max(1)) {
        let line: String = row.iter().map(|c| c.symbol()).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
