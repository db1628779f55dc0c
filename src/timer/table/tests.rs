use super::*;
use crate::timer::{deadline_after, next_deadline, Schedule};
use std::collections::BTreeMap;
use std::time::Duration;

const MS: Tick = 1_000_000;

fn exit() -> Action<()> {
    Action::Exit
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Fires (removes) every timer due at `now`, in order.
fn drain(timers: &mut Timers<()>, now: Tick) -> Vec<TimerId> {
    timers.begin_pass(now);
    let mut out = Vec::new();
    while let Some(id) = timers.pop_due() {
        timers.remove(id);
        out.push(id);
    }
    timers.end_pass();
    out
}

#[test]
fn an_entry_is_40_bytes_and_an_id_8() {
    assert_eq!(std::mem::size_of::<Entry<()>>(), 40);
    assert_eq!(std::mem::size_of::<TimerId>(), 8);
}

#[test]
fn equal_deadlines_pop_in_insertion_order() {
    for deadline in [5, 3 * MS, 500 * MS, 1 << 40] {
        let mut timers = Timers::new();
        let ids: Vec<_> = (0..100)
            .map(|_| timers.insert(deadline, true, exit()))
            .collect();
        assert_eq!(drain(&mut timers, deadline), ids);
    }
}

#[test]
fn equal_deadlines_stay_in_order_when_scheduled_from_far_and_near() {
    // The first is scheduled while its deadline is seconds away (an upper level), the second
    // once the cursor is close: first in, first out all the same.
    let mut timers = Timers::new();
    let deadline = 10_000 * MS + 123;
    let far = timers.insert(deadline, true, exit());
    let filler = timers.insert(9_999 * MS, true, exit());
    assert_eq!(drain(&mut timers, 9_999 * MS), [filler]);
    // The loop's time reaches the deadline's slot: the far timer moves to the heap.
    assert_eq!(timers.next_deadline_mut(deadline - 1000), Some(deadline));
    let near = timers.insert(deadline, true, exit());
    assert_eq!(drain(&mut timers, deadline), [far, near]);
}

#[test]
fn timers_scheduled_during_a_pass_wait_for_the_next_pass() {
    let mut timers = Timers::new();
    timers.insert(0, true, exit());
    timers.begin_pass(10);
    let first = timers.pop_due().unwrap();
    timers.reschedule(first, 0);
    let added = timers.insert(10, true, exit());
    assert_eq!(timers.pop_due(), None);
    timers.end_pass();
    assert_eq!(timers.next_deadline(), Some(0));
    assert_eq!(drain(&mut timers, 10), [first, added]);
}

#[test]
fn cancelled_ids_stay_invalid_after_slot_reuse() {
    let mut timers = Timers::new();
    let old = timers.insert(1, true, exit());
    timers.remove(old);
    let new = timers.insert(1, true, exit());
    assert_eq!(new.key, old.key, "the slot is reused");
    assert!(!timers.remove(old));
    assert!(timers.contains(new));
}

#[test]
fn a_slot_whose_generations_are_spent_is_retired() {
    let mut timers = Timers::new();
    let id = timers.insert(1, true, exit());
    timers.entries[id.key as usize].gen = u32::MAX - 1;
    let last = TimerId {
        key: id.key,
        gen: u32::MAX - 1,
    };
    assert!(timers.remove(last));
    let next = timers.insert(1, true, exit());
    assert_ne!(next.key, id.key, "never handed out again");
    assert!(!timers.contains(last));
}

#[test]
fn add_cancel_churn_keeps_memory_bounded() {
    let mut timers = Timers::new();
    let keep: Vec<_> = (0..10).map(|i| timers.insert(i, true, exit())).collect();
    timers.next_deadline_mut(0);
    for i in 0..1_000_000u64 {
        let id = timers.insert(i % 1000, true, exit());
        timers.remove(id);
        let id = timers.insert(i * MS, true, exit());
        timers.remove(id);
    }
    assert_eq!(timers.len(), keep.len());
    let (entries, near) = timers.capacities();
    assert!(
        entries <= 16 && near <= 16,
        "entries {entries}, near heap {near}"
    );
}

#[test]
fn a_far_timer_leaves_nearer_timers_in_the_wheel() {
    // An hourly timer is the only one when the loop polls; timers added then for the next
    // 100 ms go to the wheel, not to a heap that would hold them all until the hour is up.
    let mut timers = Timers::new();
    let hour = 3_600_000 * MS;
    let hourly = timers.insert(hour, true, exit());
    assert_eq!(
        timers.next_deadline_mut(0),
        Some(hour),
        "a lone far timer: exact"
    );
    let soon: Vec<_> = (0..10_000u64)
        .map(|i| timers.insert(MS + i * 10_000, true, exit()))
        .collect();
    let (_, near) = timers.capacities();
    assert!(near <= 16, "near heap {near}");
    assert_eq!(timers.next_deadline_mut(0), Some(MS));
    assert_eq!(drain(&mut timers, 101 * MS), soon);
    assert_eq!(timers.next_deadline_mut(101 * MS), Some(hour));
    assert_eq!(drain(&mut timers, hour), [hourly]);
}

#[test]
fn a_crowded_far_slot_wakes_the_loop_early_at_most_once_a_level() {
    let mut timers = Timers::new();
    let due = 5_000 * MS + 7;
    let ids: Vec<_> = (0..20)
        .map(|i| timers.insert(due + i, true, exit()))
        .collect();
    let (mut now, mut wakeups) = (0, 0);
    loop {
        let at = timers.next_deadline_mut(now).unwrap();
        assert!(now < at && at <= due, "{now} < {at} <= {due}");
        assert_eq!(
            timers.next_deadline(),
            Some(at),
            "the poll waits for what was armed"
        );
        (now, wakeups) = (at, wakeups + 1);
        if at == due {
            break;
        }
        assert_eq!(drain(&mut timers, now), []);
    }
    assert!(wakeups <= 7, "{wakeups} wake-ups");
    assert_eq!(drain(&mut timers, due + 19), ids);
}

#[test]
fn never_deadline_is_not_a_wakeup() {
    let mut timers = Timers::new();
    let id = timers.insert(deadline_after(7, Duration::MAX), true, exit());
    assert_eq!(timers.next_deadline(), None);
    assert_eq!(timers.next_deadline_mut(7), None);
    assert_eq!(drain(&mut timers, NEVER - 1), []);
    assert!(timers.reschedule(id, NEVER - 1));
    assert_eq!(timers.next_deadline_mut(7), Some(NEVER - 1));
    assert_eq!(drain(&mut timers, NEVER - 1), [id]);
}

#[test]
fn fixed_rate_skips_missed_periods_and_keeps_phase() {
    let p = Duration::from_nanos(100);
    assert_eq!(next_deadline(Schedule::FixedRate, p, 1000, 1050, 0), 1100);
    assert_eq!(next_deadline(Schedule::FixedRate, p, 1000, 1570, 0), 1600);
    assert_eq!(next_deadline(Schedule::FixedRate, p, 1000, 1600, 0), 1700);
    assert_eq!(next_deadline(Schedule::FixedDelay, p, 1000, 1570, 0), 1670);
    assert_eq!(
        next_deadline(Schedule::FixedRate, Duration::MAX, 1000, 1570, 0),
        NEVER
    );
    assert_eq!(
        next_deadline(Schedule::FixedRate, Duration::ZERO, 1000, 1570, 0),
        1570
    );
}

#[test]
fn fixed_rate_late_only_by_the_slack_keeps_every_tick() {
    // 25 ms period, 40 ms slack: the wake-up at 80 ms finds the 50 ms tick; the 75 ms tick
    // is next, not skipped.
    let p = Duration::from_millis(25);
    assert_eq!(
        next_deadline(Schedule::FixedRate, p, 50 * MS, 80 * MS, 40 * MS),
        75 * MS
    );
    // Late beyond the slack: a stall, which skips.
    assert_eq!(
        next_deadline(Schedule::FixedRate, p, 50 * MS, 130 * MS, 40 * MS),
        150 * MS
    );
}

/// The reference: live timers by id, with their deadline and the sequence number of their
/// last scheduling.
#[derive(Default)]
struct Model {
    live: BTreeMap<TimerId, (Tick, u64)>,
    seq: u64,
}

impl Model {
    fn schedule(&mut self, id: TimerId, deadline: Tick) {
        self.seq += 1;
        self.live.insert(id, (deadline, self.seq));
    }

    /// The earliest live timer among `candidates`, by (deadline, seq).
    fn earliest(&self, candidates: impl Iterator<Item = TimerId>) -> Option<(TimerId, Tick)> {
        candidates
            .map(|id| (self.live[&id], id))
            .min()
            .map(|((deadline, _), id)| (id, deadline))
    }

    fn next_deadline(&self) -> Option<Tick> {
        self.live
            .values()
            .map(|&(d, _)| d)
            .filter(|&d| d != NEVER)
            .min()
    }
}

impl PartialOrd for TimerId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TimerId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.key, self.gen).cmp(&(other.key, other.gen))
    }
}

