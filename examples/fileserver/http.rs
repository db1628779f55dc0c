//! The HTTP/1.1 of the file server: request parsing, request paths, ranges, dates and
//! response heads. Small on purpose: `GET` and `HEAD` of static files, nothing else.

use std::fmt::Write;
use std::path::PathBuf;

/// A parsed request head.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub version: &'static str,
    pub keep_alive: bool,
    /// An HTTP/1.0 client asked for `Connection: keep-alive` (echoed in the answer).
    pub keep_alive_asked: bool,
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub if_modified_since: Option<String>,
    pub if_none_match: Option<String>,
    /// The length of the body after the head, which the server reads and drops.
    pub body_length: u64,
}

impl Request {
    /// A request that stands for a head that could not be parsed, in the access log.
    pub fn unparsed() -> Request {
        Request {
            method: "-".into(),
            target: "-".into(),
            version: "HTTP/1.1",
            keep_alive: false,
            keep_alive_asked: false,
            range: None,
            if_range: None,
            if_modified_since: None,
            if_none_match: None,
            body_length: 0,
        }
    }
}

/// A request that cannot be served, and the status that says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    BadRequest,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    UriTooLong,
    HeaderTooLarge,
    VersionNotSupported,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::BadRequest => 400,
            Refusal::Forbidden => 403,
            Refusal::NotFound => 404,
            Refusal::MethodNotAllowed => 405,
            Refusal::UriTooLong => 414,
            Refusal::HeaderTooLarge => 431,
            Refusal::VersionNotSupported => 505,
        }
    }
}

/// The reason phrase of `status`.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Parses the request head at the start of `buf`: `Ok(None)` while it is incomplete, else
/// the request and the bytes it took.
pub fn parse_request(buf: &[u8], limit: usize) -> Result<Option<(Request, usize)>, Refusal> {
    let Some(end) = find_head_end(buf) else {
        return if buf.len() > limit {
            Err(Refusal::HeaderTooLarge)
        } else {
            Ok(None)
        };
    };
    if end > limit {
        return Err(Refusal::HeaderTooLarge);
    }
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| Refusal::BadRequest)?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    // A CR anywhere but before LF (RFC 9112 §2.2), or any other control character but a tab
    // in a field value, is refused: proxies disagree about what it means.
    if head
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .any(|l| l.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f))
    {
        return Err(Refusal::BadRequest);
    }
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::BadRequest);
    };
    let version = match version {
        "HTTP/1.1" => "HTTP/1.1",
        "HTTP/1.0" => "HTTP/1.0",
        v if v.starts_with("HTTP/") => return Err(Refusal::VersionNotSupported),
        _ => return Err(Refusal::BadRequest),
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) || target.is_empty() {
        return Err(Refusal::BadRequest);
    }
    let mut request = Request {
        method: method.to_string(),
        target: target.to_string(),
        version,
        keep_alive: version == "HTTP/1.1",
        keep_alive_asked: false,
        range: None,
        if_range: None,
        if_modified_since: None,
        if_none_match: None,
        body_length: 0,
    };
    let (mut host, mut length) = (false, None);
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(Refusal::BadRequest)?;
        // A field name is a token (RFC 9110 §5.1): no whitespace before the colon, no folded
        // line, nothing a proxy could read another way.
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(Refusal::BadRequest);
        }
        let value = value.trim_matches([' ', '\t']);
        match name.to_ascii_lowercase().as_str() {
            "connection" => {
                for token in value.split(',').map(|t| t.trim().to_ascii_lowercase()) {
                    match token.as_str() {
                        "close" => request.keep_alive = false,
                        "keep-alive" => {
                            request.keep_alive = true;
                            request.keep_alive_asked = version == "HTTP/1.0";
                        }
                        _ => {}
                    }
                }
            }
            "host" if host => return Err(Refusal::BadRequest), // RFC 9112 §3.2
            "host" => host = true,
            "range" => request.range = Some(value.to_string()),
            "if-range" => request.if_range = Some(value.to_string()),
            "if-modified-since" => request.if_modified_since = Some(value.to_string()),
            "if-none-match" => request.if_none_match = Some(value.to_string()),
            // A body is read and dropped (RFC 9110 §9.3.1: it has no meaning for GET). Its
            // length must be one decimal number, the same in every field (RFC 9112 §6.3).
            "content-length" => {
                let n = match value.bytes().all(|b| b.is_ascii_digit()) {
                    true => value.parse::<u64>().map_err(|_| Refusal::BadRequest)?,
                    false => return Err(Refusal::BadRequest),
                };
                if length.replace(n).is_some_and(|old| old != n) {
                    return Err(Refusal::BadRequest);
                }
            }
            // Chunked bodies are not read: refused, and the connection closed after it.
            "transfer-encoding" => return Err(Refusal::BadRequest),
            _ => {}
        }
    }
    // RFC 9112 §3.2: an HTTP/1.1 request without Host is 400.
    if version == "HTTP/1.1" && !host {
        return Err(Refusal::BadRequest);
    }
    if request.keep_alive_asked && !request.keep_alive {
        request.keep_alive_asked = false;
    }
    request.body_length = length.unwrap_or(0);
    Ok(Some((request, end)))
}

