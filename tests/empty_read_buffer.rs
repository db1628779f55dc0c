//! A read into an empty buffer (a `Vec::with_capacity(n)`: length 0, whatever its capacity)
//! is refused with `InvalidInput` by every read verb, rather than answering `Ok(0)`, which
//! would read as the end of the file.

use std::io::ErrorKind;

use aioloop::{AioFile, AioOptions, EventBase};

mod common;
use common::data_file;

fn assert_refused_as_empty(error: &std::io::Error) {
    assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error}");
    assert!(
        error.to_string().contains("length, not its capacity"),
        "the message says why: {error}"
    );
}

fn check_every_read_verb(base: &mut EventBase<()>, file: &AioFile) {
    let err = base
        .read_at(file, 0, Vec::<u8>::with_capacity(4096), |_, _, _, _| {
            panic!("a refused read is never called back")
        })
        .unwrap_err();
    let (error, buf) = err.into_parts();
    assert_refused_as_empty(&error);
    assert_eq!(buf.capacity(), 4096, "the buffer is handed back");

    let err = base
        .read_exact_at(file, 0, Vec::<u8>::with_capacity(4096), |_, _, _, _| {
            panic!("a refused read is never called back")
        })
        .unwrap_err();
    assert_refused_as_empty(err.error());

    let bufs = vec![Vec::<u8>::with_capacity(16), Vec::with_capacity(16)];
    let err = base
        .readv_at(file, 0, bufs, |_, _, _, _| {
            panic!("a refused read is never called back")
        })
        .unwrap_err();
    assert_refused_as_empty(err.error());

    let err = base
        .readv_at(file, 0, Vec::<Vec<u8>>::new(), |_, _, _, _| {
            panic!("a refused read is never called back")
        })
        .unwrap_err();
    assert_refused_as_empty(err.error());
}

#[test]
fn a_read_into_an_empty_buffer_is_refused_not_taken_for_end_of_file() {
    let (path, _) = data_file("empty-read-buffer", 8192);
    let file = AioFile::open(&path, false).unwrap();
    let mut base = EventBase::<()>::new().unwrap();
    check_every_read_verb(&mut base, &file);
    common::finish(&mut base, &mut ());
}

#[test]
fn a_read_into_an_empty_buffer_is_refused_with_helpers_off_too() {
    let (path, _) = data_file("empty-read-buffer-no-helpers", 8192);
    let file = AioFile::open(&path, false).unwrap();
    let mut base = EventBase::<()>::new().unwrap();
    base.set_aio_options(AioOptions::new().helper_threads(0))
        .unwrap();
    check_every_read_verb(&mut base, &file);
    common::finish(&mut base, &mut ());
}

#[test]
fn a_read_into_a_buffer_of_some_length_still_works() {
    let (path, data) = data_file("empty-read-buffer-control", 8192);
    let file = AioFile::open(&path, false).unwrap();
    let mut base = EventBase::<Vec<u8>>::new().unwrap();
    base.read_at(&file, 0, vec![0; 100], |_, out, buf, n| {
        *out = buf[..n.unwrap()].to_vec();
    })
    .unwrap();
    let mut out = Vec::new();
    common::finish(&mut base, &mut out);
    assert_eq!(out, data[..100]);
}
