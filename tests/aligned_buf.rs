//! `AlignedBuf`'s memory: a large buffer costs pages only as they are used.

use aioloop::AlignedBuf;

/// This process's resident memory, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_large_aligned_buf_does_not_touch_its_pages_up_front() {
    for align in [512, 4096, 2 << 20] {
        let before = rss_kib();
        let mut buf = AlignedBuf::new(1 << 30, align).unwrap();
        let grown = rss_kib().saturating_sub(before);
        assert!(
            grown < 64 << 10,
            "a 1 GiB buffer aligned to {align} took {grown} KiB up front"
        );
        assert_eq!(buf.as_ptr() as usize % align, 0);
        assert_eq!(
            (buf.len(), buf.capacity(), buf.align()),
            (1 << 30, 1 << 30, align)
        );
        assert_eq!((buf[0], buf[1 << 29], buf[(1 << 30) - 1]), (0, 0, 0));
        buf[(1 << 30) - 1] = 7;
        assert_eq!(buf[(1 << 30) - 1], 7);
    }
}