/// Whether `b` may appear in a token (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Where the head ends (after its empty line), accepting bare LF line ends too.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(at) = buf[i..].iter().position(|&b| b == b'\n') {
        let next = i + at + 1;
        match buf.get(next..) {
            Some([b'\n', ..]) => return Some(next + 1),
            Some([b'\r', b'\n', ..]) => return Some(next + 2),
            _ => i = next,
        }
    }
    None
}

/// The path of a request target: itself in origin form (`/a/b?q`), the part after the
/// authority in absolute form (`http://host/a/b?q`, RFC 9112 §3.2.2, which a server must
/// accept); without the query.
pub fn target_path(target: &str) -> &str {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let scheme = path.get(..7).filter(|s| s.eq_ignore_ascii_case("http://"));
    let scheme = scheme.or_else(|| path.get(..8).filter(|s| s.eq_ignore_ascii_case("https://")));
    match scheme {
        Some(scheme) => {
            let rest = &path[scheme.len()..];
            rest.find('/').map_or("/", |at| &rest[at..])
        }
        None => path,
    }
}

/// The file a request target names, relative to the served root: percent-decoded, without
/// query, `.` or empty segments; `..`, NUL bytes and anything but an origin-form or
/// absolute-form path refused. A target ending in `/` names its `index.html`.
pub fn request_path(target: &str) -> Result<PathBuf, Refusal> {
    use std::os::unix::ffi::OsStrExt;
    let path = target_path(target);
    if !path.starts_with('/') {
        return Err(Refusal::BadRequest);
    }
    let decoded = percent_decode(path.as_bytes()).ok_or(Refusal::BadRequest)?;
    if decoded.contains(&0) {
        return Err(Refusal::BadRequest);
    }
    let mut relative = PathBuf::new();
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => return Err(Refusal::Forbidden),
            s => relative.push(std::ffi::OsStr::from_bytes(s)),
        }
    }
    if decoded.ends_with(b"/") {
        relative.push("index.html");
    }
    Ok(relative)
}

