//! `muster top`: a full-screen dashboard of the roster, the live reservations
//! and the latest events, refreshed on every event and every `--interval`.
//!
//! Each panel is built by a pure function of the data (`header`, `roster_table`,
//! `reservations_table`, `event_log`), so it can be drawn into a test buffer.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures_util::StreamExt;
use muster_core::api::{ReservationView, Reservations, Roster, Status};
use muster_core::duration::parse_duration;
use muster_core::{Millis, Session};
use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table};
use ratatui::Frame;
use tokio::sync::mpsc;

use crate::client::{decode, Client, ClientError};
use crate::commands::{reserve, roster, tail};
use crate::context::Context;
use crate::output::{ago, clean, now_millis, short_id, truncate};
use crate::sse::{SseEvent, SseParser};

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Refresh the roster and reservations at least this often
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DUR")]
    pub interval: Duration,
}

/// How many event lines are kept for the log panel.
const LOG_KEEP: usize = 500;
/// Sessions fetched for the roster panel: more than any terminal shows
/// (the panel has at most half the screen). A team daemon's whole roster,
/// 10,000 sessions, is over 3 MB, fetched again after every event.
const ROSTER_ROWS: usize = 200;
/// Pause between attempts to reopen the event stream.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);
const UNREACHABLE: &str = "daemon unreachable, retrying…";

/// What the dashboard shows; `draw` is a function of this alone.
#[derive(Debug, Default)]
pub struct View {
    pub url: String,
    pub status: Option<Status>,
    /// The first sessions of the roster (at most [`ROSTER_ROWS`]).
    pub sessions: Vec<Session>,
    /// Sessions on the whole roster.
    pub sessions_total: usize,
    pub reservations: Vec<ReservationView>,
    /// Latest event lines, oldest first.
    pub events: VecDeque<String>,
    /// Why the data may be stale (daemon unreachable, an error answer).
    pub problem: Option<String>,
    pub now: Millis,
}

impl View {
    fn push_event(&mut self, line: String) {
        self.events.push_back(line);
        while self.events.len() > LOG_KEEP {
            self.events.pop_front();
        }
    }
}

pub async fn run(ctx: &Context, args: &TopArgs) -> Result<i32, ClientError> {
    if !std::io::stdout().is_terminal() {
        eprintln!("error: muster top needs a terminal; use `muster tail` or `muster roster --json` in scripts");
        return Ok(2);
    }
    let client = ctx.client()?;
    let streaming = ctx.streaming_client()?;
    let interval = args.interval.max(Duration::from_millis(100));

    let guard = TerminalGuard::enter()
        .map_err(|e| ClientError::local(format!("cannot set up the terminal: {e}")))?;
    let backend = ratatui::backend::CrosstermBackend::new(std::io::stdout());
    let mut term = ratatui::Terminal::new(backend)
        .map_err(|e| ClientError::local(format!("cannot set up the terminal: {e}")))?;

    let stop = Arc::new(AtomicBool::new(false));
    let (key_tx, mut keys) = mpsc::unbounded_channel();
    spawn_key_reader(key_tx, stop.clone());
    let (note_tx, mut notes) = mpsc::unbounded_channel();
    let stream_task = tokio::spawn(follow_events(streaming, note_tx));

    let mut view = View {
        url: ctx.url.clone(),
        ..View::default()
    };
    let mut stream_up = false;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        view.now = now_millis();
        if let Err(e) = term.draw(|frame| draw(frame, &view)) {
            break Err(ClientError::local(format!("cannot draw: {e}")));
        }
        let refresh = tokio::select! {
            key = keys.recv() => match key {
                Some(Key::Quit) | None => break Ok(0),
                Some(Key::Redraw) => false,
            },
            note = notes.recv() => {
                let mut refresh = false;
                let mut next = note;
                while let Some(note) = next {
                    refresh |= apply(&mut view, &mut stream_up, note);
                    next = notes.try_recv().ok();
                }
                refresh
            },
            _ = tick.tick() => true,
        };
        if refresh {
            tokio::select! {
                fetched = fetch(&client) => settle(&mut view, stream_up, fetched),
                key = keys.recv() => if matches!(key, Some(Key::Quit) | None) { break Ok(0) },
            }
        }
    };
    stop.store(true, Ordering::SeqCst);
    stream_task.abort();
    drop(term);
    drop(guard);
    result
}

