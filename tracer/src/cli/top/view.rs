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
/// The CLOSE_WAIT panel's other columns: AGE, PID, COMM, FD, EOF READ.
const CLOSE_WAIT_COLS: [u16; 5] = [8, 7, 15, 4, 8];
/// The least of the CLOSE_WAIT panel's CONTAINER column: its header.
const CONTAINER_MIN: u16 = "CONTAINER".len() as u16;
/// The processes panel's columns: PID, COMM, CLOSE_WAIT, LEAKS, OLDEST,
/// GROWTH/min.
const PROCS_COLS: [u16; 6] = [7, 15, 10, 5, 8, 10];

/// The sum of `widths`.
const fn sum(widths: &[u16]) -> u16 {
    let (mut i, mut total) = (0, 0);
    while i < widths.len() {
        total += widths[i];
        i += 1;
    }
    total
}

/// One column of a panel: its width (for the one that takes what is left,
/// the least it takes), and when it goes if the panel is too narrow for
/// every column: 0 never, otherwise the highest first.
#[derive(Clone, Copy)]
struct Col {
    width: u16,
    rest: bool,
    drop: u8,
    /// For the one that takes the rest: as wide as its widest cell, which
    /// other columns go to leave room for.
    want: u16,
    /// A container's name: cut, it keeps its end (`podman:web-1` and
    /// `podman:web-2` differ there), as [`name_in`] cuts it.
    name: bool,
}

const fn col(width: u16, drop: u8) -> Col {
    Col {
        width,
        rest: false,
        drop,
        want: width,
        name: false,
    }
}

/// A column of container names (see [`Col::name`]).
const fn name_col(width: u16, drop: u8) -> Col {
    Col {
        name: true,
        ..col(width, drop)
    }
}

/// The column that takes what the others leave: at least `least` wide,
/// and as wide as the widest of its `cells` up to [`REST_MAX`].
fn rest_col<'a>(least: u16, cells: impl Iterator<Item = &'a str>) -> Col {
    Col {
        width: least,
        rest: true,
        drop: 0,
        want: widest(cells).clamp(least, REST_MAX),
        name: false,
    }
}

/// The width of the widest of `cells`, 0 for none.
fn widest<'a>(cells: impl Iterator<Item = &'a str>) -> u16 {
    let w = cells.map(|c| Line::from(c).width()).max().unwrap_or(0);
    u16::try_from(w).unwrap_or(u16::MAX)
}

/// The widest a connection or remote column asks room for: two IPv6 ends.
const REST_MAX: u16 = 47;

/// The columns of `panel`, whose rows are `rows`, `inner` columns wide
/// inside its borders.
fn columns(panel: Panel, rows: &[&ModelRow], inner: u16) -> Vec<Col> {
    match panel {
        Panel::States => vec![col(14, 0), col(8, 0), col(9, 1)],
        // The tail first, then the count: a narrow view keeps P99 and MAX.
        Panel::Dwell => vec![
            col(14, 0),
            col(8, 4),
            col(9, 6),
            col(9, 5),
            col(9, 2),
            col(9, 3),
        ],
        Panel::CloseWait => {
            let [age, pid, comm, fd, eof] = CLOSE_WAIT_COLS;
            let connection = rest_col(CONNECTION_MIN, rows.iter().map(|r| r.cells[4].as_str()));
            // What the other columns, the connection whole and the six gaps
            // between all seven leave.
            let room = inner.saturating_sub(sum(&CLOSE_WAIT_COLS) + 6 + connection.want);
            let container = widest(rows.iter().map(|r| r.cells[5].as_str()))
                .clamp(CONTAINER_MIN, CONTAINER_MAX.min(room).max(CONTAINER_MIN));
            vec![
                col(age, 0),
                col(pid, 0),
                col(comm, 0),
                col(fd, 1),
                connection,
                name_col(container, 3),
                col(eof, 2),
            ]
        }
        Panel::Procs => {
            let [pid, comm, close_wait, leaks, oldest, growth] = PROCS_COLS;
            vec![
                col(pid, 0),
                col(comm, 0),
                col(close_wait, 0),
                col(leaks, 3),
                col(oldest, 1),
                col(growth, 2),
            ]
        }
        Panel::TwPorts => vec![
            col(8, 0),
            col(8, 0),
            Col {
                name: true,
                ..rest_col(6, rows.iter().map(|r| r.cells[2].as_str()))
            },
        ],
        Panel::TwRemotes => vec![
            rest_col(24, rows.iter().map(|r| r.cells[0].as_str())),
            col(8, 0),
        ],
    }
}

