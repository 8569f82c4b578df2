//! The `time_window` rule: days of the week and a time of day in an IANA time zone.
//!
//! `{"timezone":"Europe/Berlin","days":["mon","tue"],"start":"08:00","end":"18:00"}`: a window
//! opens at `start` (inclusive) on each listed day and closes at `end` (exclusive) on the same
//! day, or on the next day when `end` is before `start` (an overnight window: `days` names the
//! day on which the window starts, so a Monday 22:00–06:00 window covers Tuesday 03:00).
//!
//! Wall-clock times are turned into instants by jiff with the "compatible" rule (the RFC 5545
//! and Temporal default): a time that a DST gap skips is read as the same distance past the
//! gap, and a time that a DST fold repeats is read as its first occurrence. The zone comes from
//! the tz database bundled into the binary, never from the machine, so every replica decides
//! alike. This module does not read the clock: the instant is a parameter.

use std::sync::OnceLock;

use jiff::civil::{Date, Time};
use jiff::tz::{TimeZone, TimeZoneDatabase};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::PolicyError;
use crate::wire::TimeWindowInput;

/// The day names of the wire format, Monday first (jiff's Monday-zero offset is the index).
const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// The bundled tz database, opened once.
fn tzdb() -> &'static TimeZoneDatabase {
    static DB: OnceLock<TimeZoneDatabase> = OnceLock::new();
    DB.get_or_init(TimeZoneDatabase::bundled)
}

/// A validated time window. Stored as JSON in the same shape as its input
/// ([`TimeWindowInput`]), and validated again when read back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TimeWindowInput", into = "TimeWindowInput")]
pub struct TimeWindow {
    /// The canonical IANA name of `zone` (as the database spells it).
    zone_name: String,
    /// The zone, looked up once.
    zone: TimeZone,
    /// Whether a window starts on each day, Monday first.
    days: [bool; 7],
    /// Opening time, inclusive.
    start: Time,
    /// Closing time, exclusive; before `start` for an overnight window.
    end: Time,
}

impl TimeWindow {
    /// Validates a time window; error fields are relative (`timezone`, `days[2]`, `start`, …).
    pub fn parse(input: &TimeWindowInput) -> Result<TimeWindow, PolicyError> {
        let zone = lookup_zone(&input.timezone)?;
        let zone_name = zone
            .iana_name()
            .map(str::to_owned)
            .ok_or_else(|| PolicyError::new("timezone", "is not an IANA time zone name"))?;
        let days = match &input.days {
            None => [true; 7],
            Some(list) => parse_days(list)?,
        };
        let start = parse_hh_mm(&input.start).map_err(|m| PolicyError::new("start", m))?;
        let end = parse_hh_mm(&input.end).map_err(|m| PolicyError::new("end", m))?;
        if start == end {
            return Err(PolicyError::new(
                "end",
                "must differ from start (an empty window never opens; omit time_window for always)",
            ));
        }
        Ok(TimeWindow {
            zone_name,
            zone,
            days,
            start,
            end,
        })
    }

    /// The IANA name of the window's zone, e.g. `Europe/Berlin`.
    pub fn timezone(&self) -> &str {
        &self.zone_name
    }

    /// The days on which a window starts (`mon` … `sun`, in week order).
    pub fn days(&self) -> Vec<&'static str> {
        DAY_NAMES
            .iter()
            .zip(self.days)
            .filter_map(|(name, on)| on.then_some(*name))
            .collect()
    }

    /// Opening time of day (inclusive).
    pub fn start(&self) -> Time {
        self.start
    }

    /// Closing time of day (exclusive); before [`TimeWindow::start`] for an overnight window.
    pub fn end(&self) -> Time {
        self.end
    }

    /// Whether `now` lies inside a window: one that started on the local date of `now`, or (for
    /// an overnight window) on the day before.
    pub fn contains(&self, now: Timestamp) -> bool {
        let today = self.zone.to_datetime(now).date();
        [Some(today), today.yesterday().ok()]
            .into_iter()
            .flatten()
            .filter_map(|day| self.window_starting_on(day))
            .any(|(open, close)| open <= now && now < close)
    }

    /// The instants `[open, close)` of the window that starts on `day`, if one does. `None`
    /// also at the edges of jiff's supported range, where no retrieval can happen anyway.
    fn window_starting_on(&self, day: Date) -> Option<(Timestamp, Timestamp)> {
        let index = usize::try_from(day.weekday().to_monday_zero_offset()).ok()?;
        if !self.days.get(index).copied().unwrap_or(false) {
            return None;
        }
        let open = self
            .zone
            .to_ambiguous_timestamp(day.to_datetime(self.start))
            .compatible()
            .ok()?;
        let close_day = if self.end < self.start {
            day.tomorrow().ok()?
        } else {
            day
        };
        let close = self
            .zone
            .to_ambiguous_timestamp(close_day.to_datetime(self.end))
            .compatible()
            .ok()?;
        Some((open, close))
    }
}

