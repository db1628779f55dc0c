//! The per-file order of `tests/file_order.rs` on a FUSE file system whose writes stall: a
//! read, an `fsync` and `O_APPEND` writes issued after a slow write still see it land first.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use aioloop::{AioFile, EventBase};

#[path = "../../tests/common/mod.rs"]
mod common;
mod slowfs;

use common::{busy_helpers, finish};

#[derive(Default)]
struct Log {
    events: Vec<String>,
}

/// The file `name` of a fresh slow FUSE mount, opened for reading and writing (`O_APPEND` if
/// `append`); `None` where FUSE cannot be mounted.
fn on_fuse(mount: &str, append: bool) -> Option<(slowfs::SlowFs, AioFile)> {
    let slow = slowfs::SlowFs::mount_or_skip(mount, &[("f", 0)])?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .append(append)
        .open(slow.path("f"))
        .unwrap();
    let file = AioFile::new(file).unwrap();
    Some((slow, file))
}

#[test]
fn on_fuse_a_read_after_a_slow_write_of_its_range_sees_the_new_bytes() {
    let Some((slow, file)) = on_fuse("order-read", false) else {
        return;
    };
    slow.set_write_stall(Duration::from_millis(200));
    let mut base = EventBase::<Vec<String>>::new().unwrap();
    base.write_at(&file, 0, vec![b'n'; 4096], |_, _, _, n| {
        assert_eq!(n.unwrap(), 4096)
    })
    .unwrap();
    base.read_at(&file, 0, vec![0; 4096], |_, out, buf, n| {
        let n = n.unwrap();
        let new = buf[..n].iter().filter(|&&b| b == b'n').count();
        out.push(format!("read {n} bytes, {new} new"));
    })
    .unwrap();
    let mut out = Vec::new();
    finish(&mut base, &mut out);
    assert_eq!(out, ["read 4096 bytes, 4096 new"]);
}

#[test]
fn on_fuse_fsync_waits_for_a_slow_write_before_it() {
    let Some((slow, file)) = on_fuse("order-fsync", false) else {
        return;
    };
    slow.set_write_stall(Duration::from_millis(200));
    let reader = File::open(slow.path("f")).unwrap();
    let mut base = EventBase::<Log>::new().unwrap();
    base.write_at(&file, 0, vec![b'w'; 4096], |_, log, _, n| {
        log.events.push(format!("write {}", n.unwrap()))
    })
    .unwrap();
    base.fsync(&file, move |_, log, r| {
        r.unwrap();
        let mut got = vec![0; 4096];
        let n = reader.read_at(&mut got, 0).unwrap();
        let whole = n == 4096 && got.iter().all(|&b| b == b'w');
        log.events.push(format!("fsync saw the write: {whole}"));
    })
    .unwrap();
    let mut log = Log::default();
    finish(&mut base, &mut log);
    assert_eq!(log.events, ["write 4096", "fsync saw the write: true"]);
}

#[test]
fn on_fuse_appends_land_in_issue_order_with_helpers_busy() {
    let Some((slow, file)) = on_fuse("order-append", true) else {
        return;
    };
    slow.set_write_stall(Duration::from_millis(1));
    let mut base = EventBase::<usize>::new().unwrap();
    busy_helpers(&mut base, 2, Duration::from_millis(20));
    let records = 200;
    for i in 0..records {
        let record = format!("record {i:06}\n").into_bytes();
        base.write_at(&file, 0, record, |_, done, _, n| {
            assert_eq!(n.unwrap(), 14);
            *done += 1;
        })
        .unwrap();
    }
    let mut done = 0;
    finish(&mut base, &mut done);
    assert_eq!(done, records);
    let text = std::fs::read_to_string(slow.path("f")).unwrap();
    let out_of_place = (text.lines().enumerate())
        .filter(|(i, line)| *line != format!("record {i:06}"))
        .count();
    assert_eq!(text.lines().count(), records);
    assert_eq!(out_of_place, 0, "records out of place");
}