/// Which columns of `cols` a panel `inner` columns wide shows, and how
/// wide: while they do not fit (with a gap between two) with the one that
/// takes the rest as wide as it wants, the one that goes first goes; the
/// one that takes the rest takes it. A number is never cut: its column
/// goes whole (the header says which are shown).
fn fit(cols: &[Col], inner: u16) -> Vec<(usize, u16)> {
    let mut kept: Vec<usize> = (0..cols.len()).collect();
    let sum = |kept: &[usize], w: fn(&Col) -> u16| -> u16 {
        kept.iter().map(|&i| w(&cols[i])).sum::<u16>() + kept.len().saturating_sub(1) as u16
    };
    let need = |kept: &[usize]| sum(kept, |c| c.width);
    // Columns go while the one that takes the rest would be cut.
    while sum(&kept, |c| c.want) > inner {
        let Some(at) = (0..kept.len())
            .filter(|&k| cols[kept[k]].drop > 0)
            .max_by_key(|&k| cols[kept[k]].drop)
        else {
            break;
        };
        kept.remove(at);
    }
    // Still too wide (a terminal of 60 columns): the one that takes the
    // rest gives up its least, and its cells are cut (with a mark).
    let over = need(&kept).saturating_sub(inner);
    let spare = inner.saturating_sub(need(&kept));
    kept.iter()
        .map(|&i| {
            let c = cols[i];
            let w = if c.rest {
                (c.width + spare).saturating_sub(over).max(1)
            } else {
                c.width
            };
            (i, w)
        })
        .collect()
}

/// `cell` in `width` columns: whole, or cut with a `…` that says so.
fn cell_in(cell: &str, width: u16) -> String {
    let width = usize::from(width);
    if Line::from(cell).width() <= width {
        return cell.to_owned();
    }
    let mut out: String = cell.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A container's name (`podman:walk9-c1`, `containerd:shop/cart/app`) or
/// a namespace's (`ns:web`) in `width` columns: whole; else a container's
/// without its runtime; else its end after a `…`, where the names of one
/// deployment's containers differ.
fn name_in(cell: &str, width: u16) -> String {
    let fits = |s: &str| Line::from(s).width() <= usize::from(width);
    if fits(cell) {
        return cell.to_owned();
    }
    let (mark, name) = match cell.split_once(':') {
        Some(("ns", name)) => ("ns:", name),
        Some((_runtime, name)) => ("", name),
        None => ("", cell),
    };
    if mark.is_empty() && fits(name) {
        return name.to_owned();
    }
    // A namespace's name keeps its mark.
    let keep = usize::from(width).saturating_sub(1 + mark.len());
    let tail: String = {
        let chars: Vec<char> = name.chars().collect();
        chars[chars.len().saturating_sub(keep)..].iter().collect()
    };
    format!("{mark}…{tail}")
}

/// The header's three lines, each with its style.
fn header_lines(s: &Screen<'_>) -> [(String, Style); 3] {
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
        // The filters keep leaks and TIME_WAIT sockets; the state counts,
        // dwell times and handshakes stay whole, and the header says so.
        second.push_str(&format!(" (only {}: leaks, TIME_WAIT)", s.only));
    }
    if let Some(h) = m.handshakes {
        let (ok, failed, rates) = (h.ok, h.failed, h.rates);
        let r = |v: Option<f64>| v.map_or(String::new(), |v| format!(" ({v:+.1}/s)"));
        second.push_str(&format!(
            "  handshakes: {ok} established{}, {failed} failed{}",
            r(rates.map(|r| r.0)),
            r(rates.map(|r| r.1))
        ));
        if h.no_local_port > 0 {
            second.push_str(&format!(", {} with no free local port", h.no_local_port));
        }
    }
    let third = match (s.error, &m.soonest) {
        (Some(e), _) => (
            format!("agent not answering, showing the last data: {e}"),
            Style::new().red(),
        ),
        (None, Some((line, now))) => (
            format!("forecast: {line}"),
            if *now {
                Style::new().red().bold()
            } else {
                Style::new().yellow()
            },
        ),
        (None, None) if m.unfollowed_netns > 0 => (
            format!(
                "{} network namespace(s) not followed (the agent's log says why): their leaks \
                 are not shown",
                m.unfollowed_netns
            ),
            Style::new().yellow(),
        ),
        (None, None) => (String::new(), Style::new()),
    };
    [(first, Style::new().bold()), (second, Style::new()), third]
}