/// Folds one stream note into the view; true when the data should be fetched again.
fn apply(view: &mut View, stream_up: &mut bool, note: Note) -> bool {
    match note {
        Note::Connected => {
            *stream_up = true;
            true
        }
        Note::Event(event) => {
            // `tail::render` reports non-JSON data on stderr, which would scribble on the screen.
            if serde_json::from_str::<serde_json::Value>(&event.data).is_ok() {
                if let Some(line) = tail::render(&event, false) {
                    view.push_event(line);
                }
            }
            true
        }
        Note::Lost => {
            *stream_up = false;
            view.problem = Some(UNREACHABLE.to_string());
            false
        }
    }
}

/// Takes a fetch's outcome into the view; a failure keeps the last data on screen.
fn settle(view: &mut View, stream_up: bool, fetched: Result<Snapshot, ClientError>) {
    match fetched {
        Ok(snapshot) => {
            view.status = Some(snapshot.status);
            view.sessions = snapshot.sessions;
            view.sessions_total = snapshot.sessions_total;
            view.reservations = snapshot.reservations;
            view.problem = if stream_up {
                None
            } else {
                Some(UNREACHABLE.to_string())
            };
        }
        Err(ClientError::Unreachable { .. }) => view.problem = Some(UNREACHABLE.to_string()),
        Err(e) => view.problem = Some(clean(&e.to_string(), false)),
    }
}

struct Snapshot {
    status: Status,
    sessions: Vec<Session>,
    sessions_total: usize,
    reservations: Vec<ReservationView>,
}

async fn fetch(client: &Client) -> Result<Snapshot, ClientError> {
    let status: Status = decode(client.get("/api/v1/status", &[]).await?, "status")?;
    let page = [("limit", ROSTER_ROWS.to_string())];
    let roster: Roster = decode(client.get("/api/v1/roster", &page).await?, "roster")?;
    let list: Reservations = decode(
        client.get("/api/v1/reservations", &[]).await?,
        "reservations",
    )?;
    Ok(Snapshot {
        status,
        // A daemon from before paging says no total; its roster is whole.
        sessions_total: roster.total.max(roster.sessions.len()),
        sessions: roster.sessions,
        reservations: list.reservations,
    })
}

enum Note {
    Connected,
    Event(SseEvent),
    Lost,
}

/// Follows the event stream for as long as the dashboard runs, reopening it
/// whenever the daemon goes away.
async fn follow_events(client: Client, tx: mpsc::UnboundedSender<Note>) {
    loop {
        if let Ok(response) = client.open_stream("/api/v1/events").await {
            if tx.send(Note::Connected).is_err() {
                return;
            }
            let mut stream = response.bytes_stream();
            let mut parser = SseParser::new();
            while let Some(Ok(bytes)) = stream.next().await {
                for event in parser.feed(&bytes) {
                    if tx.send(Note::Event(event)).is_err() {
                        return;
                    }
                }
            }
        }
        if tx.send(Note::Lost).is_err() {
            return;
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

enum Key {
    Quit,
    Redraw,
}

/// Reads the keyboard on its own thread (crossterm's reads block) until `stop`.
fn spawn_key_reader(tx: mpsc::UnboundedSender<Key>, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match event::poll(Duration::from_millis(100)) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(_) => {
                    let _ = tx.send(Key::Quit);
                    return;
                }
            }
            let key = match event::read() {
                Ok(TermEvent::Key(k)) if k.kind != KeyEventKind::Release => match k.code {
                    KeyCode::Char('q') | KeyCode::Esc => Key::Quit,
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::Quit,
                    _ => continue,
                },
                Ok(TermEvent::Resize(..)) => Key::Redraw,
                Ok(_) => continue,
                Err(_) => Key::Quit,
            };
            if tx.send(key).is_err() {
                return;
            }
        }
    });
}

/// Raw mode and the alternate screen, undone in `Drop` and by a panic hook,
/// so the shell is usable again however `top` ends.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> std::io::Result<Self> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
        terminal::enable_raw_mode()?;
        let guard = TerminalGuard;
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        )?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn restore_terminal() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        terminal::LeaveAlternateScreen,
        cursor::Show
    );
}