impl TryFrom<TimeWindowInput> for TimeWindow {
    type Error = PolicyError;

    /// Validates a stored window again when it is read back.
    fn try_from(input: TimeWindowInput) -> Result<Self, Self::Error> {
        TimeWindow::parse(&input).map_err(|e| e.prefixed("time_window"))
    }
}

impl From<TimeWindow> for TimeWindowInput {
    /// The stored shape: the input shape with the canonical zone name and all days listed.
    fn from(window: TimeWindow) -> Self {
        TimeWindowInput {
            days: Some(window.days().into_iter().map(str::to_owned).collect()),
            start: format_hh_mm(window.start),
            end: format_hh_mm(window.end),
            timezone: window.zone_name,
        }
    }
}

/// Looks up an IANA zone name (without regard to ASCII case) in the bundled database.
fn lookup_zone(name: &str) -> Result<TimeZone, PolicyError> {
    let field = "timezone";
    if name.is_empty() {
        return Err(PolicyError::new(
            field,
            "must name an IANA time zone, e.g. Europe/Berlin",
        ));
    }
    // Etc/Unknown is jiff's name for "no idea"; it behaves as UTC and would hide a mistake.
    if name.eq_ignore_ascii_case("Etc/Unknown") {
        return Err(PolicyError::new(field, "`Etc/Unknown` is not a time zone"));
    }
    tzdb().get(name).map_err(|_| {
        PolicyError::new(
            field,
            format!("`{name}` is not a known IANA time zone, e.g. Europe/Berlin"),
        )
    })
}

/// Parses the list of days: `mon` … `sun` (any ASCII case), at least one, none twice.
fn parse_days(list: &[String]) -> Result<[bool; 7], PolicyError> {
    if list.is_empty() {
        return Err(PolicyError::new(
            "days",
            "must list at least one day (omit it for every day)",
        ));
    }
    let mut days = [false; 7];
    for (i, name) in list.iter().enumerate() {
        let field = format!("days[{i}]");
        let index = DAY_NAMES
            .iter()
            .position(|d| d.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                PolicyError::new(
                    field.clone(),
                    format!("`{name}` is not a day; use mon, tue, wed, thu, fri, sat or sun"),
                )
            })?;
        if days[index] {
            return Err(PolicyError::new(field, format!("`{name}` is listed twice")));
        }
        days[index] = true;
    }
    Ok(days)
}

/// Parses exactly `HH:MM`, 00:00 to 23:59.
fn parse_hh_mm(text: &str) -> Result<Time, String> {
    let wrong = || format!("`{text}` is not a time of day in HH:MM form, 00:00 to 23:59");
    let b = text.as_bytes();
    let two_digits = |hi: u8, lo: u8| -> Option<i8> {
        (hi.is_ascii_digit() && lo.is_ascii_digit())
            .then(|| i8::try_from((hi - b'0') * 10 + (lo - b'0')).ok())
            .flatten()
    };
    let [h1, h2, b':', m1, m2] = b else {
        return Err(wrong());
    };
    let hour = two_digits(*h1, *h2).filter(|h| *h < 24).ok_or_else(wrong)?;
    let minute = two_digits(*m1, *m2).filter(|m| *m < 60).ok_or_else(wrong)?;
    Time::new(hour, minute, 0, 0).map_err(|_| wrong())
}