/// The header's lines in `width` columns: a line too long goes on at the
/// next, broken between words, so that the end of a forecast (when it runs
/// out) is never cut off.
fn header_wrapped(s: &Screen<'_>, width: u16) -> Vec<Line<'static>> {
    header_lines(s)
        .into_iter()
        .flat_map(|(text, style)| {
            wrap(&text, usize::from(width.max(1)))
                .into_iter()
                .map(move |l| Line::from(l).style(style))
        })
        .collect()
}

/// `text` broken into lines of at most `width` characters, between words
/// where it can (a word longer than a line is cut).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let len = line.chars().count();
        if len > 0 && len + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
        while line.chars().count() > width {
            let rest: String = line.chars().skip(width).collect();
            line.truncate(
                line.char_indices()
                    .nth(width)
                    .map_or(line.len(), |(i, _)| i),
            );
            lines.push(std::mem::replace(&mut line, rest));
        }
    }
    lines.push(line);
    lines
}

fn panel(f: &mut Frame<'_>, s: &Screen<'_>, p: Panel, area: Rect) {
    let (sort, key, desc) = s.ui.sort_of(p);
    let rows = s.model.rows(p, sort, &s.ui.filter);
    let all = s.model.tables[p.index()].len();
    let focused = s.live && s.ui.focus == p;
    let name = format!(" {}{} ", if focused { "> " } else { "" }, p.title());
    let mut title = String::new();
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
    if matches!(p, Panel::TwPorts | Panel::TwRemotes)
        && let Some(all) = s.model.time_wait_sampled
    {
        // The whole host's count, which a filter's sample is not out of.
        let of = if s.only.is_empty() {
            format!(" of {all}")
        } else {
            String::new()
        };
        title.push_str(&format!("{}{of} sampled ", super::fetch::MAX_TIME_WAIT));
    }
    let sort = format!("sort: {key}{} ", if desc { " v" } else { " ^" });
    let title = titled(&name, &title, &sort, area.width.saturating_sub(2));
    let mut block = Block::bordered().title(title);
    if focused {
        block = block.border_style(Style::new().yellow().bold());
    }
    let cols = columns(p, &rows, area.width.saturating_sub(2));
    let shown = fit(&cols, area.width.saturating_sub(2));
    let header = Row::new(shown.iter().map(|&(i, _)| p.header()[i])).bold();
    let body = rows.iter().map(|r| {
        Row::new(shown.iter().map(|&(i, w)| {
            let cell = r.cells.get(i).map_or("", String::as_str);
            if cols[i].name {
                name_in(cell, w)
            } else {
                cell_in(cell, w)
            }
        }))
    });
    let widths = shown.iter().map(|&(_, w)| Constraint::Length(w));
    let table = Table::new(body, widths).header(header).block(block);
    f.render_widget(table, area);
}