/// The whole screen: header, roster, reservations, event log.
pub fn draw(frame: &mut Frame, view: &View) {
    let reserved_rows = (view.reservations.len().max(1) as u16 + 3).min(10);
    let roster_rows = (view.sessions.len().max(1) as u16 + 3).min(frame.area().height / 2);
    let [top, sessions, reservations, log] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(roster_rows),
        Constraint::Length(reserved_rows),
        Constraint::Min(3),
    ])
    .areas(frame.area());
    frame.render_widget(
        header(view.status.as_ref(), &view.url, view.problem.as_deref()),
        top,
    );
    frame.render_widget(
        roster_table(&view.sessions, view.sessions_total, view.now),
        sessions,
    );
    frame.render_widget(
        reservations_table(&view.reservations, view.now),
        reservations,
    );
    frame.render_widget(event_log(&view.events, log), log);
}

/// One line: where, which version, how many sessions, unread deliveries, or what is wrong.
pub fn header(status: Option<&Status>, url: &str, problem: Option<&str>) -> Paragraph<'static> {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut spans = vec![
        Span::styled("muster top", bold),
        Span::raw(format!("  {}", clean(url, false))),
    ];
    if let Some(s) = status {
        spans.push(Span::raw(format!(
            "  v{}  sessions {} live / {} known  {} unread",
            clean(&s.version, false),
            s.sessions_present,
            s.sessions_known,
            s.unread_deliveries
        )));
    }
    match problem {
        Some(problem) => spans.push(Span::styled(
            format!("  {problem}"),
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        )),
        None if status.is_none() => spans.push(Span::raw("  connecting…")),
        None => {}
    }
    spans.push(Span::styled(
        "  (q to quit)",
        Style::default().fg(Color::DarkGray),
    ));
    Paragraph::new(Line::from(spans))
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_string()
    } else {
        clean(text, false)
    }
}

fn panel(title: String) -> Block<'static> {
    Block::default().borders(Borders::ALL).title(title)
}

fn header_row(cells: &[&'static str]) -> Row<'static> {
    Row::new(cells.iter().map(|c| Cell::from(*c)))
        .style(Style::default().add_modifier(Modifier::BOLD))
}

/// The roster panel: one row per session fetched, the first to arrive of
/// the `total` on the roster.
pub fn roster_table(sessions: &[Session], total: usize, now: Millis) -> Table<'static> {
    let rows: Vec<Row> = sessions
        .iter()
        .map(|s| {
            Row::new(vec![
                clean(&s.nickname, false),
                short_id(&s.id),
                or_dash(&s.harness),
                clean(&roster::place(s), false),
                clean(&roster::activity(s), false),
                or_dash(&s.status),
                roster::link_state(s).to_string(),
                ago(s.last_seen_at, now),
            ])
        })
        .collect();
    let title = match sessions.len() {
        0 => " roster: nobody on the roster ".to_string(),
        n if n >= total => format!(" roster: {n} on the roster "),
        n => format!(" roster: the first {n} of {total} on the roster "),
    };
    Table::new(
        rows,
        [
            Constraint::Length(18),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(24),
            Constraint::Length(20),
            Constraint::Fill(1),
            Constraint::Length(11),
            Constraint::Length(9),
        ],
    )
    .header(header_row(&[
        "NICKNAME",
        "ID",
        "HARNESS",
        "PROJECT@BRANCH",
        "ACTIVITY",
        "STATUS",
        "LINK",
        "SEEN",
    ]))
    .block(panel(title))
}

/// The reservations panel: path, holder, kind, time left.
pub fn reservations_table(list: &[ReservationView], now: Millis) -> Table<'static> {
    let rows: Vec<Row> = list
        .iter()
        .map(|r| {
            let res = &r.reservation;
            Row::new(vec![
                truncate(&clean(&res.pattern, false), 80),
                format!(
                    "{} ({})",
                    clean(&r.nickname, false),
                    short_id(&res.session_id)
                ),
                if res.exclusive { "exclusive" } else { "shared" }.to_string(),
                reserve::time_left(res.expires_at, now),
            ])
        })
        .collect();
    let title = match list.len() {
        0 => " reservations: none ".to_string(),
        n => format!(" reservations: {n} "),
    };
    Table::new(
        rows,
        [
            Constraint::Fill(1),
            Constraint::Length(30),
            Constraint::Length(10),
            Constraint::Length(10),
        ],
    )
    .header(header_row(&["PATH", "HOLDER", "KIND", "LEFT"]))
    .block(panel(title))
}