/// A delay from a mix that reaches every level of the wheel, and past `now` now and then.
fn delay(rng: &mut u64) -> Tick {
    let r = xorshift(rng);
    match r % 16 {
        0 => 0,
        1..=4 => r >> 40 & 0x3_ffff, // up to 262 µs: near heap, level 0
        5..=8 => r >> 30 & 0x3fff_ffff, // up to 1 s: level 0 and 1
        9..=10 => r >> 20 & 0xff_ffff_ffff, // up to 18 min
        11 => r >> 8 & ((1 << 52) - 1), // up to 52 days
        12 => r >> 1,                // up to 292 years
        13 => NEVER,
        _ => r >> 50, // up to 16 µs
    }
}

/// Random adds, cancels, resets and passes against the reference: each timer fires exactly
/// once, never before its deadline, in deadline order with ties first in first out; a timer
/// scheduled during a pass for the pass's time waits for the next one; cancel and reset
/// answer as the reference does; the next deadline is exact.
#[test]
fn random_operations_match_a_simple_reference() {
    for seed in 1..=24u64 {
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut timers = Timers::new();
        let mut model = Model::default();
        let mut dead: Vec<TimerId> = Vec::new();
        let mut now: Tick = xorshift(&mut rng) >> (20 + seed % 40);
        let pick = |rng: &mut u64, model: &Model, dead: &[TimerId]| -> Option<TimerId> {
            let r = xorshift(rng);
            if r % 5 == 0 && !dead.is_empty() {
                return Some(dead[(r >> 8) as usize % dead.len()]);
            }
            let n = model.live.len();
            (n > 0).then(|| *model.live.keys().nth((r >> 8) as usize % n).unwrap())
        };
        let schedule_at = |rng: &mut u64, now: Tick| {
            if xorshift(rng) % 50 == 0 {
                now.saturating_sub(delay(rng)) // already due
            } else {
                now.saturating_add(delay(rng))
            }
        };
        for step in 0..4000 {
            match xorshift(&mut rng) % 10 {
                0..=3 => {
                    let deadline = schedule_at(&mut rng, now);
                    let id = timers.insert(deadline, true, exit());
                    assert!(!model.live.contains_key(&id), "ids are never reused");
                    model.schedule(id, deadline);
                }
                4 => {
                    if let Some(id) = pick(&mut rng, &model, &dead) {
                        let expected = model.live.remove(&id).is_some();
                        assert_eq!(timers.remove(id), expected, "cancel answer");
                        dead.push(id);
                    }
                }
                5 => {
                    if let Some(id) = pick(&mut rng, &model, &dead) {
                        let deadline = schedule_at(&mut rng, now);
                        let expected = model.live.contains_key(&id);
                        assert_eq!(timers.reschedule(id, deadline), expected, "reset answer");
                        if expected {
                            model.schedule(id, deadline);
                        }
                    }
                }
                6 => {
                    let (peek, exact) = (timers.next_deadline(), model.next_deadline());
                    assert_eq!(peek.is_some(), exact.is_some(), "peek");
                    assert!(peek <= exact, "peek {peek:?} after {exact:?}");
                    // Exact, or the start of a crowded wheel slot beyond the horizon.
                    let (next, exact) = (timers.next_deadline_mut(now), model.next_deadline());
                    let early = next.zip(exact).is_some_and(|(next, exact)| {
                        now.saturating_add(HORIZON) < next && next <= exact
                    });
                    assert!(next == exact || early, "next {next:?}, exact {exact:?}");
                    if let Some(id) = pick(&mut rng, &model, &dead) {
                        let expected = model.live.get(&id).map(|&(d, _)| d);
                        assert_eq!(timers.deadline(id), expected);
                    }
                }
                _ => {
                    let advance = match xorshift(&mut rng) % 4 {
                        0 => 0,
                        1 => delay(&mut rng) % (300 * MS),
                        2 => model.next_deadline().map_or(0, |d| d.saturating_sub(now)),
                        _ => delay(&mut rng),
                    };
                    now = now.saturating_add(advance).min(NEVER - 1);
                    pass(&mut timers, &mut model, &mut dead, &mut rng, now);
                }
            }
            assert_eq!(timers.len(), model.live.len(), "seed {seed} step {step}");
        }
        now = NEVER - 1;
        // Callbacks reschedule now and then: a few passes empty it.
        for _ in 0..100 {
            pass(&mut timers, &mut model, &mut dead, &mut rng, now);
        }
        assert!(model.live.values().all(|&(d, _)| d == NEVER));
        assert_eq!(timers.len(), model.live.len());
    }
}

