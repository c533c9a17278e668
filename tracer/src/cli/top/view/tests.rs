//! Frames drawn on ratatui's `TestBackend`, read back as text.
use std::time::Duration;

use ratatui::{Terminal, backend::TestBackend};

use super::*;
use crate::cli::top::model::tests::{sample, summary};

fn model() -> Model {
    let first = summary(100, &[("established", 10), ("close_wait", 1)]);
    let s = sample(
        102,
        &[("established", 16), ("close_wait", 3), ("listen", 2)],
    );
    Model::build(&s, Some(&first))
}

fn frame(m: &Model, ui: &Ui, error: Option<&str>, size: (u16, u16)) -> String {
    frame_only(m, ui, error, "", size)
}

/// [`frame`] under the filters `only` describes.
fn frame_only(m: &Model, ui: &Ui, error: Option<&str>, only: &str, (w, h): (u16, u16)) -> String {
    let screen = Screen {
        model: m,
        ui,
        url: "http://127.0.0.1:9077",
        only,
        error,
        live: true,
    };
    let mut term = Terminal::new(TestBackend::new(w, h)).expect("terminal");
    term.draw(|f| draw(f, &screen)).expect("draw");
    buffer_text(term.backend().buffer())
}

fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in\n{text}"))
}

#[test]
fn connects_that_found_no_local_port_are_named_among_the_failed() {
    let mut m = model();
    let h = m.handshakes.as_mut().expect("handshakes");
    (h.failed, h.no_local_port) = (40, 39);
    let ui = Ui::new(Duration::from_secs(2));
    let text = frame(&m, &ui, None, (160, 50));
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|l| l.ends_with("40 failed (+0.0/s), 39 with no free local port")),
        "{text}"
    );
}

#[test]
fn a_live_frame_shows_every_panel() {
    let ui = Ui::new(Duration::from_secs(2));
    let text = frame(&model(), &ui, None, (160, 50));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 50);
    assert_eq!(
        lines[0],
        "tracer top  http://127.0.0.1:9077  at 2026-11-30T05:42:20Z  tracked 42  every 2s"
    );
    assert_eq!(
        lines[1],
        "leaks 3 (3 close_wait)  handshakes: 1025 established (+10.0/s), 1 failed (+0.0/s)"
    );
    assert_eq!(lines[2].trim_end(), "", "no forecast, no error");
    assert!(
        lines[3].starts_with("┌ > Sockets by state sort: state ^ "),
        "{}",
        lines[3]
    );
    assert!(line_with(&text, "│established").starts_with("│established    16       +3.0"));
    assert!(line_with(&text, "│close_wait ").starts_with("│close_wait     3        +1.0"));
    assert!(text.contains("│time_wait      9        60.0s     60.2s     61.0s     61.5s"));
    assert!(text.contains("┌ Oldest CLOSE_WAIT (3) sort: age v "));
    let oldest = line_with(&text, "12m05s");
    assert!(
        oldest.starts_with(
            "│12m05s   4242    python3         7    127.0.0.1:8080 -> 127.0.0.1:50001"
        ),
        "{oldest}"
    );
    assert!(
        oldest.contains("││4242    python3         2          2     12m05s   -"),
        "{oldest}"
    );
    // The last column: python3's oldest was not read up to EOF.
    assert!(text.contains("CONTAINER EOF READ│"), "{text}");
    assert!(oldest.contains(" -         no      ││"), "{oldest}");
    assert!(
        line_with(&text, "│90.0s")
            .contains("││77      java            1          1     90.0s    +3.0")
    );
    assert!(text.contains("┌ TIME_WAIT by local port (4) sort: count v "));
    assert!(line_with(&text, "│8080 ").starts_with("│8080     2 "));
    assert!(line_with(&text, "10.0.0.1:443").contains("│10.0.0.1:443 "));
    assert_eq!(lines[49], HINTS);
}

#[test]
fn sampled_time_wait_panels_say_how_much_was_read() {
    let mut s = sample(102, &[("established", 16), ("time_wait", 45_123)]);
    s.time_wait_sampled = true;
    let m = Model::build(&s, None);
    let text = frame(&m, &Ui::new(Duration::from_secs(2)), None, (160, 50));
    for panel in ["TIME_WAIT by local port", "TIME_WAIT by remote"] {
        assert!(
            line_with(&text, panel).contains(") 20000 of 45123 sampled "),
            "{text}"
        );
    }
    // Under a filter the sample is not out of the whole host's count.
    let ui = Ui::new(Duration::from_secs(2));
    let text = frame_only(&m, &ui, None, "--port 80", (160, 50));
    let title = line_with(&text, "TIME_WAIT by remote");
    assert!(title.contains(") 20000 sampled "), "{title}");
}

