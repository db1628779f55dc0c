//! Kernel AIO on real files on the project's file system (ext4 here; never tmpfs).

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;

use std::rc::Rc;
use std::time::Duration;

use aioloop::{AioFile, AioOptions, AlignedBuf, EventBase, IoBuf};

mod common;
use common::data_file;

/// Queues `count` reads of `size` bytes at consecutive offsets of `file`, each checking that
/// it got exactly its own bytes of `data` and counting itself in the state.
fn queue_checked_reads(
    base: &mut EventBase<usize>,
    file: &AioFile,
    data: &[u8],
    count: usize,
    size: usize,
) {
    for i in 0..count {
        let expected = data[i * size..][..size].to_vec();
        let buf = AlignedBuf::new(size, 4096).unwrap();
        base.read_at(file, (i * size) as u64, buf, move |_, n, buf, r| {
            assert_eq!(r.unwrap(), size);
            assert!(
                buf[..] == expected[..],
                "a completion reached the wrong request"
            );
            *n += 1;
        })
        .unwrap();
    }
}

fn run_to_completion<S>(base: &mut EventBase<S>, state: &mut S) {
    base.set_exit_when_empty(true);
    let guard = base.exit_after(Duration::from_secs(60));
    base.run(state).unwrap();
    base.cancel_timer(guard);
}

#[test]
fn every_operation_round_trips() {
    let (path, _) = data_file("round-trip", 0);
    let file = AioFile::new(
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap(),
    )
    .unwrap();
    type Log = Vec<String>;
    let mut base = EventBase::<Log>::new().unwrap();
    let f = file.clone();
    base.write_at(&file, 0, b"hello, ".to_vec(), move |base, log, buf, n| {
        log.push(format!("write {}", n.unwrap()));
        assert_eq!(buf, b"hello, ");
        let f2 = f.clone();
        base.writev_at(
            &f,
            7,
            vec![b"vectored ".to_vec(), b"world".to_vec()],
            move |base, log, bufs, n| {
                log.push(format!("writev {} {}", bufs.len(), n.unwrap()));
                let f3 = f2.clone();
                base.fsync(&f2, move |base, log, r| {
                    r.unwrap();
                    log.push("fsync".into());
                    let f4 = f3.clone();
                    base.fdatasync(&f3, move |base, log, r| {
                        r.unwrap();
                        log.push("fdatasync".into());
                        let f5 = f4.clone();
                        base.read_at(&f4, 0, vec![0; 64], move |base, log, buf, n| {
                            let n = n.unwrap();
                            log.push(String::from_utf8(buf[..n].to_vec()).unwrap());
                            base.readv_at(
                                &f5,
                                7,
                                vec![vec![0; 9], vec![0; 5]],
                                |_, log, bufs, n| {
                                    log.push(format!("readv {} {:?}", n.unwrap(), bufs.concat()));
                                },
                            )
                            .unwrap();
                        })
                        .unwrap();
                    })
                    .unwrap();
                })
                .unwrap();
            },
        )
        .unwrap();
    })
    .unwrap();
    let mut log = Log::new();
    run_to_completion(&mut base, &mut log);
    assert_eq!(
        log,
        [
            "write 7",
            "writev 2 14",
            "fsync",
            "fdatasync",
            "hello, vectored world",
            &format!("readv 14 {:?}", b"vectored world".to_vec()),
        ]
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"hello, vectored world");
}

#[test]
fn read_exact_and_write_all_cover_the_whole_span() {
    let (path, data) = data_file("exact", 300_000);
    let file = AioFile::new(
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap(),
    )
    .unwrap();
    let mut base = EventBase::<Option<Vec<u8>>>::new().unwrap();
    base.read_exact_at(&file, 1000, vec![0; 250_000], |_, out, buf, r| {
        r.unwrap();
        *out = Some(buf);
    })
    .unwrap();
    let mut out = None;
    run_to_completion(&mut base, &mut out);
    assert_eq!(out.unwrap(), &data[1000..251_000]);

    // Sequenced: concurrent requests complete in no promised order.
    let mut base = EventBase::<Vec<ErrorKind>>::new().unwrap();
    base.read_exact_at(&file, 299_000, vec![0; 4096], |_, errs, _, r| {
        errs.push(r.unwrap_err().kind())
    })
    .unwrap();
    let mut errors = Vec::new();
    run_to_completion(&mut base, &mut errors);
    assert_eq!(errors, [ErrorKind::UnexpectedEof]);
    base.write_all_at(&file, 300_000, vec![7; 5000], |_, _, buf, r| {
        r.unwrap();
        assert_eq!(buf.len(), 5000);
    })
    .unwrap();
    run_to_completion(&mut base, &mut errors);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 305_000);
}

