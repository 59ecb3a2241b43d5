//! The process's time zone, which nginx's log times follow.
//!
//! nginx formats its log times with `localtime_r`, in the process's zone.
//! The zone is process-wide: an app that sets it (Django sets `TZ` from
//! `TIME_ZONE` and calls `time.tzset()` at import) moves this worker's log
//! times, and only this worker's: the master keeps the zone it started
//! with. Python's `time` and `datetime` must keep the app's zone, so the
//! module does not undo it; it says so, once per zone and worker, at `warn`,
//! with the zone and the remedy.
//!
//! When it looks: after Python's start-up (should it apply the worker's
//! `TZ`, e.g. one from nginx's `env TZ=...;`, which the master never
//! applies; 3.11's does not), after each app's import, and after a request
//! once nginx's log offset has changed. nginx's thread only publishes that offset (an atomic, no
//! GIL); the comparison runs on a pool thread, with the GIL held, which
//! also makes reading `TZ` safe against Python's `os.environ` writes.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use pyo3::Python;

use crate::message::{Hub, LogLevel};

/// Half a year, in seconds: the second instant a zone is looked at.
const HALF_YEAR: i64 = 182 * 24 * 3600;

/// A zone as `localtime_r` applies it at two instants half a year apart:
/// UTC offset (seconds) and abbreviation at each. Two zones that agree
/// on both agree on the log times of that year, daylight saving included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone([(i64, String); 2]);

impl Zone {
    /// The process's zone at `instants`. Thread-safe: glibc's
    /// `localtime_r` holds its time zone lock while it reads the zone.
    fn at(instants: [libc::time_t; 2]) -> Zone {
        Zone(instants.map(|t| {
            // SAFETY: an all-zero `tm` is a valid value to be overwritten.
            let mut tm: libc::tm = unsafe { std::mem::zeroed() };
            // SAFETY: `t` and `tm` are valid for the call.
            let ok = !unsafe { libc::localtime_r(&t, &mut tm) }.is_null();
            let abbr = if ok && !tm.tm_zone.is_null() {
                // SAFETY: a NUL-terminated abbreviation in glibc's zone
                // data, which it never frees.
                unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) }
                    .to_string_lossy()
                    .into_owned()
            } else {
                String::new()
            };
            (if ok { tm.tm_gmtoff } else { 0 }, abbr)
        }))
    }

    /// The UTC offset at the first instant, in minutes (as nginx keeps it).
    fn offset_minutes(&self) -> i64 {
        self.0[0].0 / 60
    }
}

/// `CST (UTC-06:00) / CDT (UTC-05:00)`; one part for a zone without
/// daylight saving time.
impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = |f: &mut fmt::Formatter<'_>, (off, abbr): &(i64, String)| {
            let sign = if *off < 0 { '-' } else { '+' };
            let m = off.unsigned_abs() / 60;
            let utc = format!("UTC{sign}{:02}:{:02}", m / 60, m % 60);
            if abbr.is_empty() || abbr.starts_with(['+', '-']) {
                f.write_str(&utc)
            } else {
                write!(f, "{abbr} ({utc})")
            }
        };
        part(f, &self.0[0])?;
        if self.0[1] != self.0[0] {
            f.write_str(" / ")?;
            part(f, &self.0[1])?;
        }
        Ok(())
    }
}

/// Where a change of zone was seen, for the log line.
pub enum Seen<'a> {
    /// After Python's start-up, before any app was imported.
    PythonStart,
    /// After the import of this app.
    Import(&'a str),
    /// After a request.
    Request,
}

/// The worker's zone as it started (its master's) and the zones reported
/// since. One per worker, made before Python starts.
pub struct ZoneWatch {
    instants: [libc::time_t; 2],
    start: Zone,
    /// `TZ` when the worker started.
    start_tz: Option<String>,
    /// The UTC offset of nginx's log times (minutes), as nginx's thread
    /// last published it.
    log_offset: AtomicI64,
    /// `log_offset` as pool threads last compared it.
    seen_offset: AtomicI64,
    /// Zones reported already (the start zone is never reported).
    reported: Mutex<Vec<Zone>>,
}

