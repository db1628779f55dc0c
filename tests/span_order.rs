//! A whole-span transfer (`read_exact_at`, `write_all_at`) is one request in its file's order:
//! the rest it queues after a short count keeps the span's place, so requests issued after the
//! span cannot slip in between its parts.

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use aioloop::{AioFile, AioOptions, EventBase};

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("span-order");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

fn finish<S>(base: &mut EventBase<S>, state: &mut S) {
    base.set_exit_when_empty(true);
    let guard = base.exit_after(Duration::from_secs(60));
    base.run(state).unwrap();
    assert!(base.cancel_timer(guard), "the run hit its 60 s guard");
}

/// `read_exact_at` of 8 KiB on a 4 KiB file, then a write of the second 4 KiB: the read
/// meets the end of the file, as a `pread` loop issued before the `pwrite` would.
fn read_exact_at_end_of_file_is_not_overtaken(name: &str, helpers: usize) {
    let path = scratch(name);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    file.write_all_at(&[b'a'; 4096], 0).unwrap();
    let file = AioFile::new(file).unwrap();
    let mut base = EventBase::<()>::new().unwrap();
    base.set_aio_options(AioOptions::new().helper_threads(helpers))
        .unwrap();
    let read: Rc<RefCell<Option<(usize, io::ErrorKind)>>> = Rc::default();
    let seen = read.clone();
    base.read_exact_at(&file, 0, vec![0u8; 8192], move |_, _, buf, result| {
        let e = result.expect_err("the file ends after 4 KiB when the read is issued");
        assert!(buf[..4096].iter().all(|&b| b == b'a'));
        *seen.borrow_mut() = Some((e.transferred(), e.kind()));
    })
    .unwrap();
    base.write_at(&file, 4096, vec![b'b'; 4096], |_, _, _, r| {
        assert_eq!(r.unwrap(), 4096);
    })
    .unwrap();
    finish(&mut base, &mut ());
    assert_eq!(*read.borrow(), Some((4096, io::ErrorKind::UnexpectedEof)));
}

#[test]
fn read_exact_at_is_not_overtaken_by_a_later_write_between_its_parts() {
    read_exact_at_end_of_file_is_not_overtaken("read-exact-helpers", 4);
    read_exact_at_end_of_file_is_not_overtaken("read-exact-no-helpers", 0);
}

#[test]
fn a_panic_in_the_callback_of_a_span_leaves_the_requests_behind_it_free_to_run() {
    let path = scratch("span-panic");
    std::fs::write(&path, [b'a'; 4096]).unwrap();
    let file = OpenOptions::new().read(true).write(true).open(&path);
    let file = AioFile::new(file.unwrap()).unwrap();
    let mut base = EventBase::<Vec<&'static str>>::new().unwrap();
    base.read_exact_at(&file, 0, vec![0u8; 8192], |_, _, _, _| panic!("on purpose"))
        .unwrap();
    base.write_at(&file, 4096, vec![b'b'; 4096], |_, log, _, r| {
        r.unwrap();
        log.push("write");
    })
    .unwrap();
    let mut log = Vec::new();
    base.set_exit_when_empty(true);
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| base.run(&mut log)));
    assert!(ran.is_err(), "the callback's panic leaves the run");
    let guard = base.exit_after(Duration::from_secs(20));
    base.run(&mut log).unwrap();
    assert!(base.cancel_timer(guard), "the write behind the span ran");
    assert_eq!(log, ["write"]);
}