/// Kernel AIO alone: helpers off, so that buffered reads go through `io_submit` too (with
/// helpers on, cached buffered reads are served by `preadv2` on the loop thread instead).
fn kernel_aio_only<S>(options: AioOptions) -> EventBase<S> {
    let mut base = EventBase::new().unwrap();
    base.set_aio_options(options.helper_threads(0)).unwrap();
    base
}

#[test]
fn ten_thousand_random_reads_match_pread() {
    for helpers in [true, false] {
        random_reads_match_pread(helpers);
    }
}

fn random_reads_match_pread(helpers: bool) {
    const LEN: usize = 4 << 20;
    let (path, _) = data_file("random-reads", LEN);
    let file = AioFile::open(&path, false).unwrap();
    let reference = File::open(&path).unwrap();
    let mut base = match helpers {
        true => EventBase::<usize>::new().unwrap(),
        false => kernel_aio_only(AioOptions::new()),
    };
    let mut state = 12345u64;
    for _ in 0..10_000 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let offset = (state >> 33) % LEN as u64;
        let len = 1 + (state >> 20) as usize % 8192;
        let mut expected = vec![0; len];
        let n = reference.read_at(&mut expected, offset).unwrap();
        expected.truncate(n);
        base.read_at(
            &file,
            offset,
            vec![0u8; len],
            move |_, checked, buf, got| {
                let got = got.unwrap();
                assert_eq!(&buf[..got], &expected[..], "offset {offset} len {len}");
                *checked += 1;
            },
        )
        .unwrap();
    }
    let mut checked = 0;
    run_to_completion(&mut base, &mut checked);
    assert_eq!(checked, 10_000);
    let m = base.metrics();
    assert_eq!(m.aio_completions, 10_000);
    if helpers {
        assert_eq!(
            m.aio_cached_reads, 10_000,
            "served from the page cache: {m:?}"
        );
    } else {
        assert!(
            m.aio_submit_calls >= 10_000 / 128,
            "batches of at most the in-flight limit"
        );
    }
}

#[test]
fn requests_beyond_the_in_flight_limit_wait_in_the_queue() {
    let (path, data) = data_file("limit", 1 << 20);
    let file = AioFile::open(&path, true).unwrap();
    let mut base = EventBase::<(usize, usize)>::new().unwrap();
    base.set_aio_options(AioOptions::new().max_in_flight(4))
        .unwrap();
    for i in 0..100u64 {
        let expected = data[(i as usize * 8192)..][..8192].to_vec();
        let buf = AlignedBuf::new(8192, 4096).unwrap();
        base.read_at(&file, i * 8192, buf, move |base, (done, peak), buf, n| {
            assert_eq!(n.unwrap(), 8192);
            assert_eq!(&buf[..], &expected[..]);
            *peak = (*peak).max(base.metrics().aio_in_flight);
            *done += 1;
        })
        .unwrap();
    }
    assert_eq!(
        base.metrics().aio_in_flight,
        0,
        "nothing is submitted outside the loop"
    );
    let mut seen = (0, 0);
    run_to_completion(&mut base, &mut seen);
    assert_eq!(seen.0, 100);
    assert!(seen.1 <= 4, "in flight peaked at {}", seen.1);
    assert!(
        base.set_aio_options(AioOptions::new()).is_err(),
        "too late: the context exists"
    );
}

#[test]
fn partial_submission_fails_only_the_refused_request() {
    let (path, data) = data_file("partial", 8192);
    let readable = AioFile::open(&path, false).unwrap();
    // A write-only file: the kernel refuses a read at submit time (EBADF).
    let write_only = AioFile::new(OpenOptions::new().write(true).open(&path).unwrap()).unwrap();
    let results = Rc::new(RefCell::new(Vec::new()));
    let mut base = kernel_aio_only::<()>(AioOptions::new());
    for (i, file) in [&readable, &write_only, &readable].into_iter().enumerate() {
        let results = results.clone();
        base.read_at(file, 0, vec![0; 100], move |_, _, buf, r| {
            results.borrow_mut().push((
                i,
                r.map(|n| buf[..n].to_vec()).map_err(|e| e.raw_os_error()),
            ));
        })
        .unwrap();
    }
    run_to_completion(&mut base, &mut ());
    let mut results = results.borrow().clone();
    results.sort_by_key(|r| r.0);
    assert_eq!(results[0], (0, Ok(data[..100].to_vec())));
    assert_eq!(results[1], (1, Err(Some(libc::EBADF))));
    assert_eq!(results[2], (2, Ok(data[..100].to_vec())));
    // [ok, bad, ok] -> 1 queued; [bad, ok] -> EBADF for bad; [ok] -> 1.
    assert_eq!(base.metrics().aio_submit_calls, 3);
}