/// Formats a time of day as `HH:MM`.
fn format_hh_mm(time: Time) -> String {
    format!("{:02}:{:02}", time.hour(), time.minute())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(zone: &str, days: Option<&[&str]>, start: &str, end: &str) -> TimeWindow {
        TimeWindow::parse(&TimeWindowInput {
            timezone: zone.to_owned(),
            days: days.map(|d| d.iter().map(|s| (*s).to_owned()).collect()),
            start: start.to_owned(),
            end: end.to_owned(),
        })
        .unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn parses_times() {
        for (text, h, m) in [("00:00", 0, 0), ("08:05", 8, 5), ("23:59", 23, 59)] {
            let t = parse_hh_mm(text).unwrap();
            assert_eq!((t.hour(), t.minute()), (h, m), "{text}");
        }
        for text in [
            "8:00",
            "24:00",
            "12:60",
            "0800",
            "08:00:00",
            "ab:cd",
            "",
            " 8:00",
            "08-00",
            "+1:00",
            "１２:00",
        ] {
            assert!(parse_hh_mm(text).is_err(), "{text:?} accepted");
        }
    }

    #[test]
    fn rejects_bad_input_naming_the_field() {
        let base = TimeWindowInput {
            timezone: "Europe/Berlin".into(),
            days: None,
            start: "08:00".into(),
            end: "18:00".into(),
        };
        let cases: Vec<(TimeWindowInput, &str)> = vec![
            (
                TimeWindowInput {
                    timezone: "Mars/Olympus_Mons".into(),
                    ..base.clone()
                },
                "timezone",
            ),
            (
                TimeWindowInput {
                    timezone: "".into(),
                    ..base.clone()
                },
                "timezone",
            ),
            (
                TimeWindowInput {
                    timezone: "Etc/Unknown".into(),
                    ..base.clone()
                },
                "timezone",
            ),
            (
                TimeWindowInput {
                    timezone: "../../etc/passwd".into(),
                    ..base.clone()
                },
                "timezone",
            ),
            (
                TimeWindowInput {
                    start: "8:00".into(),
                    ..base.clone()
                },
                "start",
            ),
            (
                TimeWindowInput {
                    end: "24:00".into(),
                    ..base.clone()
                },
                "end",
            ),
            (
                TimeWindowInput {
                    end: "08:00".into(),
                    ..base.clone()
                },
                "end",
            ),
            (
                TimeWindowInput {
                    days: Some(vec![]),
                    ..base.clone()
                },
                "days",
            ),
            (
                TimeWindowInput {
                    days: Some(vec!["mon".into(), "funday".into()]),
                    ..base.clone()
                },
                "days[1]",
            ),
            (
                TimeWindowInput {
                    days: Some(vec!["mon".into(), "tue".into(), "MON".into()]),
                    ..base.clone()
                },
                "days[2]",
            ),
        ];
        for (input, field) in cases {
            let err = TimeWindow::parse(&input).unwrap_err();
            assert_eq!(err.field, field, "{input:?}: {err}");
        }
    }

    #[test]
    fn canonical_zone_name_and_days() {
        let w = window("europe/berlin", Some(&["Sun", "mon"]), "08:00", "18:00");
        assert_eq!(w.timezone(), "Europe/Berlin");
        assert_eq!(w.days(), vec!["mon", "sun"]);
        assert_eq!(window("UTC", None, "08:00", "18:00").days().len(), 7);
    }

    #[test]
    fn day_window_bounds_start_inclusive_end_exclusive() {
        // 2025-01-06 is a Monday; Berlin is UTC+1 in January.
        let w = window("Europe/Berlin", Some(&["mon"]), "08:00", "18:00");
        for (instant, want) in [
            ("2025-01-06T06:59:59Z", false),
            ("2025-01-06T07:00:00Z", true),
            ("2025-01-06T12:00:00Z", true),
            ("2025-01-06T16:59:59Z", true),
            ("2025-01-06T17:00:00Z", false),
            ("2025-01-07T07:00:00Z", false), // Tuesday
            ("2025-01-13T07:30:00Z", true),  // next Monday
        ] {
            assert_eq!(w.contains(at(instant)), want, "{instant}");
        }
    }

    #[test]
    fn overnight_window_belongs_to_the_day_it_starts() {
        // Monday 22:00 to Tuesday 06:00, UTC.
        let w = window("UTC", Some(&["mon"]), "22:00", "06:00");
        for (instant, want) in [
            ("2025-01-06T03:00:00Z", false), // Monday 03:00: the Sunday window, not listed
            ("2025-01-06T21:59:59Z", false),
            ("2025-01-06T22:00:00Z", true),
            ("2025-01-06T23:59:59Z", true),
            ("2025-01-07T00:00:00Z", true),
            ("2025-01-07T03:00:00Z", true), // Tuesday 03:00
            ("2025-01-07T05:59:59Z", true),
            ("2025-01-07T06:00:00Z", false),
            ("2025-01-07T22:30:00Z", false), // Tuesday night: not listed
            ("2025-01-08T03:00:00Z", false),
        ] {
            assert_eq!(w.contains(at(instant)), want, "{instant}");
        }
    }

    #[test]
    fn overnight_window_ending_at_midnight_and_spanning_the_week_end() {
        let w = window("UTC", Some(&["sun"]), "23:00", "00:00");
        assert!(w.contains(at("2025-01-12T23:30:00Z"))); // Sunday
        assert!(!w.contains(at("2025-01-13T00:00:00Z"))); // Monday 00:00: closed
        let w = window("UTC", Some(&["sun"]), "20:00", "04:00");
        assert!(w.contains(at("2025-01-13T03:59:00Z"))); // Monday morning, Sunday's window
    }

    #[test]
    fn follows_daylight_saving_time() {
        // Berlin: UTC+1 in winter, UTC+2 in summer. 09:00–17:00 local every day.
        let w = window("Europe/Berlin", None, "09:00", "17:00");
        assert!(w.contains(at("2025-01-15T08:00:00Z"))); // 09:00 CET
        assert!(!w.contains(at("2025-01-15T07:30:00Z"))); // 08:30 CET
        assert!(w.contains(at("2025-07-15T07:00:00Z"))); // 09:00 CEST
        assert!(!w.contains(at("2025-07-15T06:30:00Z"))); // 08:30 CEST
        assert!(!w.contains(at("2025-07-15T15:00:00Z"))); // 17:00 CEST
        assert!(w.contains(at("2025-01-15T15:00:00Z"))); // 16:00 CET
    }

    #[test]
    fn dst_gap_and_fold() {
        // 2025-03-30 in Berlin: 02:00 CET jumps to 03:00 CEST. A window opening at 02:30 opens
        // at 03:30 CEST (01:30 UTC): the compatible reading of the skipped time.
        let w = window("Europe/Berlin", Some(&["sun"]), "02:30", "04:00");
        assert!(!w.contains(at("2025-03-30T01:00:00Z"))); // 03:00 CEST
        assert!(w.contains(at("2025-03-30T01:30:00Z"))); // 03:30 CEST
        assert!(!w.contains(at("2025-03-30T02:00:00Z"))); // 04:00 CEST
                                                          // 2025-10-26 in Berlin: 03:00 CEST falls back to 02:00 CET. 01:00–02:30 closes at the
                                                          // first 02:30 (00:30 UTC).
        let w = window("Europe/Berlin", Some(&["sun"]), "01:00", "02:30");
        assert!(w.contains(at("2025-10-25T23:00:00Z"))); // 01:00 CEST
        assert!(w.contains(at("2025-10-26T00:29:00Z"))); // 02:29 CEST
        assert!(!w.contains(at("2025-10-26T00:30:00Z"))); // 02:30 CEST
        assert!(!w.contains(at("2025-10-26T01:15:00Z"))); // 02:15 CET, the second pass
                                                          // An overnight window across the autumn change lasts nine hours, not eight.
        let w = window("Europe/Berlin", Some(&["sat"]), "22:00", "06:00");
        assert!(w.contains(at("2025-10-25T20:00:00Z"))); // Sat 22:00 CEST
        assert!(w.contains(at("2025-10-26T04:59:00Z"))); // Sun 05:59 CET
        assert!(!w.contains(at("2025-10-26T05:00:00Z"))); // Sun 06:00 CET
    }

    #[test]
    fn southern_hemisphere_and_far_zones() {
        // Auckland is UTC+13 in January (summer): Monday 08:00 local is Sunday 19:00 UTC.
        let w = window("Pacific/Auckland", Some(&["mon"]), "08:00", "09:00");
        assert!(w.contains(at("2025-01-05T19:30:00Z")));
        assert!(!w.contains(at("2025-01-06T19:30:00Z")));
    }

    #[test]
    fn extreme_instants_do_not_panic() {
        let w = window("Pacific/Kiritimati", None, "22:00", "06:00");
        let _ = w.contains(Timestamp::MIN);
        let _ = w.contains(Timestamp::MAX);
        let w = window("Etc/GMT+12", None, "00:00", "23:59");
        let _ = w.contains(Timestamp::MIN);
        let _ = w.contains(Timestamp::MAX);
    }

    #[test]
    fn serde_round_trip_uses_the_input_shape() {
        let w = window("europe/berlin", Some(&["tue", "mon"]), "22:00", "06:00");
        let json = serde_json::to_value(&w).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"timezone":"Europe/Berlin","days":["mon","tue"],"start":"22:00","end":"06:00"})
        );
        let back: TimeWindow = serde_json::from_value(json).unwrap();
        assert_eq!(back, w);
        let bad = serde_json::json!({"timezone":"Nowhere/Else","start":"22:00","end":"06:00"});
        let err = serde_json::from_value::<TimeWindow>(bad).unwrap_err();
        assert!(err.to_string().contains("time_window.timezone"), "{err}");
    }
}