/// One firing pass at `now`, checked against the model, with cancels, resets and adds from
/// the "callbacks".
fn pass(
    timers: &mut Timers<()>,
    model: &mut Model,
    dead: &mut Vec<TimerId>,
    rng: &mut u64,
    now: Tick,
) {
    let mut due: Vec<TimerId> = (model.live.iter())
        .filter(|(_, &(d, _))| d <= now)
        .map(|(&id, _)| id)
        .collect();
    timers.begin_pass(now);
    loop {
        let expected = model.earliest(due.iter().copied());
        let popped = timers.pop_due();
        assert_eq!(popped, expected.map(|(id, _)| id), "pass at {now}: order");
        let Some((id, deadline)) = expected else {
            break;
        };
        assert!(deadline <= now, "never early");
        due.retain(|&d| d != id);
        match xorshift(rng) % 6 {
            0 => {
                // A repeating timer: rescheduled, maybe for the pass's own time.
                let next = now.saturating_add(delay(rng) % (2 * MS)).min(NEVER - 1);
                let next = if xorshift(rng) % 3 == 0 { now } else { next };
                assert!(timers.is_firing(id));
                assert!(timers.reschedule(id, next));
                model.schedule(id, next);
            }
            1 => {
                // Cancels another timer, maybe one due later in this pass.
                if let Some(&victim) = model
                    .live
                    .keys()
                    .nth(xorshift(rng) as usize % model.live.len())
                {
                    assert!(timers.remove(victim));
                    model.live.remove(&victim);
                    due.retain(|&d| d != victim);
                    dead.push(victim);
                }
                if timers.remove(id) {
                    model.live.remove(&id);
                    dead.push(id);
                }
            }
            2 => {
                // Adds a zero-delay timer: not in this pass.
                let added = timers.insert(now, true, exit());
                model.schedule(added, now);
                assert!(timers.remove(id));
                model.live.remove(&id);
                dead.push(id);
            }
            _ => {
                assert!(timers.remove(id));
                assert!(!timers.remove(id), "exactly once");
                model.live.remove(&id);
                dead.push(id);
            }
        }
    }
    timers.end_pass();
    if dead.len() > 10_000 {
        dead.drain(..5000);
    }
}

