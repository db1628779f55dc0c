//! Cross-thread posts and wake-ups.

use std::time::Duration;

use aioloop::EventBase;

#[test]
fn posts_from_four_threads_all_arrive_in_per_thread_order() {
    const THREADS: usize = 4;
    const POSTS: usize = 10_000;
    let mut base = EventBase::<Vec<Vec<usize>>>::new().unwrap();
    let remote = base.remote().unwrap();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let remote = remote.clone();
            std::thread::spawn(move || {
                for i in 0..POSTS {
                    remote
                        .post(move |base, seen: &mut Vec<Vec<usize>>| {
                            seen[t].push(i);
                            if seen.iter().all(|s| s.len() == POSTS) {
                                base.exit();
                            }
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    let mut seen = vec![Vec::new(); THREADS];
    base.exit_after(Duration::from_secs(60));
    base.run(&mut seen).unwrap();
    for w in workers {
        w.join().unwrap();
    }
    for (t, s) in seen.iter().enumerate() {
        assert_eq!(s.len(), POSTS, "thread {t} lost posts");
        assert!(
            s.windows(2).all(|w| w[0] < w[1]),
            "thread {t} posts out of order"
        );
    }
}

#[test]
fn remote_exit_stops_a_blocked_run() {
    let mut base = EventBase::<()>::new().unwrap();
    let remote = base.remote().unwrap();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        remote.exit().unwrap();
    });
    base.run(&mut ()).unwrap();
    stopper.join().unwrap();
}

#[test]
fn queued_posts_keep_an_exit_when_empty_loop_alive() {
    let mut base = EventBase::<u32>::new().unwrap();
    let remote = base.remote().unwrap();
    remote.post(|_, n| *n += 1).unwrap();
    remote.post(|_, n| *n += 1).unwrap();
    base.set_exit_when_empty(true);
    assert!(base.is_alive());
    let mut n = 0;
    base.run(&mut n).unwrap();
    assert_eq!(n, 2);
    assert!(
        !base.is_alive(),
        "a remote handle alone keeps nothing alive"
    );
}

#[test]
fn post_after_the_base_is_dropped_fails_with_broken_pipe() {
    let mut base = EventBase::<()>::new().unwrap();
    let remote = base.remote().unwrap();
    drop(base);
    let err = remote.post(|_, _| {}).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    assert_eq!(
        remote.wake().unwrap_err().kind(),
        std::io::ErrorKind::BrokenPipe
    );
}

#[test]
fn posts_queued_during_a_drain_run_in_the_next_iteration() {
    let mut base = EventBase::<Vec<u64>>::new().unwrap();
    let remote = base.remote().unwrap();
    let again = remote.clone();
    remote
        .post(move |base, log| {
            log.push(base.metrics().iterations);
            again
                .post(|base, log| log.push(base.metrics().iterations))
                .unwrap();
        })
        .unwrap();
    let mut log = Vec::new();
    base.run_once(&mut log, Some(Duration::from_secs(1)))
        .unwrap();
    base.run_once(&mut log, Some(Duration::from_secs(1)))
        .unwrap();
    assert_eq!(log, [0, 1]);
}

#[test]
fn remote_handle_is_send_and_clone() {
    fn assert_send_clone<T: Send + Sync + Clone>() {}
    assert_send_clone::<aioloop::Remote<std::rc::Rc<u8>>>();
}
