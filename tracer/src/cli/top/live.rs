//! The live view's terminal: raw mode and the alternate screen for as long
//! as `tracer top` runs, given back on every way out (quit, error, panic:
//! a `Restore` guard and a panic hook; SIGTERM, SIGINT and SIGHUP: a flag
//! the loop reads; a terminal hung up: the loop sees it before asking for
//! a key), and the loop that draws samples as they come and answers keys
//! at once.
use std::{
    io::{self, Stdout},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::TryRecvError,
    },
    time::Duration,
};

use anyhow::Context as _;
use ratatui::{
    Terminal,
    backend::CrosstermBackend,
    crossterm::{
        cursor,
        event::{self, Event, KeyEventKind},
        execute,
        terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
    },
};

use super::{
    fetch::{self, Cmd, Source},
    keys::{Action, Ui},
    model::{Model, Sample},
    view::{self, Screen},
};

/// How long the loop waits for a key before looking for a new sample.
const TICK: Duration = Duration::from_millis(100);

/// Give the terminal back: leave the alternate screen, show the cursor,
/// leave raw mode. Safe to call twice.
fn restore() {
    let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
    let _ = terminal::disable_raw_mode();
}

/// What the terminal has for the loop.
#[derive(Debug, PartialEq, Eq)]
enum Input {
    /// Bytes to read: a key, or part of one.
    Ready,
    /// Nothing within the wait (or a signal cut it short).
    Quiet,
    /// Hung up: the terminal is gone (a dropped SSH session, a killed
    /// tmux). crossterm's reader would spin on its end of file forever,
    /// deaf to signals, so it is never asked then.
    Gone,
}

/// The terminal crossterm reads keys from: standard input when it is one,
/// else `/dev/tty`, which crossterm opens then (`tracer top </dev/null`,
/// `kubectl exec -t` without `-i`). Watching anything else would see a
/// `/dev/null` always ready, or a closed pipe hung up.
enum Keys {
    Stdin,
    Tty(std::fs::File),
}

impl Keys {
    fn open() -> anyhow::Result<Keys> {
        if std::io::IsTerminal::is_terminal(&io::stdin()) {
            return Ok(Keys::Stdin);
        }
        std::fs::File::open("/dev/tty")
            .map(Keys::Tty)
            .context("opening /dev/tty to read keys (standard input is not a terminal)")
    }

    fn fd(&self) -> libc::c_int {
        use std::os::fd::AsRawFd as _;
        match self {
            Keys::Stdin => libc::STDIN_FILENO,
            Keys::Tty(f) => f.as_raw_fd(),
        }
    }
}

/// Wait up to `timeout` for the terminal `keys` come from.
fn wait_input(keys: &Keys, timeout: Duration) -> Input {
    let mut p = libc::pollfd {
        fd: keys.fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: poll(2) on one pollfd we own.
    let n = unsafe { libc::poll(&raw mut p, 1, ms) };
    if n > 0 && p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        Input::Gone
    } else if n > 0 {
        Input::Ready
    } else {
        Input::Quiet
    }
}

/// Set by SIGTERM, SIGINT or SIGHUP: the loop ends at its next turn.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// A signal that would end the process ends the loop instead, so the
/// terminal is given back (in raw mode Ctrl-C is a key, not SIGINT).
fn catch_signals() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Restores the terminal when dropped, however the loop ends.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        restore();
    }
}

/// Take the terminal; a panic from here on restores it before its message
/// is printed.
fn take_terminal() -> anyhow::Result<(Terminal<CrosstermBackend<Stdout>>, Restore)> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
    terminal::enable_raw_mode().context("putting the terminal in raw mode")?;
    let guard = Restore;
    execute!(io::stdout(), EnterAlternateScreen, cursor::Hide)
        .context("switching to the alternate screen")?;
    let term =
        Terminal::new(CrosstermBackend::new(io::stdout())).context("opening the terminal")?;
    Ok((term, guard))
}

/// Run the live view from `first` until a quit key or a signal; exit
/// status 0.
pub fn run(source: Source, first: Sample, interval: Duration) -> anyhow::Result<i32> {
    let url = source.shown_url();
    let only = source.describe();
    let (cmds, samples) = fetch::spawn(source, interval);
    let mut ui = Ui::new(interval);
    let mut model = Model::build(&first, None);
    let mut prev = first.summary;
    let mut error: Option<String> = None;
    catch_signals();
    let keys = Keys::open()?;
    if let Ok((0, _) | (_, 0)) = terminal::size() {
        anyhow::bail!(
            "the terminal says it has no size (a pseudo-terminal whose size was never set, as \
             under script): set one with stty cols 120 rows 40, or use --once"
        );
    }
    let (mut term, _restore) = take_terminal()?;
    while !STOP.load(Ordering::Relaxed) {
        loop {
            match samples.try_recv() {
                Ok(Ok(s)) => {
                    model = Model::build(&s, Some(&prev));
                    prev = s.summary;
                    error = None;
                }
                Ok(Err(e)) => error = Some(e),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    error = Some("the thread asking the agent stopped".into());
                    break;
                }
            }
        }
        let screen = Screen {
            model: &model,
            ui: &ui,
            url: &url,
            only: &only,
            error: error.as_deref(),
            live: true,
        };
        term.draw(|f| view::draw(f, &screen))
            .context("drawing on the terminal")?;
        match wait_input(&keys, TICK) {
            Input::Gone => break,
            Input::Quiet => continue,
            Input::Ready => {}
        }
        // Every key those bytes hold (crossterm parses a typed or pasted
        // run of them at once), asking again only while the terminal is
        // still there.
        while wait_input(&keys, Duration::ZERO) != Input::Gone
            && event::poll(Duration::ZERO).context("reading the keyboard")?
        {
            let Event::Key(k) = event::read().context("reading the keyboard")? else {
                continue;
            };
            if k.kind != KeyEventKind::Press {
                continue;
            }
            let cmd = match ui.key(k) {
                Action::Quit => return Ok(0),
                Action::Redraw => None,
                Action::Interval(d) => Some(Cmd::Interval(d)),
                Action::Pause(p) => Some(Cmd::Pause(p)),
                Action::Refresh => Some(Cmd::Refresh),
            };
            if let Some(c) = cmd {
                // A stopped thread shows as an error on the next turn.
                let _ = cmds.send(c);
            }
        }
    }
    Ok(0)
}