/// The event panel: the newest lines that fit in `area`, oldest at the top.
pub fn event_log(events: &VecDeque<String>, area: Rect) -> Paragraph<'static> {
    let fits = area.height.saturating_sub(2) as usize;
    let skip = events.len().saturating_sub(fits);
    let lines: Vec<Line> = events
        .iter()
        .skip(skip)
        .map(|l| Line::from(l.clone()))
        .collect();
    Paragraph::new(lines).block(panel(" events ".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::{Activity, LinkKind, Reservation};
    use ratatui::backend::TestBackend;
    use ratatui::widgets::Widget;
    use ratatui::Terminal;

    /// Draws a widget into a fresh test buffer; the screen's rows as text.
    fn screen(width: u16, height: u16, widget: impl Widget) -> Vec<String> {
        let mut term = Terminal::new(TestBackend::new(width, height)).unwrap();
        term.draw(|f| f.render_widget(widget, f.area())).unwrap();
        rows(&term)
    }

    fn rows(term: &Terminal<TestBackend>) -> Vec<String> {
        let buffer = term.backend().buffer();
        let width = buffer.area.width as usize;
        buffer
            .content()
            .chunks(width)
            .map(|row| row.iter().map(|c| c.symbol()).collect::<String>())
            .collect()
    }

    fn has(screen: &[String], text: &str) -> bool {
        screen.iter().any(|row| row.contains(text))
    }

    fn heron(now: Millis) -> Session {
        let mut s = Session::new("1a2b3c4d-aaaa", "calm-heron", 0);
        s.harness = "claude".into();
        s.project = "muster".into();
        s.branch = "main".into();
        s.activity = Activity::Busy;
        s.last_tool = Some("Edit".into());
        s.status = "refactoring db".into();
        s.link = LinkKind::Link;
        s.link_up = true;
        s.can_push = true;
        s.last_seen_at = now - 4_000;
        s
    }

    fn status() -> Status {
        Status {
            version: "0.1.0".into(),
            api_version: 1,
            started_at: 0,
            store: "sqlite".into(),
            data_dir: "/d".into(),
            operator: "alice".into(),
            sessions_present: 2,
            sessions_known: 5,
            unread_deliveries: 3,
            stale_after_ms: 60_000,
            hook_backstop_ms: 3_600_000,
            sweep_interval_ms: 3_000,
            retention_ms: 86_400_000,
        }
    }

    #[test]
    fn roster_panel_shows_each_column() {
        // Proves the roster panel shows nickname, short id, harness, place, activity with tool, status, link and seen ago.
        let now = 100_000;
        let screen = screen(140, 5, roster_table(&[heron(now)], 1, now));
        for part in [
            "NICKNAME",
            "calm-heron",
            "1a2b3c4d",
            "claude",
            "muster@main",
            "busy (Edit)",
            "refactoring db",
            "linked+push",
            "4s ago",
        ] {
            assert!(has(&screen, part), "{part} missing in {screen:#?}");
        }
        assert!(!has(&screen, "1a2b3c4d-"), "ids are shortened");
    }

    #[test]
    fn roster_panel_cleans_peer_text_and_says_when_empty() {
        // Proves terminal escapes in a peer's status never reach the screen, and an empty roster is labelled.
        let mut s = heron(0);
        s.status = "\x1b]0;pwned\x07".into();
        let screen = screen(140, 5, roster_table(&[s], 1, 0));
        assert!(!screen.concat().contains('\x1b'));
        assert!(has(
            &self::screen(140, 4, roster_table(&[], 0, 0)),
            "nobody on the roster"
        ));
    }

    #[test]
    fn roster_panel_says_when_it_shows_part_of_the_roster() {
        // Proves a page of a large roster is labelled with how many of how many it shows.
        let shown = screen(140, 5, roster_table(&[heron(0)], 10_000, 0));
        assert!(
            has(&shown, "the first 1 of 10000 on the roster"),
            "{shown:#?}"
        );
        let whole = screen(140, 5, roster_table(&[heron(0)], 1, 0));
        assert!(has(&whole, "roster: 1 on the roster"), "{whole:#?}");
    }

    #[test]
    fn reservations_panel_shows_path_holder_kind_and_time_left() {
        // Proves a reservation is listed with its path, holder nickname and short id, kind and time left.
        let r = Reservation {
            id: "r1".into(),
            session_id: "1a2b3c4d-xyz".into(),
            root: "/repo".into(),
            pattern: "src/db/**".into(),
            exclusive: true,
            reason: "migration".into(),
            created_at: 0,
            expires_at: 125_000,
        };
        let view = ReservationView {
            reservation: r,
            nickname: "calm-heron".into(),
        };
        let screen = screen(100, 5, reservations_table(&[view], 0));
        for part in [
            "src/db/**",
            "calm-heron (1a2b3c4d)",
            "exclusive",
            "2m05s",
            "reservations: 1",
        ] {
            assert!(has(&screen, part), "{part} missing in {screen:#?}");
        }
    }

    #[test]
    fn event_log_keeps_the_newest_lines_that_fit() {
        // Proves the event panel shows tail's line for an event and scrolls so the newest lines stay visible.
        let event = SseEvent {
            event: "sweep".into(),
            data: r#"{"seq":1,"at":3723000,"kind":"sweep","data":{"swept":2}}"#.into(),
        };
        let mut events: VecDeque<String> = (0..10).map(|i| format!("old line {i}")).collect();
        events.push_back(tail::render(&event, false).unwrap());
        let area = Rect::new(0, 0, 80, 5);
        let screen = screen(80, 5, event_log(&events, area));
        assert!(has(&screen, "01:02:03Z sweep"), "{screen:#?}");
        assert!(has(&screen, "old line 9") && has(&screen, "old line 8"));
        assert!(
            !has(&screen, "old line 7"),
            "only three lines fit: {screen:#?}"
        );
    }

    #[test]
    fn header_shows_counts_or_the_problem() {
        // Proves the header names url, version, live/known sessions and unread deliveries, and says when the daemon is gone.
        let screen = screen(
            140,
            1,
            header(Some(&status()), "http://127.0.0.1:7420", None),
        );
        for part in [
            "http://127.0.0.1:7420",
            "v0.1.0",
            "sessions 2 live / 5 known",
            "3 unread",
        ] {
            assert!(has(&screen, part), "{part} missing in {screen:#?}");
        }
        let screen = self::screen(
            140,
            1,
            header(Some(&status()), "http://x", Some(UNREACHABLE)),
        );
        assert!(has(&screen, "daemon unreachable, retrying…"), "{screen:#?}");
    }

    #[test]
    fn whole_screen_draws_every_panel() {
        // Proves the full layout puts header, roster, reservations and events on one screen.
        let now = 100_000;
        let mut view = View {
            url: "http://u".into(),
            status: Some(status()),
            now,
            ..View::default()
        };
        view.sessions.push(heron(now));
        view.sessions_total = 1;
        view.push_event("12:00:00Z message.sent     hello".into());
        let mut term = Terminal::new(TestBackend::new(160, 30)).unwrap();
        term.draw(|f| draw(f, &view)).unwrap();
        let screen = rows(&term);
        for part in [
            "muster top",
            "calm-heron",
            "reservations: none",
            "message.sent     hello",
        ] {
            assert!(has(&screen, part), "{part} missing in {screen:#?}");
        }
    }

    #[test]
    fn lost_stream_and_failed_fetch_report_unreachable() {
        // Proves a dropped event stream or an unreachable daemon shows the retry notice, and recovery clears it.
        let mut view = View::default();
        let mut up = true;
        assert!(!apply(&mut view, &mut up, Note::Lost));
        assert_eq!(view.problem.as_deref(), Some(UNREACHABLE));
        assert!(apply(&mut view, &mut up, Note::Connected));
        settle(
            &mut view,
            up,
            Err(ClientError::Unreachable {
                url: "u".into(),
                reason: "refused".into(),
            }),
        );
        assert_eq!(view.problem.as_deref(), Some(UNREACHABLE));
        let snapshot = Snapshot {
            status: status(),
            sessions: vec![heron(0)],
            sessions_total: 1,
            reservations: vec![],
        };
        settle(&mut view, up, Ok(snapshot));
        assert_eq!(
            (view.problem, view.sessions.len(), view.sessions_total),
            (None, 1, 1)
        );
    }
}