#[test]
fn end_of_file_and_short_reads_are_reported_exactly() {
    let (path, data) = data_file("eof", 10_000);
    for direct in [false, true] {
        let file = AioFile::open(&path, direct).unwrap();
        let mut base = EventBase::<Vec<(u64, usize)>>::new().unwrap();
        for offset in [4096u64, 8192, 12288, 20480] {
            let buf = AlignedBuf::new(8192, 4096).unwrap();
            let data = data.clone();
            base.read_at(&file, offset, buf, move |_, seen, buf, n| {
                let n = n.unwrap();
                assert_eq!(&buf[..n], &data[offset.min(10_000) as usize..][..n]);
                seen.push((offset, n));
            })
            .unwrap();
        }
        let mut seen = Vec::new();
        run_to_completion(&mut base, &mut seen);
        seen.sort();
        assert_eq!(
            seen,
            [(4096, 5904), (8192, 1808), (12288, 0), (20480, 0)],
            "direct={direct}"
        );
    }
}

/// A buffer one byte past an aligned start: misaligned for O_DIRECT whatever the allocator does.
struct Shifted(AlignedBuf);

// SAFETY: points into the AlignedBuf's heap allocation, which never moves.
unsafe impl IoBuf for Shifted {
    fn io_ptr(&self) -> *const u8 {
        self.0.as_ptr().wrapping_add(1)
    }
    fn io_len(&self) -> usize {
        4096
    }
}

// SAFETY: as above; the 4096 bytes after the first are inside the 8192-byte allocation.
unsafe impl aioloop::IoBufMut for Shifted {
    fn io_mut_ptr(&mut self) -> *mut u8 {
        self.0.as_mut_ptr().wrapping_add(1)
    }
}

#[test]
fn misaligned_o_direct_requests_are_refused_before_submission() {
    let (path, _) = data_file("misaligned", 16384);
    let file = AioFile::open(&path, true).unwrap();
    let (mem, off) = file.alignment().unwrap();
    assert!(
        mem.is_power_of_two() && off.is_power_of_two(),
        "{mem} {off}"
    );
    let mut base = EventBase::<()>::new().unwrap();
    let cases: [(u64, usize, bool); 3] = [(0, 4096, true), (1, 4096, false), (0, 4095, false)];
    for (offset, len, shifted) in cases {
        let result = if shifted {
            let buf = Shifted(AlignedBuf::new(8192, 4096).unwrap());
            base.read_at(&file, offset, buf, |_, _, _, _| unreachable!())
                .map(drop)
                .map_err(|e| e.into_parts().0)
        } else {
            let buf = AlignedBuf::new(len, 4096).unwrap();
            let refused = base.read_at(
                &file,
                offset * off as u64 / 2 + offset,
                buf,
                |_, _, _, _| unreachable!(),
            );
            let (err, buf) = refused.unwrap_err().into_parts();
            assert_eq!(buf.len(), len, "the buffer comes back");
            Err(err)
        };
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        let text = err.to_string();
        assert!(
            text.contains(&format!("aligned to {mem}"))
                && text.contains(&format!("multiple of {off}")),
            "{text}"
        );
    }
    assert_eq!(base.metrics().aio_submit_calls, 0);
    assert!(!base.is_alive());
}

#[test]
fn dropped_file_handle_keeps_its_fd_for_requests_in_flight_and_completions_match() {
    let (path_a, data_a) = data_file("identity-a", 1 << 20);
    let (path_b, data_b) = data_file("identity-b", 1 << 20);
    let mut base = EventBase::<usize>::new().unwrap();
    let a = AioFile::open(&path_a, true).unwrap();
    let fd_a = std::os::fd::AsRawFd::as_raw_fd(&a);
    queue_checked_reads(&mut base, &a, &data_a, 16, 65536);
    base.submit_aio(); // in flight now, and not dispatched before the next run
    drop(a);
    // The requests keep A open, so B cannot take its number while they run.
    let b = AioFile::open(&path_b, true).unwrap();
    assert_ne!(std::os::fd::AsRawFd::as_raw_fd(&b), fd_a);
    queue_checked_reads(&mut base, &b, &data_b, 16, 65536);
    let mut n = 0;
    run_to_completion(&mut base, &mut n);
    assert_eq!(n, 32);
}

