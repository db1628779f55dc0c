//! The file server's HTTP parser under random and mutated requests: no panic, no hang, and
//! every answer it leads to is a well-formed response head. Bounded in time, run by
//! `cargo test` (the example's own unit tests run here too: examples' tests do not).

#[allow(dead_code)]
#[path = "../examples/fileserver/http.rs"]
mod http;

use std::time::{Duration, Instant};

use http::{Head, Span};

/// A small xorshift generator: reproducible, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a [u8]]) -> &'a [u8] {
        items[self.below(items.len())]
    }
}

const SEEDS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HEAD /small.txt HTTP/1.0\r\n\r\n",
    b"GET /big.bin HTTP/1.1\r\nRange: bytes=0-99\r\nConnection: close\r\n\r\n",
    b"GET /a%20b?x=1 HTTP/1.1\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n",
    b"GET /sub/ HTTP/1.1\r\nRange: bytes=-500\r\nConnection: keep-alive, close\r\n\r\n",
    b"GET / HTTP/1.1\nHost: x\n\n",
    b"GET http://x/sub/ HTTP/1.1\r\nHost: x\r\nIf-None-Match: W/\"1b-0\", \"a\"\r\n\r\n",
    b"GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=9-\r\nIf-Range: W/\"1b-0\"\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc",
];

/// Pieces mutations splice in: separators, controls, huge numbers, odd encodings.
const PIECES: &[&[u8]] = &[
    b"\r",
    b"\n",
    b"\r\n",
    b"\0",
    b":",
    b" ",
    b"\t",
    b"%",
    b"%2e%2e/",
    b"../",
    b"\xff\xfe",
    b"99999999999999999999",
    b"-",
    b",",
    b"bytes=",
    b"18446744073709551615",
    b"If-Modified-Since: Sun, 06 Nov 99999999999999999 99:99:99 GMT\r\n",
    b"Range: bytes=18446744073709551615-0\r\n",
    b"Content-Length: 5\r\n",
    b"If-Range: Sun, 06 Nov 1994 08:49:37 GMT\r\n",
    b"If-None-Match: *\r\n",
    b"http://",
    b"Transfer-Encoding: chunked\r\n",
    b"HTTP/9.9",
    b"\x7f",
];

fn request(rng: &mut Rng) -> Vec<u8> {
    match rng.below(4) {
        0 => (0..rng.below(200)).map(|_| rng.next() as u8).collect(),
        _ => {
            let mut req = rng.pick(SEEDS).to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(req.len() + 1);
                match rng.below(4) {
                    0 => drop(req.splice(at..at, rng.pick(PIECES).iter().copied())),
                    1 if at < req.len() => req[at] = rng.next() as u8,
                    2 if at < req.len() => drop(req.remove(at)),
                    _ => {
                        let end = (at + rng.below(20)).min(req.len());
                        let copy = req[at..end].to_vec();
                        req.splice(at..at, copy);
                    }
                }
            }
            req
        }
    }
}

/// A response head is a status line with a known reason, `Name: value` lines without stray
/// CR or LF, a Content-Length (none on a 304: RFC 9110 §8.6), and an empty line.
fn assert_well_formed(head: &str) {
    let body = head.strip_suffix("\r\n\r\n").expect(head);
    let mut lines = body.split("\r\n");
    let status = lines.next().unwrap();
    let rest = status.strip_prefix("HTTP/1.1 ").expect(head);
    let (code, reason) = rest.split_once(' ').expect(head);
    assert!(
        code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()),
        "{head}"
    );
    assert_ne!(reason, "Unknown", "{head}");
    let mut length = false;
    for line in lines {
        assert!(!line.contains(['\r', '\n']), "{head}");
        let (name, value) = line.split_once(": ").expect(head);
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()),
            "{head}"
        );
        length |= name == "Content-Length" && value.parse::<u64>().is_ok();
    }
    assert_eq!(length, code != "304", "{head}");
}

/// What the server answers a request with (without the file system): the refusal's status,
/// or for a file of each size, its range and conditional answer.
fn answers(buf: &[u8]) -> Vec<String> {
    let date = http::http_date(1_700_000_000);
    let request_keep_alive = http::parse_request(buf, 8192)
        .ok()
        .flatten()
        .is_some_and(|(r, _)| r.keep_alive_asked);
    let head = |status: u16, length: u64, range: Option<String>| {
        Head {
            status,
            date: &date,
            length,
            content_type: "text/plain",
            last_modified: Some(&date),
            content_range: range,
            etag: Some("W/\"1b-0\""),
            location: (status == 301).then_some("/sub/"),
            close: !request_keep_alive,
            keep_alive: request_keep_alive,
            allow: status == 405,
        }
        .render()
    };
    let (request, used) = match http::parse_request(buf, 8192) {
        Err(refusal) => return vec![head(refusal.status(), 0, None)],
        Ok(None) => return Vec::new(),
        Ok(Some(parsed)) => parsed,
    };
    assert!(used <= buf.len());
    if let Err(refusal) = http::request_path(&request.target) {
        return vec![head(refusal.status(), 0, None)];
    }
    let since = request
        .if_modified_since
        .as_deref()
        .and_then(http::parse_http_date);
    let mut heads = Vec::new();
    for size in [0, 1, 100, u64::MAX] {
        let etag = http::etag(size, 1_700_000_000);
        let not_modified = match &request.if_none_match {
            Some(tags) => http::none_match(tags, &etag),
            None => since.is_some_and(|s| s >= 1_700_000_000),
        };
        let range = match &request.if_range {
            Some(r) if !http::range_holds(r, &etag, Some(1_700_000_000)) => None,
            _ => request.range.as_deref(),
        };
        let (status, length, range) = match http::parse_range(range, size) {
            _ if not_modified => (304, 0, None),
            Span::Whole => (200, size, None),
            Span::Part(start, end) => {
                assert!(start < end && end <= size, "{start}..{end} of {size}");
                (
                    206,
                    end - start,
                    Some(format!("bytes {start}-{}/{size}", end - 1)),
                )
            }
            Span::Unsatisfiable => (416, 0, Some(format!("bytes */{size}"))),
        };
        heads.push(head(status, length, range));
    }
    heads
}

#[test]
fn random_and_mutated_requests_never_panic_and_every_answer_is_well_formed() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let started = Instant::now();
    let mut runs = 0u64;
    // Bounded in time (and in count, for a fast machine).
    while started.elapsed() < Duration::from_secs(2) && runs < 300_000 {
        let req = request(&mut rng);
        let outcome = std::panic::catch_unwind(|| answers(&req));
        let heads =
            outcome.unwrap_or_else(|_| panic!("panicked on {:?}", String::from_utf8_lossy(&req)));
        for head in heads {
            assert_well_formed(&head);
        }
        runs += 1;
    }
    assert!(runs > 1000, "only {runs} requests in the time");
}
