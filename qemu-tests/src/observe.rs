//! Observed windows for the tests that assert that nothing happens: a task
//! is not restarted, adopted tasks keep their processes, a node stays
//! Ready, the overlay does not change. A fixed sleep and one look misses a
//! change that is undone before the look, or that comes a moment after it;
//! [`Hold::check`] looks at the invariant every few moments for a whole
//! window instead, fails at the first look that sees it broken and prints
//! what the last looks saw. [`wait_until_holding`] waits for a condition
//! while an invariant holds (a lost node turns unreachable while the others
//! stay Ready).
//!
//! A look answers a [`Seen`]: the invariant holds, is broken, or could not
//! be checked this time (the API did not answer), a blind look that is
//! tolerated for a bounded time only. Each call site first waits for
//! evidence that whatever could break the invariant is running (the agent
//! is up, holds its lock, reconciled once), or the window proves nothing.
//!
//! Plain std, no QEMU: the host tier's tests use it too.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What one look saw, with a summary of it for the messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The invariant holds.
    Holds(String),
    /// The invariant is broken: the check fails at once.
    Broken(String),
    /// The invariant could not be checked this time (e.g. the API did not
    /// answer).
    Blind(String),
}

/// How many looks a failure message shows.
const KEPT: usize = 20;
/// Longest summary kept per look (the whole of a broken one is shown).
const SUMMARY_MAX: usize = 400;

/// An invariant to watch over a window: [`Hold::new`], then
/// [`Hold::check`].
#[derive(Debug, Clone)]
pub struct Hold {
    what: String,
    window: Duration,
    every: Duration,
    max_blind: Duration,
}

impl Hold {
    /// Watches `what` (named in the messages) for `window`, looking every
    /// 100 ms, with no blind look allowed.
    pub fn new(what: impl Into<String>, window: Duration) -> Hold {
        Hold {
            what: what.into(),
            window,
            every: Duration::from_millis(100),
            max_blind: Duration::ZERO,
        }
    }

    /// Looks every `d` (less than a third of the window).
    pub fn every(mut self, d: Duration) -> Hold {
        self.every = d;
        self
    }

    /// Tolerates blind looks for up to `d` since the last look that saw
    /// the invariant (or since the start).
    pub fn blind_for(mut self, d: Duration) -> Hold {
        self.max_blind = d;
        self
    }