#[test]
fn cancel_stops_a_queued_request_and_leaves_a_submitted_one_to_finish() {
    let (path, data) = data_file("cancel", 1 << 20);
    let file = AioFile::open(&path, true).unwrap();
    type Seen = Vec<(&'static str, Option<i32>, usize, bool)>;
    let mut base = EventBase::<Seen>::new().unwrap();
    let record = |name: &'static str, data: Vec<u8>| {
        move |_: &mut EventBase<Seen>,
              seen: &mut Seen,
              buf: AlignedBuf,
              r: std::io::Result<usize>| {
            let filled = buf[..] == data[..buf.len()];
            seen.push((
                name,
                r.err().and_then(|e| aioloop::os_error(&e)),
                buf.len(),
                filled,
            ));
        }
    };
    // Cancelled while still queued: never submitted.
    let queued = base
        .read_at(
            &file,
            0,
            AlignedBuf::new(1 << 20, 4096).unwrap(),
            record("queued", data.clone()),
        )
        .unwrap();
    assert!(base.cancel_aio(queued));
    assert!(!base.cancel_aio(queued), "already cancelled");
    // Submitted: the kernel cannot stop it, so cancel refuses and the real result comes back.
    let in_flight = base
        .read_at(
            &file,
            0,
            AlignedBuf::new(1 << 20, 4096).unwrap(),
            record("in flight", data.clone()),
        )
        .unwrap();
    base.submit_aio();
    assert_eq!(base.metrics().aio_in_flight, 1);
    assert!(
        !base.cancel_aio(in_flight),
        "a submitted request cannot be cancelled"
    );
    let mut seen = Seen::new();
    run_to_completion(&mut base, &mut seen);
    seen.sort();
    assert_eq!(
        seen,
        [
            ("in flight", None, 1 << 20, true),
            ("queued", Some(libc::ECANCELED), 1 << 20, false)
        ]
    );
    assert!(!base.cancel_aio(in_flight), "finished");
    assert_eq!(
        base.metrics().aio_submit_calls,
        1,
        "the queued one was never submitted"
    );
}

#[test]
fn full_kernel_ring_gives_eagain_which_is_reaped_and_retried() {
    let (path, data) = data_file("full-ring", 4 << 20);
    let file = AioFile::open(&path, false).unwrap();
    // A tiny kernel context under a large in-flight limit: buffered reads complete inside
    // io_submit and fill the ring until io_submit says EAGAIN.
    let mut base = kernel_aio_only::<usize>(AioOptions::new().ring_size(1).max_in_flight(2000));
    for i in 0..1000u64 {
        let expected = data[i as usize * 4096..][..4096].to_vec();
        base.read_at(&file, i * 4096, vec![0; 4096], move |_, n, buf, r| {
            assert_eq!(r.unwrap(), 4096);
            assert_eq!(buf, expected);
            *n += 1;
        })
        .unwrap();
    }
    let mut n = 0;
    run_to_completion(&mut base, &mut n);
    assert_eq!(n, 1000);
    assert!(
        base.metrics().aio_submit_calls > 2,
        "{} io_submit calls",
        base.metrics().aio_submit_calls
    );
}

#[test]
fn requests_submitted_by_callbacks_go_out_in_one_batch() {
    let (path, _) = data_file("batch", 1 << 20);
    let file = AioFile::open(&path, false).unwrap();
    let mut base = kernel_aio_only::<u64>(AioOptions::new());
    let f = file.clone();
    base.read_at(&file, 0, vec![0; 16], move |base, submits_before, _, _| {
        *submits_before = base.metrics().aio_submit_calls;
        for i in 0..50 {
            base.read_at(&f, i * 4096, vec![0; 4096], |_, _, _, r| {
                assert_eq!(r.unwrap(), 4096)
            })
            .unwrap();
        }
    })
    .unwrap();
    let mut before = 0;
    run_to_completion(&mut base, &mut before);
    assert_eq!(
        base.metrics().aio_submit_calls - before,
        1,
        "50 requests, one io_submit"
    );
}

