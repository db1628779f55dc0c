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
