//! Cancel inside a file's order: a request others wait on, or one waiting behind others, is
//! cancelled without breaking the order of the rest, and a run that cancels everything ends.

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use aioloop::{AioFile, AioOptions, EventBase};

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("order-cancel");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

fn file_of(name: &str, byte: u8) -> AioFile {
    let path = scratch(name);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    file.write_all_at(&[byte; 4096], 0).unwrap();
    AioFile::new(file).unwrap()
}

fn finish<S>(base: &mut EventBase<S>, state: &mut S) -> bool {
    base.set_exit_when_empty(true);
    let guard = base.exit_after(Duration::from_secs(20));
    base.run(state).unwrap();
    base.cancel_timer(guard)
}

fn one_busy_helper(time: Duration) -> EventBase<Vec<String>> {
    let mut base = EventBase::new().unwrap();
    base.set_aio_options(AioOptions::new().helper_threads(1))
        .unwrap();
    base.run_blocking(
        move || {
            std::thread::sleep(time);
            Ok(())
        },
        |_, _, _: std::io::Result<()>| {},
    )
    .unwrap();
    base
}

fn errno<T>(r: &std::io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("errno {:?}", e.raw_os_error()),
    }
}

#[test]
fn cancelling_a_barrier_others_wait_on_lets_them_run_in_order() {
    let mut base = one_busy_helper(Duration::from_millis(300));
    let file = file_of("barrier", b'a');
    let barrier = base
        .set_len(&file, 0, |_, log: &mut Vec<String>, r| {
            log.push(format!("set_len {}", errno(&r)))
        })
        .unwrap();
    base.write_at(&file, 0, vec![b'b'; 4096], |_, log, _, r| {
        log.push(format!("write {}", errno(&r)))
    })
    .unwrap();
    let read = base
        .read_at(&file, 0, vec![0u8; 4096], |_, log, buf, r| {
            log.push(format!("read {} {}", errno(&r), buf[0] as char))
        })
        .unwrap();
    let w2 = base
        .write_at(&file, 0, vec![b'c'; 4096], |_, log, _, r| {
            log.push(format!("write2 {}", errno(&r)))
        })
        .unwrap();
    base.fsync(&file, |_, log, r| log.push(format!("fsync {}", errno(&r))))
        .unwrap();
    let read2 = Rc::new(RefCell::new(0u8));
    let seen = read2.clone();
    base.read_at(&file, 0, vec![0u8; 4096], move |_, _, buf, r| {
        r.unwrap();
        *seen.borrow_mut() = buf[0];
    })
    .unwrap();
    assert!(base.cancel_job(barrier));
    assert!(base.cancel_aio(w2));
    let _ = read;
    let mut log = Vec::new();
    assert!(finish(&mut base, &mut log), "the run ends");
    let ecanceled = format!("errno {:?}", Some(libc::ECANCELED));
    assert_eq!(log[0], format!("set_len {ecanceled}"));
    assert!(log.contains(&"write ok".to_string()), "{log:?}");
    assert!(log.contains(&"read ok b".to_string()), "{log:?}");
    assert!(log.contains(&format!("write2 {ecanceled}")), "{log:?}");
    assert!(log.contains(&"fsync ok".to_string()), "{log:?}");
    assert_eq!(*read2.borrow(), b'b');
    let mut now = [0u8; 1];
    file.file().read_exact_at(&mut now, 0).unwrap();
    assert_eq!(now[0], b'b');
}

#[test]
fn cancelling_everything_at_every_stage_ends_a_run() {
    let mut base = one_busy_helper(Duration::from_millis(200));
    let file = file_of("everything", b'a');
    let mut jobs = Vec::new();
    let mut reqs = Vec::new();
    for i in 0..5u64 {
        jobs.push(
            base.set_len(&file, 4096 * (i + 1), |_, log: &mut Vec<String>, r| {
                log.push(errno(&r))
            })
            .unwrap(),
        );
        reqs.push(
            base.write_at(&file, 4096 * i, vec![b'z'; 4096], |_, log, _, r| {
                log.push(errno(&r))
            })
            .unwrap(),
        );
        reqs.push(
            base.read_at(&file, 0, vec![0u8; 4096], |_, log, _, r| {
                log.push(errno(&r))
            })
            .unwrap(),
        );
        reqs.push(base.fsync(&file, |_, log, r| log.push(errno(&r))).unwrap());
        jobs.push(
            base.run_blocking(
                || Ok(()),
                |_, log, r: std::io::Result<()>| log.push(errno(&r)),
            )
            .unwrap(),
        );
    }
    for id in reqs.iter().rev() {
        assert!(base.cancel_aio(*id));
    }
    for id in jobs.iter().rev() {
        assert!(base.cancel_job(*id));
    }
    let mut log = Vec::new();
    assert!(finish(&mut base, &mut log), "the run ends");
    assert_eq!(log.len(), 25);
    let ecanceled = format!("errno {:?}", Some(libc::ECANCELED));
    assert!(log.iter().all(|l| *l == ecanceled), "{log:?}");
    let mut now = [0u8; 1];
    file.file().read_exact_at(&mut now, 0).unwrap();
    assert_eq!(now[0], b'a', "nothing cancelled ran");
}