#[test]
fn context_setup_failure_names_the_limit_and_the_sysctl() {
    let max: u64 = std::fs::read_to_string("/proc/sys/fs/aio-max-nr")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (path, data) = data_file("setup", 4096);
    let direct = AioFile::open(&path, true).unwrap();
    let too_big = AioOptions::new().ring_size((max + 1).min(u32::MAX as u64) as u32);
    // Helpers off: nothing can run the request but kernel AIO, so it is refused.
    let mut base = kernel_aio_only::<Vec<u8>>(too_big);
    let mut buf = AlignedBuf::new(4096, 4096).unwrap();
    buf[0] = 7;
    let (err, buf) = base
        .read_at(&direct, 0, buf, |_, _, _, _| {})
        .unwrap_err()
        .into_parts();
    assert_eq!(buf[0], 7, "the buffer comes back");
    assert_eq!(aioloop::os_error(&err), Some(libc::EAGAIN));
    let text = err.to_string();
    assert!(
        text.contains("aio-max-nr") && text.contains("sysctl"),
        "{text}"
    );
    assert!(!base.is_alive());
    // Helpers on: a buffered read needs no kernel AIO context (the page cache or a helper
    // serves it), and the O_DIRECT read runs on a helper instead.
    let mut base = EventBase::<Vec<u8>>::new().unwrap();
    base.set_aio_options(too_big).unwrap();
    let buffered = AioFile::open(&path, false).unwrap();
    for file in [&buffered, &direct] {
        let buf = AlignedBuf::new(4096, 4096).unwrap();
        base.read_at(file, 0, buf, |_, out, buf, n| {
            out.extend_from_slice(&buf[..n.unwrap()])
        })
        .unwrap();
    }
    let mut out = Vec::new();
    run_to_completion(&mut base, &mut out);
    assert_eq!(out, [&data[..], &data[..]].concat());
}

#[test]
fn ring_and_io_getevents_reaping_agree() {
    let (path, data) = data_file("reapers", 1 << 20);
    for force in [false, true] {
        let file = AioFile::open(&path, true).unwrap();
        let mut base = EventBase::<usize>::new().unwrap();
        base.set_aio_options(AioOptions::new().force_io_getevents(force))
            .unwrap();
        queue_checked_reads(&mut base, &file, &data, 64, 16384);
        let mut n = 0;
        run_to_completion(&mut base, &mut n);
        assert_eq!(n, 64, "force_io_getevents={force}");
    }
}

#[test]
fn with_helpers_off_buffered_reads_count_their_blocking_time_in_io_submit() {
    let (path, _) = data_file("blocking", 1 << 20);
    let file = AioFile::open(&path, false).unwrap();
    let mut base = kernel_aio_only::<()>(AioOptions::new());
    base.read_at(&file, 0, vec![0; 1 << 20], |_, _, _, r| {
        assert_eq!(r.unwrap(), 1 << 20)
    })
    .unwrap();
    run_to_completion(&mut base, &mut ());
    assert!(base.metrics().aio_submit_time > Duration::ZERO);
}

#[test]
fn buffered_read_of_a_small_cached_file_is_one_copy_on_the_loop_thread() {
    let (path, data) = data_file("small-cached", 4096);
    let file = AioFile::open(&path, false).unwrap();
    let mut base = EventBase::<Vec<u8>>::new().unwrap();
    // A buffer larger than the file: the short count is the end of the file, found without a
    // helper (a second try returns 0).
    base.read_at(&file, 0, vec![0; 65536], |_, out, buf, n| {
        out.extend_from_slice(&buf[..n.unwrap()])
    })
    .unwrap();
    let mut out = Vec::new();
    run_to_completion(&mut base, &mut out);
    assert_eq!(out, data);
    let m = base.metrics();
    assert_eq!(
        (m.aio_cached_reads, m.helper_jobs, m.aio_submit_calls),
        (1, 0, 0),
        "{m:?}"
    );
}

#[test]
fn scattered_requests_go_two_per_io_submit_and_a_sequential_run_in_one() {
    // More than two iocbs in one call plug the block layer, holding the first request until
    // the last is prepared; only a sequential run gains from that (its requests merge).
    let (path, _) = data_file("plug", 1 << 20);
    let file = AioFile::open(&path, true).unwrap();
    let mut base = kernel_aio_only::<usize>(AioOptions::new());
    let read = |base: &mut EventBase<usize>, offset: u64| {
        let buf = AlignedBuf::new(4096, 4096).unwrap();
        base.read_at(&file, offset, buf, |_, n, _, r| {
            assert_eq!(r.unwrap(), 4096);
            *n += 1;
        })
        .unwrap();
    };
    for block in [9, 3, 17, 5, 40, 1, 33, 12] {
        read(&mut base, block * 4096);
    }
    let mut n = 0;
    run_to_completion(&mut base, &mut n);
    assert_eq!((n, base.metrics().aio_submit_calls), (8, 4), "scattered");
    for block in 100..116 {
        read(&mut base, block * 4096);
    }
    run_to_completion(&mut base, &mut n);
    assert_eq!(
        (n, base.metrics().aio_submit_calls),
        (24, 5),
        "one sequential run"
    );
}