#[test]
fn the_remembered_far_deadline_follows_every_change_of_the_wheel() {
    // With only far timers, the answer is remembered between polls; adding, cancelling and
    // moving timers, and the loop reaching them, must each be seen at the next ask.
    let mut timers = Timers::new();
    let a = timers.insert(60_000 * MS, true, exit());
    assert_eq!(timers.next_deadline_mut(0), Some(60_000 * MS));
    assert_eq!(timers.next_deadline_mut(MS), Some(60_000 * MS));
    let b = timers.insert(30_000 * MS + 5, true, exit());
    assert_eq!(timers.next_deadline_mut(MS), Some(30_000 * MS + 5));
    let c = timers.insert(30_000 * MS + 3, true, exit());
    assert_eq!(timers.next_deadline(), Some(30_000 * MS + 3), "same slot");
    assert!(timers.remove(c));
    assert_eq!(timers.next_deadline(), Some(30_000 * MS + 5));
    assert!(timers.reschedule(b, 90_000 * MS));
    assert_eq!(timers.next_deadline_mut(MS), Some(60_000 * MS));
    assert!(timers.remove(a));
    assert_eq!(timers.next_deadline_mut(MS), Some(90_000 * MS));
    assert_eq!(drain(&mut timers, 89_999 * MS), []);
    assert_eq!(timers.next_deadline_mut(89_999 * MS), Some(90_000 * MS));
    assert_eq!(drain(&mut timers, 90_000 * MS), [b]);
    assert_eq!(timers.next_deadline_mut(90_000 * MS), None);
    let d = timers.insert(100_000 * MS, true, exit());
    assert_eq!(timers.next_deadline_mut(90_000 * MS), Some(100_000 * MS));
    assert_eq!(drain(&mut timers, 100_000 * MS), [d]);
}