    /// Looks every `every` until `window` has passed: the last look starts
    /// at or after the window's end and sees the invariant (blind looks
    /// after the end extend the watch, within the blind allowance). Panics
    /// at the first `Broken` look, when blind longer than allowed (any blind
    /// look when no blindness is allowed), or when two looks started more
    /// than a third of the window apart (a slow look or a stalled test: the
    /// window was not watched). Prints `<what>: held Xs, N looks` and
    /// returns the number of looks.
    pub fn check(self, mut look: impl FnMut() -> Seen) -> usize {
        let max_gap = self.window / 3;
        assert!(
            self.every < max_gap || self.window.is_zero(),
            "{}: looking every {:.3}s cannot watch a window of {:.3}s (looks must be less than a third of it apart)",
            self.what,
            self.every.as_secs_f64(),
            self.window.as_secs_f64()
        );
        let start = Instant::now();
        let end = start + self.window;
        let mut looks = Looks::new(start);
        let mut previous: Option<Instant> = None;
        let mut last_seen = start;
        loop {
            let at = Instant::now();
            if let Some(p) = previous {
                let gap = at.duration_since(p);
                if gap > max_gap && !self.window.is_zero() {
                    panic!(
                        "{}: two looks started {:.3}s apart, more than a third of the {:.3}s window: the window was not watched\nlast looks:\n{}",
                        self.what,
                        gap.as_secs_f64(),
                        self.window.as_secs_f64(),
                        looks.render()
                    );
                }
            }
            previous = Some(at);
            let seen = look();
            looks.record(at, &seen);
            match &seen {
                Seen::Holds(_) => last_seen = at,
                Seen::Broken(why) => panic!(
                    "{}: broken {:.3}s into the {:.3}s window (look {}): {why}\nlast looks:\n{}",
                    self.what,
                    at.duration_since(start).as_secs_f64(),
                    self.window.as_secs_f64(),
                    looks.count,
                    looks.render()
                ),
                Seen::Blind(_) => {
                    let blind = at.duration_since(last_seen);
                    if self.max_blind.is_zero() || blind > self.max_blind {
                        panic!(
                            "{}: blind for {:.3}s {:.3}s into the {:.3}s window (at most {:.3}s allowed)\nlast looks:\n{}",
                            self.what,
                            blind.as_secs_f64(),
                            at.duration_since(start).as_secs_f64(),
                            self.window.as_secs_f64(),
                            self.max_blind.as_secs_f64(),
                            looks.render()
                        );
                    }
                }
            }
            if at >= end && matches!(seen, Seen::Holds(_)) {
                break;
            }
            let next = if at < end {
                (at + self.every).min(end)
            } else {
                at + self.every
            };
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        eprintln!(
            "{}: held {:.1}s, {} looks{}",
            self.what,
            start.elapsed().as_secs_f64(),
            looks.count,
            if looks.blind > 0 {
                format!(" ({} blind)", looks.blind)
            } else {
                String::new()
            }
        );
        looks.count
    }
}

/// Waits until `until` returns `Some` while `invariant` holds at every look,
/// and returns what `until` gave. Each round asks `until` (until it has
/// answered) and then looks at `invariant`, then sleeps `every`; blind looks
/// are tolerated, but the wait ends only on a look that sees the invariant
/// after `until` answered. Panics on a broken invariant, or after `timeout`,
/// with the last looks.
pub fn wait_until_holding<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut until: impl FnMut() -> Option<T>,
    mut invariant: impl FnMut() -> Seen,
) -> T {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut looks = Looks::new(start);
    let mut reached: Option<T> = None;
    loop {
        let at = Instant::now();
        if reached.is_none() {
            reached = until();
        }
        let seen = invariant();
        looks.record(at, &seen);
        match &seen {
            Seen::Broken(why) => panic!(
                "{what}: the invariant broke after {:.3}s (look {}), {}: {why}\nlast looks:\n{}",
                at.duration_since(start).as_secs_f64(),
                looks.count,
                if reached.is_some() {
                    "as the wait ended"
                } else {
                    "before the wait ended"
                },
                looks.render()
            ),
            Seen::Holds(_) => {
                if let Some(v) = reached.take() {
                    eprintln!(
                        "{what}: after {:.1}s, the invariant held over {} looks{}",
                        start.elapsed().as_secs_f64(),
                        looks.count,
                        if looks.blind > 0 {
                            format!(" ({} blind)", looks.blind)
                        } else {
                            String::new()
                        }
                    );
                    return v;
                }
            }
            Seen::Blind(_) => {}
        }
        if at >= deadline {
            panic!(
                "{what}: {} after {:.1}s\nlast looks:\n{}",
                if reached.is_some() {
                    "reached, but the invariant could not be checked since"
                } else {
                    "not reached"
                },
                timeout.as_secs_f64(),
                looks.render()
            );
        }
        std::thread::sleep(every);
    }
}

/// The first line where `seen` differs from `expected`, as a message; `None`
/// when the texts are equal.
pub fn first_difference(expected: &str, seen: &str) -> Option<String> {
    if expected == seen {
        return None;
    }
    let show = |l: Option<&str>| l.map_or_else(|| "the end".to_string(), |l| format!("`{l}`"));
    let (mut e, mut s) = (expected.lines(), seen.lines());
    let mut n = 1;
    loop {
        match (e.next(), s.next()) {
            (Some(a), Some(b)) if a == b => n += 1,
            (None, None) => return Some("the texts differ in their line endings".to_string()),
            (a, b) => return Some(format!("line {n}: expected {}, saw {}", show(a), show(b))),
        }
    }
}

