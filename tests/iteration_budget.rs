//! A chain of completions, each callback queuing the next request that the page cache answers
//! at once, cannot hold the loop for a whole pass: due timers get their turn in between.

use std::time::Duration;

use aioloop::{AioFile, EventBase};

mod common;

#[derive(Default)]
struct Chain {
    reads: usize,
    reads_when_the_timer_fired: Option<usize>,
}

const READS: usize = 50_000;

fn next(base: &mut EventBase<Chain>, file: AioFile) {
    let again = file.clone();
    base.read_at(&file, 0, vec![0; 512], move |base, chain, _, n| {
        n.unwrap();
        chain.reads += 1;
        if chain.reads < READS {
            next(base, again);
        }
    })
    .unwrap();
}

#[test]
fn a_chain_of_cached_reads_lets_a_due_timer_run_before_it_ends() {
    let (path, _) = common::data_file("budget-chain", 4096);
    std::fs::read(&path).unwrap();
    let file = AioFile::open(&path, false).unwrap();
    let mut base = EventBase::<Chain>::new().unwrap();
    base.add_timer(Duration::from_millis(1), |_, chain, _| {
        chain.reads_when_the_timer_fired = Some(chain.reads)
    });
    next(&mut base, file);
    base.set_exit_when_empty(true);
    let mut chain = Chain::default();
    base.run(&mut chain).unwrap();
    assert_eq!(chain.reads, READS);
    let at = chain.reads_when_the_timer_fired.unwrap();
    assert!(
        at < READS,
        "the timer waited for the whole chain ({at} reads)"
    );
    assert!(base.metrics().aio_cached_reads >= READS as u64 - 1);
}

#[derive(Default)]
struct Owed {
    done: usize,
    done_when_the_timer_fired: Option<usize>,
}

const OWED: usize = 2_000;

fn timer_and_run(mut base: EventBase<Owed>) -> Owed {
    base.add_timer(Duration::ZERO, |_, owed, _| {
        owed.done_when_the_timer_fired = Some(owed.done)
    });
    base.set_exit_when_empty(true);
    let mut owed = Owed::default();
    base.run(&mut owed).unwrap();
    owed
}

#[test]
fn many_cached_reads_owed_at_once_let_a_due_timer_run_before_they_all_end() {
    // 1,000 connections each with a read done is a pass's worth of owed work: it must not
    // hold the loop as one block while timers and events wait.
    let (path, _) = common::data_file("budget-owed-reads", 4096);
    std::fs::read(&path).unwrap();
    let file = AioFile::open(&path, false).unwrap();
    let mut base = EventBase::<Owed>::new().unwrap();
    for _ in 0..OWED {
        base.read_at(&file, 0, vec![0; 512], |_, owed, _, n| {
            n.unwrap();
            owed.done += 1;
        })
        .unwrap();
    }
    let owed = timer_and_run(base);
    assert_eq!(owed.done, OWED);
    let at = owed.done_when_the_timer_fired.unwrap();
    assert!(at < OWED, "the timer waited for every owed read ({at})");
}