#[test]
fn focus_sort_and_filter_show_in_the_titles() {
    let mut ui = Ui::new(Duration::from_secs(2));
    ui.focus = Panel::Procs;
    ui.sort[Panel::Procs.index()] = 2;
    ui.filter = "java".into();
    ui.paused = true;
    let text = frame(&model(), &ui, None, (160, 50));
    assert!(
        text.lines()
            .next()
            .expect("header")
            .ends_with("every 2s  PAUSED  filter: java")
    );
    assert!(
        text.contains("┌ Sockets by state (0 of 13) sort: state ^"),
        "{text}"
    );
    assert!(
        text.contains("┌ Oldest CLOSE_WAIT (1 of 3) sort: age v"),
        "{text}"
    );
    assert!(
        text.contains("┌ > Leaking processes (1 of 2) sort: pid ^"),
        "{text}"
    );
    assert!(!text.contains("python3"), "{text}");
    ui.prompt = Some("pyth".into());
    let text = frame(&model(), &ui, None, (160, 50));
    assert!(
        text.lines()
            .last()
            .expect("footer")
            .starts_with("filter: pyth_  (Enter applies, Esc cancels)")
    );
}

#[test]
fn an_error_keeps_the_last_data_and_help_draws_over_it() {
    let mut ui = Ui::new(Duration::from_secs(2));
    let err = "no agent answers at http://127.0.0.1:9077: start `tracer run` or give --agent";
    let text = frame(&model(), &ui, Some(err), (160, 50));
    assert_eq!(
        text.lines().nth(2),
        Some(format!("agent not answering, showing the last data: {err}").as_str())
    );
    assert!(text.contains("127.0.0.1:8080 -> 127.0.0.1:50001"));
    ui.help = true;
    let text = frame(&model(), &ui, None, (160, 50));
    assert!(text.contains("Keys of tracer top"));
    assert!(text.contains(HELP[3]), "{text}");
}

#[test]
fn small_terminals_do_not_break_the_frame() {
    let mut ui = Ui::new(Duration::from_secs(2));
    ui.help = true;
    for size in [(80, 24), (40, 10), (1, 1)] {
        let text = frame(&model(), &ui, Some("x"), size);
        assert_eq!(text.lines().count(), size.1 as usize);
    }
}

#[test]
fn a_once_frame_fits_its_rows_and_has_no_footer() {
    let m = model();
    let ui = Ui::new(Duration::from_secs(2));
    let screen = Screen {
        model: &m,
        ui: &ui,
        url: "http://127.0.0.1:9077",
        only: "--port 8080",
        error: None,
        live: false,
    };
    // Narrower than the CLOSE_WAIT and processes panels side by side: one
    // under the other.
    let narrow = text(&screen, 120).expect("text");
    assert_eq!(narrow.lines().count(), 3 + 16 + 6 + 5 + 7, "{narrow}");
    let text = text(&screen, 160).expect("text");
    // Header 3, states 16, leaks 3 + 3 rows, TIME_WAIT 4 + 3 rows.
    assert_eq!(text.lines().count(), 3 + 16 + 6 + 7);
    assert_eq!(once_height(&screen, 160), 32);
    assert!(
        text.starts_with(
            "tracer top  http://127.0.0.1:9077  at 2026-11-30T05:42:20Z  tracked 42\n"
        )
    );
    // The command line's filters: what the counts are of.
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|l| l.contains(" (only --port 8080: leaks, TIME_WAIT)")),
        "{text}"
    );
    assert!(!text.contains("┌ > "), "no focus in a batch frame");
    assert!(!text.contains(HINTS));
    assert!(text.lines().last().expect("last").starts_with("└"));
}