impl ZoneWatch {
    /// The zone now, as the worker's master left it. Call before Python
    /// starts: `TZ` is read, and nothing writes the environment yet.
    pub fn new() -> ZoneWatch {
        // SAFETY: time(NULL) only returns the time.
        let now = unsafe { libc::time(std::ptr::null_mut()) };
        let instants = [now, now + HALF_YEAR as libc::time_t];
        let start = Zone::at(instants);
        let offset = start.offset_minutes();
        ZoneWatch {
            instants,
            start,
            start_tz: tz_var(),
            log_offset: AtomicI64::new(offset),
            seen_offset: AtomicI64::new(offset),
            reported: Mutex::new(Vec::new()),
        }
    }

    /// nginx's thread: the UTC offset (minutes) its cached log times use.
    /// Cheap enough for every request: a load, and a store when it changed.
    pub fn set_log_offset(&self, minutes: i64) {
        if self.log_offset.load(Ordering::Relaxed) != minutes {
            self.log_offset.store(minutes, Ordering::Release);
        }
    }

    /// Pool thread, after a request: compares the zone again only if
    /// nginx's log offset changed since the last look (two loads).
    pub fn after_request(&self, py: Python<'_>, hub: &Hub) {
        if self.log_offset.load(Ordering::Acquire) != self.seen_offset.load(Ordering::Relaxed) {
            self.check(py, hub, Seen::Request);
        }
    }

    /// With the GIL held (`py`): reports the zone if it differs from the
    /// start zone and was not reported yet.
    pub fn check(&self, _py: Python<'_>, hub: &Hub, seen: Seen<'_>) {
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        self.seen_offset
            .store(self.log_offset.load(Ordering::Acquire), Ordering::Relaxed);
        let zone = Zone::at(self.instants);
        if zone == self.start || reported.contains(&zone) {
            return;
        }
        // Python writes the environment with the GIL held, as we hold it.
        let tz = tz_var();
        hub.log(
            None,
            LogLevel::Warn,
            self.message(&zone, tz.as_deref(), seen),
        );
        reported.push(zone);
    }

    fn message(&self, zone: &Zone, tz: Option<&str>, seen: Seen<'_>) -> String {
        let name = match tz {
            Some(tz) => format!("\"{tz}\", {zone},"),
            None => format!("the system's zone (no TZ), {zone},"),
        };
        let who = match seen {
            Seen::PythonStart => "Python's start-up".to_string(),
            Seen::Import(app) => format!("app \"{app}\""),
            Seen::Request => "a request".to_string(),
        };
        // The worker had this TZ from the start, yet its master logs in
        // another zone: only nginx's "env" directive does that.
        let env = if tz.is_some() && tz == self.start_tz.as_deref() {
            " (nginx's \"env\" directive sets TZ for the workers only)"
        } else {
            ""
        };
        let remedy = match tz {
            Some(tz) => format!("start nginx with TZ={tz} in its environment"),
            None => "start nginx without TZ in its environment".to_string(),
        };
        format!(
            "wsgi: {who} changed the time zone to {name} and this worker's log times with it; the master process logs in {}{env}: {remedy} so that they agree",
            self.start
        )
    }
}

impl Default for ZoneWatch {
    fn default() -> ZoneWatch {
        ZoneWatch::new()
    }
}

/// `TZ`, if set. Callers make sure no other thread writes the
/// environment meanwhile (the GIL, or no other thread yet).
fn tz_var() -> Option<String> {
    std::env::var_os("TZ").map(|v| v.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_display_with_and_without_daylight_saving() {
        let z = Zone([(-6 * 3600, "CST".into()), (-5 * 3600, "CDT".into())]);
        assert_eq!(z.to_string(), "CST (UTC-06:00) / CDT (UTC-05:00)");
        let z = Zone([(0, "UTC".into()), (0, "UTC".into())]);
        assert_eq!(z.to_string(), "UTC (UTC+00:00)");
        let z = Zone([(19800, "IST".into()), (19800, "IST".into())]);
        assert_eq!(z.to_string(), "IST (UTC+05:30)");
        // numeric abbreviations (tzdata's "-03") say nothing more
        let z = Zone([(-3 * 3600, "-03".into()), (-3 * 3600, "-03".into())]);
        assert_eq!(z.to_string(), "UTC-03:00");
    }
}