/// The state letter of process `pid` (`R`, `S`, `D`, `Z`, ...) from
/// `/proc/<pid>/stat`; `None` when there is no such process.
pub fn process_state(pid: u32) -> Option<char> {
    stat_state(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether process `pid` runs: it exists and is not a zombie (a killed
/// child that nobody waited for yet).
pub fn alive(pid: u32) -> bool {
    process_state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}

/// The state field of a `/proc/<pid>/stat` line: `pid (comm) state ...`,
/// where comm may hold spaces and parentheses.
fn stat_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The looks so far, the last [`KEPT`] of them summarised for the messages.
struct Looks {
    start: Instant,
    kept: VecDeque<String>,
    count: usize,
    blind: usize,
}

impl Looks {
    fn new(start: Instant) -> Looks {
        Looks {
            start,
            kept: VecDeque::new(),
            count: 0,
            blind: 0,
        }
    }

    fn record(&mut self, at: Instant, seen: &Seen) {
        self.count += 1;
        let (kind, text) = match seen {
            Seen::Holds(t) => ("holds", t),
            Seen::Broken(t) => ("BROKEN", t),
            Seen::Blind(t) => {
                self.blind += 1;
                ("blind", t)
            }
        };
        if self.kept.len() == KEPT {
            self.kept.pop_front();
        }
        self.kept.push_back(format!(
            "  {:>3} +{:.3}s {kind}: {}",
            self.count,
            at.duration_since(self.start).as_secs_f64(),
            shorten(text)
        ));
    }

    fn render(&self) -> String {
        let mut out = Vec::new();
        let earlier = self.count - self.kept.len();
        if earlier > 0 {
            out.push(format!("  ({earlier} earlier look(s) not shown)"));
        }
        out.extend(self.kept.iter().cloned());
        out.join("\n")
    }
}

fn shorten(text: &str) -> String {
    if text.len() <= SUMMARY_MAX {
        return text.to_string();
    }
    let mut end = SUMMARY_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    // Long enough that a loaded two-core machine does not space two looks
    // more than a third of the window apart (which `check` refuses).
    const WINDOW: Duration = Duration::from_millis(1500);
    const EVERY: Duration = Duration::from_millis(50);

    /// The message of a caught panic.
    fn panic_message(f: impl FnOnce()) -> String {
        let err = catch_unwind(AssertUnwindSafe(f)).expect_err("the check must panic");
        err.downcast_ref::<String>()
            .cloned()
            .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    }

    #[test]
    fn a_holding_check_looks_until_the_end_and_returns_its_looks() {
        let start = Instant::now();
        let mut last = start;
        let mut n = 0;
        let looks = Hold::new("always fine", WINDOW).every(EVERY).check(|| {
            n += 1;
            last = Instant::now();
            Seen::Holds(format!("look {n}"))
        });
        assert_eq!(looks, n);
        // At most one look per `every`, plus the one at the end.
        assert!((2..=31).contains(&looks), "{looks} looks");
        assert!(last.duration_since(start) >= WINDOW);
    }

    #[test]
    fn a_broken_look_fails_at_once_with_the_last_looks() {
        let mut n = 0;
        let msg = panic_message(|| {
            Hold::new("the task is not restarted", WINDOW)
                .every(EVERY)
                .check(|| {
                    n += 1;
                    if n < 3 {
                        Seen::Holds(format!("restarts 0 at look {n}"))
                    } else {
                        Seen::Broken("restarts 1".to_string())
                    }
                });
        });
        assert_eq!(n, 3, "no look after the broken one");
        assert!(msg.contains("the task is not restarted: broken"), "{msg}");
        assert!(msg.contains("(look 3): restarts 1"), "{msg}");
        assert!(msg.contains("holds: restarts 0 at look 2"), "{msg}");
    }

    #[test]
    fn blind_looks_are_tolerated_within_the_allowance_only() {
        let mut n = 0;
        let looks = Hold::new("mostly seen", WINDOW)
            .every(EVERY)
            .blind_for(Duration::from_millis(300))
            .check(|| {
                n += 1;
                if n == 3 || n == 4 {
                    Seen::Blind("no answer".to_string())
                } else {
                    Seen::Holds("fine".to_string())
                }
            });
        assert!(looks >= 5, "{looks}");

        let msg = panic_message(|| {
            Hold::new("never seen again", WINDOW)
                .every(EVERY)
                .blind_for(Duration::from_millis(200))
                .check(|| Seen::Blind("no answer".to_string()));
        });
        assert!(msg.contains("never seen again: blind for"), "{msg}");

        let msg = panic_message(|| {
            Hold::new("no blindness allowed", WINDOW)
                .every(EVERY)
                .check(|| Seen::Blind("no answer".to_string()));
        });
        assert!(msg.contains("at most 0.000s allowed"), "{msg}");
    }

    #[test]
    fn a_blind_last_look_extends_the_watch() {
        let start = Instant::now();
        let mut last = start;
        Hold::new("seen at the end", WINDOW)
            .every(EVERY)
            .blind_for(Duration::from_millis(300))
            .check(|| {
                last = Instant::now();
                if last.duration_since(start) >= WINDOW
                    && last.duration_since(start) < WINDOW + Duration::from_millis(25)
                {
                    Seen::Blind("no answer".to_string())
                } else {
                    Seen::Holds("fine".to_string())
                }
            });
        assert!(last.duration_since(start) >= WINDOW + Duration::from_millis(25));
    }

    #[test]
    fn looks_too_far_apart_fail() {
        let mut n = 0;
        let msg = panic_message(|| {
            Hold::new("stalled", WINDOW).every(EVERY).check(|| {
                n += 1;
                if n == 2 {
                    std::thread::sleep(WINDOW / 2);
                }
                Seen::Holds("fine".to_string())
            });
        });
        assert!(msg.contains("the window was not watched"), "{msg}");
        let msg = panic_message(|| {
            Hold::new("coarse", WINDOW)
                .every(WINDOW / 2)
                .check(|| Seen::Holds("fine".to_string()));
        });
        assert!(msg.contains("cannot watch a window"), "{msg}");
    }

    #[test]
    fn waiting_while_holding() {
        let mut n = 0;
        let got = wait_until_holding(
            "the third round",
            WINDOW,
            EVERY,
            || {
                n += 1;
                (n >= 3).then_some(n)
            },
            || Seen::Holds("fine".to_string()),
        );
        assert_eq!(got, 3);

        // Reached on a blind look: one more look must see the invariant.
        let mut looks = 0;
        let got = wait_until_holding(
            "at once",
            WINDOW,
            EVERY,
            || Some("done"),
            || {
                looks += 1;
                if looks < 3 {
                    Seen::Blind("no answer".to_string())
                } else {
                    Seen::Holds("fine".to_string())
                }
            },
        );
        assert_eq!((got, looks), ("done", 3));

        let mut n = 0;
        let msg = panic_message(|| {
            wait_until_holding(
                "never broken",
                WINDOW,
                EVERY,
                || None::<()>,
                || {
                    n += 1;
                    if n == 2 {
                        Seen::Broken("public-1 unreachable".to_string())
                    } else {
                        Seen::Holds("public-1 ready".to_string())
                    }
                },
            );
        });
        assert!(
            msg.contains("before the wait ended: public-1 unreachable"),
            "{msg}"
        );

        let msg = panic_message(|| {
            wait_until_holding(
                "never",
                Duration::from_millis(30),
                EVERY,
                || None::<()>,
                || Seen::Holds("fine".to_string()),
            );
        });
        assert!(msg.contains("never: not reached after"), "{msg}");
    }

    #[test]
    fn first_difference_names_the_line() {
        assert_eq!(first_difference("a\nb\n", "a\nb\n"), None);
        assert_eq!(
            first_difference("a\nb\nc", "a\nx\nc").as_deref(),
            Some("line 2: expected `b`, saw `x`")
        );
        assert_eq!(
            first_difference("a\nb", "a").as_deref(),
            Some("line 2: expected `b`, saw the end")
        );
        assert_eq!(
            first_difference("a\n", "a").as_deref(),
            Some("the texts differ in their line endings")
        );
    }

    #[test]
    fn process_states() {
        assert_eq!(stat_state("42 (a) b) c) Z 1 42"), Some('Z'));
        assert_eq!(stat_state("7 (strata) S 1 7 7 0"), Some('S'));
        assert_eq!(stat_state("garbage"), None);
        assert!(alive(std::process::id()));
        // Above the kernel's largest pid_max (2^22).
        assert!(!alive(u32::MAX));
        assert_eq!(process_state(u32::MAX), None);
    }
}