#[test]
fn a_namespaces_name_widens_the_container_column_but_not_past_the_connection() {
    let frame_with = |name: &str| {
        let mut s = sample(100, &[("close_wait", 3)]);
        s.leaks.agent_netns = Some(1);
        s.leaks.netns_names.insert(2, name.into());
        for f in s.leaks.leaks.iter_mut().flat_map(|g| &mut g.sockets) {
            f.netns = 2;
        }
        let ui = Ui::new(Duration::from_secs(2));
        line_with(
            &frame(&Model::build(&s, None), &ui, None, (160, 50)),
            "12m05s",
        )
        .to_owned()
    };
    // Wider than the header: shown whole, the connection too.
    let oldest = frame_with("tr-web-4242");
    assert!(
        oldest.contains("127.0.0.1:8080 -> 127.0.0.1:50001 "),
        "{oldest}"
    );
    assert!(oldest.contains(" ns:tr-web-4242 no "), "{oldest}");
    // Wider than the panel leaves: cut, with a mark that says so, keeping
    // its end; the connection stays whole.
    let oldest = frame_with("a-name-far-too-long-for-the-panel");
    assert!(
        oldest.contains("127.0.0.1:8080 -> 127.0.0.1:50001 ns:…r-the-panel no "),
        "{oldest}"
    );
}