/// A panel's title in `width` columns: its `name`, its `counts` and its
/// `sort`; too long, the sort goes first, then the name is cut (with a
/// `…`): the counts are what a narrow frame must not lose.
fn titled(name: &str, counts: &str, sort: &str, width: u16) -> String {
    let len = |s: &str| Line::from(s).width();
    let width = usize::from(width);
    if len(name) + len(counts) + len(sort) <= width {
        return format!("{name}{counts}{sort}");
    }
    if len(name) + len(counts) <= width {
        return format!("{name}{counts}");
    }
    let room = width.saturating_sub(len(counts) + 1).max(2);
    format!("{} {counts}", cell_in(name.trim_end(), room as u16))
}

/// Table heights of a `--once` frame: as many rows as there are, up to
/// [`ONCE_ROWS`].
fn fitted(s: &Screen<'_>, a: Panel, b: Panel) -> u16 {
    let n = |p| s.model.rows(p, 0, &s.ui.filter).len();
    n(a).max(n(b)).clamp(1, ONCE_ROWS) as u16 + 3
}

/// The height of one panel of a `--once` frame.
fn fitted_one(s: &Screen<'_>, p: Panel) -> u16 {
    fitted(s, p, p)
}

/// The width from which the CLOSE_WAIT and processes panels stand side by
/// side with every column: below it the processes panel goes under the
/// CLOSE_WAIT one, each the whole width.
const SIDE_BY_SIDE: u16 =
    // Its columns, the connection's least and CONTAINER's, six gaps and
    // two borders; the processes panel beside.
    sum(&CLOSE_WAIT_COLS) + CONNECTION_MIN + CONTAINER_MIN + 6 + 2 + PROCS_WIDTH;
/// The processes panel's width beside the CLOSE_WAIT panel: its columns,
/// five gaps and two borders.
const PROCS_WIDTH: u16 = sum(&PROCS_COLS) + 5 + 2;
// docs/top.md names the width from which the two stand side by side.
const _: () = assert!(SIDE_BY_SIDE == 151 && PROCS_WIDTH == 62);

/// The height of the middle of a `--once` frame `width` wide: the
/// CLOSE_WAIT and processes panels, beside or under each other.
fn middle_height(s: &Screen<'_>, width: u16) -> u16 {
    if width >= SIDE_BY_SIDE {
        fitted(s, Panel::CloseWait, Panel::Procs)
    } else {
        fitted_one(s, Panel::CloseWait) + fitted_one(s, Panel::Procs)
    }
}

/// The height a `--once` frame `width` columns wide needs.
pub fn once_height(s: &Screen<'_>, width: u16) -> u16 {
    header_wrapped(s, width).len() as u16
        + STATES_HEIGHT
        + middle_height(s, width)
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
    let side_by_side = area.width >= SIDE_BY_SIDE;
    let (middle, bottom, footer) = if s.live {
        (Fill(3), Fill(2), 1)
    } else {
        (
            Length(middle_height(s, area.width)),
            Length(fitted(s, Panel::TwPorts, Panel::TwRemotes)),
            0,
        )
    };
    let header = header_wrapped(s, area.width);
    let [head, top, mid, low, foot] = Layout::vertical([
        Length(header.len() as u16),
        Length(STATES_HEIGHT),
        middle,
        bottom,
        Length(footer),
    ])
    .areas(f.area());
    f.render_widget(Paragraph::new(header), head);
    let [states, dwell] = Layout::horizontal([Length(44), Fill(1)]).areas(top);
    let [cw, procs] = if side_by_side {
        Layout::horizontal([Fill(1), Length(PROCS_WIDTH)]).areas(mid)
    } else if s.live {
        Layout::vertical([Fill(3), Fill(2)]).areas(mid)
    } else {
        Layout::vertical([
            Length(fitted_one(s, Panel::CloseWait)),
            Length(fitted_one(s, Panel::Procs)),
        ])
        .areas(mid)
    };
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
    let mut term = Terminal::new(TestBackend::new(width, once_height(s, width)))?;
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
