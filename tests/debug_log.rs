//! The debug log names each file request's operation and, where the request has one, its
//! path (as the README promises), so a slow request can be traced to its file.

use std::fs::OpenOptions;
use std::sync::Mutex;

use aioloop::{AioFile, Dir, EventBase};

mod common;
use common::data_file;

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Debug
    }
    fn log(&self, record: &log::Record) {
        if record.target().starts_with("aioloop") {
            LINES.lock().unwrap().push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

fn logged_line(needle: &str) -> bool {
    LINES.lock().unwrap().iter().any(|l| l.contains(needle))
}

#[test]
fn the_debug_log_names_each_file_request_and_its_path() {
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Debug);
    let (path, _) = data_file("debug-log", 8192);
    let shown = path.display().to_string();
    let file = AioFile::open(&path, false).unwrap();
    let mut base = EventBase::<()>::new().unwrap();
    base.read_at(&file, 4096, vec![0; 512], |_, _, _, n| {
        assert_eq!(n.unwrap(), 512)
    })
    .unwrap();
    base.fsync(&file, |_, _, r| r.unwrap()).unwrap();
    base.stat(&path, |_, _, r| assert!(r.is_ok())).unwrap();
    base.open(&path, OpenOptions::new().read(true), |_, _, r| {
        assert!(r.is_ok())
    })
    .unwrap();
    let dir = Dir::open(path.parent().unwrap()).unwrap();
    let name = path.file_name().unwrap().to_owned();
    base.open_beneath(&dir, &name, false, |_, _, r| assert!(r.is_ok()))
        .unwrap();
    common::finish(&mut base, &mut ());

    let all = LINES.lock().unwrap().join("\n");
    assert!(logged_line(&format!("read of {shown} (fd")), "{all}");
    assert!(logged_line(&format!("fsync of {shown} (fd")), "{all}");
    assert!(logged_line(&format!("stat {shown}: job")), "{all}");
    assert!(logged_line(&format!("open {shown}: job")), "{all}");
    let beneath = format!(
        "open {} beneath {}",
        name.to_string_lossy(),
        dir.path().display()
    );
    assert!(logged_line(&beneath), "{all}");
}