/// A panel too short for its rows says how many it shows: the rest are
/// reached by sorting or filtering, not hidden without a word.
#[test]
fn a_panel_too_short_for_its_rows_says_how_many_it_shows() {
    let ui = Ui::new(Duration::from_secs(2));
    let text = frame(&model(), &ui, None, (160, 28));
    let title = line_with(&text, "Oldest CLOSE_WAIT");
    let shown = title
        .split("(3, ")
        .nth(1)
        .and_then(|t| t.split(" shown)").next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no count shown in {title:?}\n{text}"));
    assert!(shown < 3, "{title}");
    let drawn = text
        .lines()
        .filter(|l| l.contains(" -> 127.0.0.1:500"))
        .count();
    assert_eq!(drawn, shown, "{text}");
    // Tall enough: no count.
    let text = frame(&model(), &ui, None, (160, 50));
    assert!(
        line_with(&text, "Oldest CLOSE_WAIT").contains("(3) "),
        "{text}"
    );
}

/// CLOSE_WAIT sockets younger than the agent's threshold are in the states
/// panel and not in the CLOSE_WAIT one: its empty title says why.
#[test]
fn an_empty_close_wait_panel_says_when_sockets_are_flagged() {
    use crate::cli::top::model::tests::sample;
    let mut s = sample(102, &[("close_wait", 24)]);
    s.leaks = crate::leaks::Report::build(
        crate::leaks::Source::Agent,
        None,
        0,
        Some(&crate::leaks::Thresholds::default()),
        std::iter::empty(),
        Vec::new(),
        |_, _, _| None,
    );
    let m = Model::build(&s, None);
    let ui = Ui::new(Duration::from_secs(2));
    let text = frame(&m, &ui, None, (160, 50));
    assert!(
        line_with(&text, "Oldest CLOSE_WAIT").contains("(0; flagged after 60.0s) "),
        "{text}"
    );
    assert!(
        line_with(&text, "Leaking processes").contains("(0) "),
        "{text}"
    );
}

#[test]
fn a_terminal_too_small_says_so_instead_of_panels() {
    let ui = Ui::new(Duration::from_secs(2));
    let text = frame(&model(), &ui, None, (40, 10));
    assert!(
        text.starts_with("terminal too small (40x10): tracer top\nneeds 60x16; q quits"),
        "{text}"
    );
    assert!(!text.contains("Sockets by state"), "{text}");
    let fits = frame(&model(), &ui, None, MIN_SIZE);
    assert!(fits.contains("Sockets by state"), "{fits}");
}

/// The forecast that runs out soonest has the header's third line.
#[test]
fn the_soonest_forecast_is_in_the_header() {
    use crate::forecast::{FdForecast, FdUsage};
    let first = summary(100, &[("established", 10)]);
    let mut s = sample(102, &[("established", 16), ("close_wait", 3)]);
    let usage = |open| FdUsage {
        open,
        limit: Some(1024),
    };
    s.leaks.forecasts.fd = vec![
        FdForecast::new(7, "slow", 3, usage(100), Some(1.0)),
        FdForecast::new(8, "fast", 3, usage(1000), Some(60.0)),
    ];
    let ui = Ui::new(Duration::from_secs(2));
    let text = frame(&Model::build(&s, Some(&first)), &ui, None, (160, 50));
    let third = text.lines().nth(2).expect("line 3");
    assert!(
        third.starts_with(
            "forecast: PID 8 fast: 1000 of 1024 fds, 3 in CLOSE_WAIT, +60.0/min: runs out in ~24s"
        ),
        "{text}"
    );
}

/// Namespaces the agent cannot follow: the header says their leaks are
/// missing, unless a forecast or an error needs the line.
#[test]
fn namespaces_not_followed_are_said_in_the_header() {
    let first = summary(100, &[("established", 10)]);
    let mut s = sample(102, &[("established", 16)]);
    s.leaks.unfollowed_netns = 3;
    let ui = Ui::new(Duration::from_secs(2));
    let text = frame(&Model::build(&s, Some(&first)), &ui, None, (160, 50));
    let third = text.lines().nth(2).expect("line 3");
    assert!(
        third.starts_with(
            "3 network namespace(s) not followed (the agent's log says why): their leaks are not \
             shown"
        ),
        "{text}"
    );
    s.leaks.unfollowed_netns = 0;
    let text = frame(&Model::build(&s, Some(&first)), &ui, None, (160, 50));
    assert!(!text.contains("not followed"), "{text}");
}

/// An 80-column terminal, the default: no number is cut (a column that
/// does not fit goes whole, the header says which are shown), a cut text
/// says so, and the forecast's end goes on the next line.
#[test]
fn a_narrow_frame_cuts_no_number() {
    let mut s = sample(102, &[("established", 115_542), ("close_wait", 3)]);
    s.leaks.agent_netns = Some(1);
    let first = summary(100, &[("established", 115_000), ("close_wait", 1)]);
    let m = Model::build(&s, Some(&first));
    let ui = Ui::new(Duration::from_secs(2));
    let screen = Screen {
        model: &m,
        ui: &ui,
        url: "http://127.0.0.1:9077",
        only: "",
        error: None,
        live: false,
    };
    let text = text(&screen, 80).expect("text");
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    // The counts whole, in both top panels.
    assert!(
        line_with(&text, "│established").contains(" 115542 "),
        "{text}"
    );
    // The dwell panel keeps STATE, P99 and MAX: the others go whole.
    let dwell = line_with(&text, "STATE ")
        .rsplit('│')
        .nth(1)
        .unwrap_or("")
        .to_owned();
    assert!(dwell.contains("P99") && dwell.contains("MAX"), "{text}");
    assert!(!dwell.contains("P50"), "{text}");
    // Every CLOSE_WAIT row keeps its age, pid, comm and connection.
    let oldest = line_with(&text, "12m05s");
    assert!(
        oldest.contains(" 4242 ") && oldest.contains("python3"),
        "{oldest}"
    );
    assert!(oldest.contains("127.0.0.1:8080 -> "), "{oldest}");
}

/// A title too long for its panel keeps its counts: the sort goes first,
/// then the name is cut with a mark.
#[test]
fn a_narrow_title_keeps_its_counts() {
    let name = " TIME_WAIT by local port ";
    let (counts, sort) = ("(26, 20 shown) ", "sort: count v ");
    assert_eq!(
        titled(name, counts, sort, 60),
        " TIME_WAIT by local port (26, 20 shown) sort: count v "
    );
    assert_eq!(
        titled(name, counts, sort, 40),
        " TIME_WAIT by local port (26, 20 shown) "
    );
    let t = titled(name, counts, sort, 26);
    assert!(t.ends_with("… (26, 20 shown) "), "{t}");
    assert!(Line::from(t.as_str()).width() <= 26, "{t}");
}

/// Two containers of one deployment differ at the end of their names:
/// cut, a name keeps its end, after dropping its runtime.
#[test]
fn a_container_name_cut_keeps_its_end() {
    assert_eq!(name_in("podman:walk9-c1", 20), "podman:walk9-c1");
    assert_eq!(name_in("podman:walk9-c1", 10), "walk9-c1");
    assert_eq!(name_in("podman:walk9-c1", 6), "…k9-c1");
    assert_eq!(name_in("containerd:shop/cart-5d9/app", 12), "…art-5d9/app");
    assert_eq!(name_in("host", 4), "host");
    // A namespace's name keeps its mark, whole or cut.
    assert_eq!(name_in("ns:tr-nsleak-675", 16), "ns:tr-nsleak-675");
    assert_eq!(name_in("ns:tr-nsleak-675", 14), "ns:…nsleak-675");
}