fn percent_decode(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Span {
    /// The whole file (no range, or one this server ignores: several ranges, bad syntax).
    Whole,
    /// Bytes `start..end`.
    Part(u64, u64),
    /// Nothing of the file: 416.
    Unsatisfiable,
}

pub fn parse_range(range: Option<&str>, size: u64) -> Span {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Span::Whole;
    };
    if spec.contains(',') {
        return Span::Whole; // several ranges: serving the whole file is allowed
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Span::Whole;
    };
    let number = |s: &str| s.parse::<u64>().ok();
    match (first, last) {
        ("", suffix) => match number(suffix) {
            Some(0) => Span::Unsatisfiable,
            Some(n) if size > 0 => Span::Part(size.saturating_sub(n), size),
            Some(_) => Span::Unsatisfiable,
            None => Span::Whole,
        },
        (first, last) => match (number(first), last) {
            (Some(start), _) if start >= size => Span::Unsatisfiable,
            (Some(start), "") => Span::Part(start, size),
            (Some(start), last) => match number(last) {
                Some(end) if end >= start => Span::Part(start, end.min(size - 1) + 1),
                _ => Span::Whole,
            },
            (None, _) => Span::Whole,
        },
    }
}

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `secs` since the epoch as an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date(secs: u64) -> String {
    let days = secs / 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    let rest = secs % 86_400;
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[month as usize - 1],
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// `secs` since the epoch as an access-log time (`06/Nov/1994:08:49:37 +0000`, the common log
/// format's).
pub fn log_date(secs: u64) -> String {
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rest = secs % 86_400;
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[month as usize - 1],
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The entity tag of a file of `size` bytes modified at `mtime` (seconds since the epoch):
/// weak, since two versions written within one second with one size would share it.
pub fn etag(size: u64, mtime: u64) -> String {
    format!("W/\"{size:x}-{mtime:x}\"")
}

/// Whether an `If-None-Match` list matches `etag`, by weak comparison (RFC 9110 §13.1.2).
pub fn none_match(header: &str, etag: &str) -> bool {
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_string();
    header.trim() == "*" || header.split(',').any(|tag| opaque(tag) == opaque(etag))
}

/// Whether a `Range` may be served under `If-Range: if_range` (RFC 9110 §13.1.5): an entity
/// tag must match by strong comparison, which a weak tag never does; a date must be the
/// file's `Last-Modified` exactly. Otherwise the whole file is sent.
pub fn range_holds(if_range: &str, etag: &str, modified: Option<u64>) -> bool {
    let if_range = if_range.trim();
    if if_range.starts_with('"') || if_range.starts_with("W/") {
        return !etag.starts_with("W/") && if_range == etag;
    }
    modified.is_some() && parse_http_date(if_range) == modified
}

/// Parses an IMF-fixdate (the only format a client sends today); `None` for anything else,
/// including numbers out of their range (a client's numbers are never trusted to fit).
pub fn parse_http_date(date: &str) -> Option<u64> {
    let mut words = date.split([' ', ':']);
    let (_, day, month, year) = (words.next()?, words.next()?, words.next()?, words.next()?);
    let (h, m, s, zone) = (words.next()?, words.next()?, words.next()?, words.next()?);
    if zone != "GMT" || words.next().is_some() {
        return None;
    }
    let field = |text: &str, max: u32| text.parse::<u32>().ok().filter(|&n| n <= max);
    let month = MONTHS.iter().position(|&name| name == month)? as u32 + 1;
    let (day, year) = (field(day, 31).filter(|&d| d > 0)?, field(year, 9999)?);
    let (h, m, s) = (field(h, 23)?, field(m, 59)?, field(s, 60)?);
    let days = days_from_civil(i64::from(year), month, day);
    let time = u64::from(h * 3600 + m * 60 + s);
    u64::try_from(days)
        .ok()?
        .checked_mul(86_400)?
        .checked_add(time)
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// The day count since 1970-01-01 of a civil date (the inverse of `civil_from_days`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The `Content-Type` for a file name.
pub fn content_type(path: &std::path::Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "txt" | "md" => "text/plain; charset=utf-8",
        "css" => "text/css",
        "js" | "mjs" => "text/javascript",
        "csv" => "text/csv",
        "xml" => "text/xml",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "bmp" => "image/bmp",
        "tif" | "tiff" => "image/tiff",
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "mov" => "video/quicktime",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "ogg" | "oga" => "audio/ogg",
        "opus" => "audio/opus",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "pdf" => "application/pdf",
        "wasm" => "application/wasm",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        _ => "application/octet-stream",
    }
}

/// A response head.
pub struct Head<'a> {
    pub status: u16,
    pub date: &'a str,
    pub length: u64,
    pub content_type: &'static str,
    pub last_modified: Option<&'a str>,
    pub content_range: Option<String>,
    pub etag: Option<&'a str>,
    /// Where a redirect points.
    pub location: Option<&'a str>,
    pub close: bool,
    /// Say `Connection: keep-alive` (to an HTTP/1.0 client that asked for it).
    pub keep_alive: bool,
    pub allow: bool,
}

impl Head<'_> {
    pub fn render(&self) -> String {
        let mut head = String::with_capacity(256);
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\nServer: aioloop-fileserver\r\nDate: {}\r\n",
            self.status,
            reason(self.status),
            self.date,
        );
        // A 304 has no Content-Length: it would describe the 200 (RFC 9110 §8.6), and this
        // server does not restate it; nor a Content-Type, like nginx.
        if self.status != 304 {
            let _ = write!(
                head,
                "Content-Length: {}\r\nContent-Type: {}\r\n",
                self.length, self.content_type
            );
        }
        // Ranges are offered with what could be asked for in ranges, not with errors.
        if matches!(self.status, 200 | 206) {
            head.push_str("Accept-Ranges: bytes\r\n");
        }
        if let Some(modified) = self.last_modified {
            let _ = write!(head, "Last-Modified: {modified}\r\n");
        }
        if let Some(etag) = self.etag {
            let _ = write!(head, "ETag: {etag}\r\n");
        }
        if let Some(location) = self.location {
            let _ = write!(head, "Location: {location}\r\n");
        }
        if let Some(range) = &self.content_range {
            let _ = write!(head, "Content-Range: {range}\r\n");
        }
        if self.allow {
            head.push_str("Allow: GET, HEAD\r\n");
        }
        if self.close {
            head.push_str("Connection: close\r\n");
        } else if self.keep_alive {
            head.push_str("Connection: keep-alive\r\n");
        }
        head.push_str("\r\n");
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_match_the_rfc_example() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        for secs in [0, 951_782_400, 1_700_000_000, 4_102_444_800] {
            assert_eq!(parse_http_date(&http_date(secs)), Some(secs));
        }
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        // Numbers out of range, from a client: refused, never overflowing.
        for date in [
            "Sun, 06 Nov 99999999999999999 08:49:37 GMT",
            "Sun, 06 Nov 1994 99999999999999999:00:00 GMT",
            "Sun, 06 Nov 1994 25:00:00 GMT",
            "Sun, 99 Nov 1994 08:49:37 GMT",
            "Sun, 00 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:-1 GMT",
        ] {
            assert_eq!(parse_http_date(date), None, "{date}");
        }
    }

    #[test]
    fn a_bare_cr_controls_and_non_token_field_names_are_refused() {
        let bad = |req: &[u8]| parse_request(req, 8192).unwrap_err();
        assert_eq!(
            bad(b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n"),
            Refusal::BadRequest
        );
        assert_eq!(
            bad(b"GET / HTTP/1.1\r\nX: a\0b\r\n\r\n"),
            Refusal::BadRequest
        );
        assert_eq!(
            bad(b"GET / HTTP/1.1\r\nX(y): 1\r\n\r\n"),
            Refusal::BadRequest
        );
        assert_eq!(
            bad(b"GET / HTTP/1.1\r\nX y: 1\r\n\r\n"),
            Refusal::BadRequest
        );
        assert_eq!(
            bad(b"GET / HTTP/1.1\r\n folded\r\n\r\n"),
            Refusal::BadRequest
        );
        assert_eq!(bad(b"GET /\r HTTP/1.1\r\n\r\n"), Refusal::BadRequest);
        assert!(
            parse_request(b"GET / HTTP/1.1\r\nHost: x\r\nX-Y_z.1~: a\tb\r\n\r\n", 8192).is_ok()
        );
    }

    #[test]
    fn paths_never_climb_and_decode_once() {
        assert_eq!(
            request_path("/a/b.txt?x=1").unwrap(),
            PathBuf::from("a/b.txt")
        );
        assert_eq!(
            request_path("/dir/").unwrap(),
            PathBuf::from("dir/index.html")
        );
        assert_eq!(request_path("/./a//b").unwrap(), PathBuf::from("a/b"));
        assert_eq!(request_path("/a%20b").unwrap(), PathBuf::from("a b"));
        assert_eq!(request_path("/%2e%2e/etc/passwd"), Err(Refusal::Forbidden));
        assert_eq!(request_path("/a/../../x"), Err(Refusal::Forbidden));
        assert_eq!(request_path("/a%00b"), Err(Refusal::BadRequest));
        assert_eq!(request_path("/a%zz"), Err(Refusal::BadRequest));
        assert_eq!(request_path("x"), Err(Refusal::BadRequest));
        assert_eq!(
            request_path("/%252e%252e/x").unwrap(),
            PathBuf::from("%2e%2e/x")
        );
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range(None, 100), Span::Whole);
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Span::Part(0, 10));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Span::Part(90, 100));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Span::Part(90, 100));
        assert_eq!(parse_range(Some("bytes=-500"), 100), Span::Part(0, 100));
        assert_eq!(parse_range(Some("bytes=50-500"), 100), Span::Part(50, 100));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Span::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 100), Span::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Span::Whole);
        assert_eq!(parse_range(Some("bytes=9-3"), 100), Span::Whole);
        assert_eq!(parse_range(Some("items=0-1"), 100), Span::Whole);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Span::Unsatisfiable);
    }

    #[test]
    fn requests_parse_pipelined_and_refuse_bodies_and_junk() {
        let two = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.0\r\n\r\n";
        let (first, used) = parse_request(two, 8192).unwrap().unwrap();
        assert_eq!(
            (
                first.method.as_str(),
                first.target.as_str(),
                first.keep_alive
            ),
            ("GET", "/a", true)
        );
        let (second, _) = parse_request(&two[used..], 8192).unwrap().unwrap();
        assert_eq!((second.method.as_str(), second.keep_alive), ("HEAD", false));
        assert!(parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n", 8192)
            .unwrap()
            .is_none());
        let bad = |req: &[u8]| parse_request(req, 8192).unwrap_err();
        assert_eq!(bad(b"GET /\r\n\r\n"), Refusal::BadRequest);
        assert_eq!(bad(b"GET / HTTP/2.0\r\n\r\n"), Refusal::VersionNotSupported);
        assert_eq!(
            bad(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Refusal::BadRequest
        );
        assert_eq!(
            bad(b"GET / HTTP/1.1\r\nHost: x\r\nHost : x\r\n\r\n"),
            Refusal::BadRequest
        );
        assert_eq!(
            parse_request(&[b'a'; 9000], 8192).unwrap_err(),
            Refusal::HeaderTooLarge
        );
    }

    fn parse(req: &[u8]) -> Result<Request, Refusal> {
        parse_request(req, 8192).map(|r| r.expect("a whole head").0)
    }

    #[test]
    fn an_http_1_1_request_without_one_host_is_400_and_http_1_0_needs_none() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n\r\n").unwrap_err(),
            Refusal::BadRequest
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").unwrap_err(),
            Refusal::BadRequest
        );
        assert!(parse(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").is_ok());
        assert!(parse(b"GET / HTTP/1.0\r\n\r\n").is_ok());
    }

    #[test]
    fn absolute_form_targets_name_the_same_file_as_origin_form() {
        let req = parse(b"GET http://example.com:8080/sub/a.txt?x=1 HTTP/1.1\r\nHost: x\r\n\r\n");
        let path = request_path(&req.unwrap().target).unwrap();
        assert_eq!(path, PathBuf::from("sub/a.txt"));
        assert_eq!(
            request_path("HTTP://host").unwrap(),
            PathBuf::from("index.html")
        );
        assert_eq!(target_path("https://h/d"), "/d");
        assert_eq!(request_path("http://h/../x"), Err(Refusal::Forbidden));
    }

    #[test]
    fn a_get_with_a_content_length_body_is_accepted_and_says_how_much_to_drop() {
        let req = parse(b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello").unwrap();
        assert_eq!(req.body_length, 5);
        let huge = b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\n";
        assert_eq!(parse(huge).unwrap().body_length, u64::MAX);
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n",
        ] {
            assert_eq!(
                parse(bad).unwrap_err(),
                Refusal::BadRequest,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn http_1_0_keep_alive_is_kept_and_echoed() {
        let req = parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap();
        assert!(req.keep_alive && req.keep_alive_asked);
        let req = parse(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert!(req.keep_alive && !req.keep_alive_asked);
        let head = Head {
            keep_alive: true,
            ..head(200)
        };
        assert!(head.render().contains("\r\nConnection: keep-alive\r\n"));
    }

    fn head(status: u16) -> Head<'static> {
        Head {
            status,
            date: "Sun, 06 Nov 1994 08:49:37 GMT",
            length: 7,
            content_type: "text/plain",
            last_modified: None,
            content_range: None,
            etag: Some("W/\"7-0\""),
            location: None,
            close: false,
            keep_alive: false,
            allow: false,
        }
    }

    #[test]
    fn a_304_has_no_content_length_and_errors_offer_no_ranges() {
        let not_modified = head(304).render();
        assert!(!not_modified.contains("Content-Length"), "{not_modified}");
        assert!(not_modified.contains("\r\nETag: W/\"7-0\"\r\n"));
        for status in [400, 403, 404, 405, 416, 503] {
            let text = head(status).render();
            assert!(!text.contains("Accept-Ranges"), "{text}");
        }
        for status in [200, 206] {
            assert!(head(status)
                .render()
                .contains("\r\nAccept-Ranges: bytes\r\n"));
        }
    }

    #[test]
    fn etags_are_weak_and_compared_weakly_by_if_none_match() {
        let tag = etag(27, 0x6000_0000);
        assert_eq!(tag, "W/\"1b-60000000\"");
        assert!(none_match(&tag, &tag));
        assert!(none_match("\"x\", \"1b-60000000\"", &tag));
        assert!(none_match(" * ", &tag));
        assert!(!none_match("W/\"1b-60000001\"", &tag));
    }

    #[test]
    fn if_range_holds_for_the_exact_date_only_and_never_for_a_weak_tag() {
        let modified = 784_111_777;
        let tag = etag(27, modified);
        assert!(range_holds(&http_date(modified), &tag, Some(modified)));
        assert!(!range_holds(&http_date(modified - 1), &tag, Some(modified)));
        assert!(!range_holds(&http_date(modified + 1), &tag, Some(modified)));
        assert!(!range_holds("garbage", &tag, Some(modified)));
        // Strong comparison (RFC 9110 §13.1.5): a weak tag, even the same, never holds.
        assert!(!range_holds(&tag, &tag, Some(modified)));
        assert!(!range_holds("\"1b-2ebc4da1\"", &tag, Some(modified)));
    }

    #[test]
    fn common_media_and_font_types_are_named() {
        let cases = [
            ("a.mp4", "video/mp4"),
            ("a.webm", "video/webm"),
            ("a.mp3", "audio/mpeg"),
            ("a.ogg", "audio/ogg"),
            ("a.wav", "audio/wav"),
            ("favicon.ico", "image/x-icon"),
            ("feed.xml", "text/xml"),
            ("f.woff", "font/woff"),
            ("f.WOFF2", "font/woff2"),
            ("m.wasm", "application/wasm"),
            ("i.avif", "image/avif"),
            ("i.webp", "image/webp"),
            ("d.json", "application/json"),
            ("d.pdf", "application/pdf"),
        ];
        for (name, want) in cases {
            assert_eq!(content_type(std::path::Path::new(name)), want, "{name}");
        }
    }

    #[test]
    fn access_log_times_are_in_the_common_log_format() {
        assert_eq!(log_date(784_111_777), "06/Nov/1994:08:49:37 +0000");
    }
}
