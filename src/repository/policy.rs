//! Which snapshots a retention policy keeps: restic's rules (`--keep-last`,
//! `-hourly`, `-daily`, `-weekly`, `-monthly`, `-yearly`, `--keep-within`,
//! `--keep-tag`) plus `--keep-within-{hourly,daily,weekly,monthly,yearly}`,
//! which keep the newest snapshot of every hour, day, week, month or year
//! within a span before the group's newest snapshot. The seed's promise,
//! daily for 90 days and monthly for 6 years, is
//! `--keep-within-daily 90d --keep-within-monthly 6y`.
//!
//! Everything is in UTC: a day runs from 00:00:00 to 23:59:59 UTC, weeks
//! are ISO weeks (Monday to Sunday), and spans count back in calendar
//! units from the newest snapshot of the group (not from now), as restic
//! does: `6y` before 2026-03-31 is 2020-03-31, and before 2024-02-29 it is
//! 2018-02-28.

use jiff::civil::DateTime;
use jiff::{Span, Timestamp, tz::TimeZone};

/// A span of `--keep-within*`: years, months, days, hours (`6y`, `90d`,
/// `1y6m`, `36h`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Within {
    pub years: i64,
    pub months: i64,
    pub days: i64,
    pub hours: i64,
}

impl Within {
    /// Parses `1y2m3d4h` (any of the four, each once, in that order).
    pub fn parse(s: &str) -> Option<Within> {
        let mut w = Within::default();
        let mut rest = s;
        let mut last = 0;
        if s.is_empty() {
            return None;
        }
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > 6 {
                return None;
            }
            let n: i64 = rest[..digits].parse().ok()?;
            let unit = rest[digits..].chars().next()?;
            let (order, slot) = match unit {
                'y' => (1, &mut w.years),
                'm' => (2, &mut w.months),
                'd' => (3, &mut w.days),
                'h' => (4, &mut w.hours),
                _ => return None,
            };
            if order <= last {
                return None;
            }
            last = order;
            *slot = n;
            rest = &rest[digits + 1..];
        }
        Some(w)
    }

    /// The earliest time within this span before `newest` (in UTC, by the
    /// calendar, clamped to the month's end as restic does).
    pub fn cutoff(&self, newest: i64) -> i64 {
        let Ok(ts) = Timestamp::from_second(newest) else {
            return i64::MIN;
        };
        let dt = TimeZone::UTC.to_datetime(ts);
        let span = Span::new()
            .years(-self.years)
            .months(-self.months)
            .days(-self.days)
            .hours(-self.hours);
        dt.checked_add(span)
            .ok()
            .and_then(|d| TimeZone::UTC.to_timestamp(d).ok())
            .map_or(i64::MIN, |t| t.as_second())
    }
}

impl std::fmt::Display for Within {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut any = false;
        for (n, u) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n != 0 {
                write!(f, "{n}{u}")?;
                any = true;
            }
        }
        if !any {
            f.write_str("0d")?;
        }
        Ok(())
    }
}

/// A retention policy. A count of -1 is unlimited.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub last: Option<i64>,
    pub hourly: Option<i64>,
    pub daily: Option<i64>,
    pub weekly: Option<i64>,
    pub monthly: Option<i64>,
    pub yearly: Option<i64>,
    pub within: Option<Within>,
    pub within_hourly: Option<Within>,
    pub within_daily: Option<Within>,
    pub within_weekly: Option<Within>,
    pub within_monthly: Option<Within>,
    pub within_yearly: Option<Within>,
    pub tags: Vec<String>,
}

impl Policy {
    /// Whether the policy keeps nothing at all (then `forget` refuses, as
    /// restic does, instead of removing every snapshot).
    pub fn is_empty(&self) -> bool {
        self.last.is_none()
            && self.hourly.is_none()
            && self.daily.is_none()
            && self.weekly.is_none()
            && self.monthly.is_none()
            && self.yearly.is_none()
            && self.within.is_none()
            && self.within_hourly.is_none()
            && self.within_daily.is_none()
            && self.within_weekly.is_none()
            && self.within_monthly.is_none()
            && self.within_yearly.is_none()
            && self.tags.is_empty()
    }
}

/// What the policy needs of a snapshot.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Seconds since the epoch: what the buckets count in.
    pub time: i64,
    /// The nanoseconds of the time: which of two snapshots of the same
    /// second is newer.
    pub nsec: u32,
    pub tags: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bucket {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Bucket {
    /// The bucket a time falls in, as one number.
    fn of(self, time: i64) -> i64 {
        let dt: DateTime = match Timestamp::from_second(time) {
            Ok(ts) => TimeZone::UTC.to_datetime(ts),
            Err(_) => return time,
        };
        let (y, m, d, h) = (
            dt.year() as i64,
            dt.month() as i64,
            dt.day() as i64,
            dt.hour() as i64,
        );
        match self {
            Bucket::Hour => ((y * 100 + m) * 100 + d) * 100 + h,
            Bucket::Day => (y * 100 + m) * 100 + d,
            Bucket::Week => {
                let iso = dt.date().iso_week_date();
                iso.year() as i64 * 100 + iso.week() as i64
            }
            Bucket::Month => y * 100 + m,
            Bucket::Year => y,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Bucket::Hour => "hourly",
            Bucket::Day => "daily",
            Bucket::Week => "weekly",
            Bucket::Month => "monthly",
            Bucket::Year => "yearly",
        }
    }
}

/// For each snapshot of one group (any order), the reasons the policy
/// keeps it; an empty list means it is removed.
pub fn apply(policy: &Policy, snapshots: &[Candidate]) -> Vec<Vec<String>> {
    let mut order: Vec<usize> = (0..snapshots.len()).collect();
    // Newest first, to the nanosecond; equal times by position, so the
    // result is stable.
    let at = |i: usize| (snapshots[i].time, snapshots[i].nsec);
    order.sort_by(|a, b| at(*b).cmp(&at(*a)).then(a.cmp(b)));
    let mut reasons = vec![Vec::new(); snapshots.len()];
    let Some(newest) = order.first().map(|i| snapshots[*i].time) else {
        return reasons;
    };
    if let Some(n) = policy.last {
        for (rank, i) in order.iter().enumerate() {
            if n < 0 || (rank as i64) < n {
                reasons[*i].push("last".to_string());
            }
        }
    }
    let counted = [
        (policy.hourly, Bucket::Hour),
        (policy.daily, Bucket::Day),
        (policy.weekly, Bucket::Week),
        (policy.monthly, Bucket::Month),
        (policy.yearly, Bucket::Year),
    ];
    for (count, bucket) in counted {
        let Some(mut left) = count else { continue };
        let mut last = None;
        for i in &order {
            if left == 0 {
                break;
            }
            let b = bucket.of(snapshots[*i].time);
            if last != Some(b) {
                reasons[*i].push(bucket.name().to_string());
                last = Some(b);
                if left > 0 {
                    left -= 1;
                }
            }
        }
    }
    if let Some(w) = policy.within {
        let cutoff = w.cutoff(newest);
        for i in &order {
            if snapshots[*i].time >= cutoff {
                reasons[*i].push(format!("within {w}"));
            }
        }
    }
    let within = [
        (policy.within_hourly, Bucket::Hour),
        (policy.within_daily, Bucket::Day),
        (policy.within_weekly, Bucket::Week),
        (policy.within_monthly, Bucket::Month),
        (policy.within_yearly, Bucket::Year),
    ];
    for (w, bucket) in within {
        let Some(w) = w else { continue };
        let cutoff = w.cutoff(newest);
        let mut last = None;
        for i in &order {
            let t = snapshots[*i].time;
            if t < cutoff {
                break;
            }
            let b = bucket.of(t);
            if last != Some(b) {
                reasons[*i].push(format!("{} within {w}", bucket.name()));
                last = Some(b);
            }
        }
    }
    if !policy.tags.is_empty() {
        for i in &order {
            if snapshots[*i].tags.iter().any(|t| policy.tags.contains(t)) {
                reasons[*i].push("tagged".to_string());
            }
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_second()
    }

    fn kept(policy: &Policy, times: &[&str]) -> Vec<String> {
        let c: Vec<Candidate> = times
            .iter()
            .map(|t| Candidate {
                time: at(t),
                nsec: 0,
                tags: Vec::new(),
            })
            .collect();
        let r = apply(policy, &c);
        times
            .iter()
            .zip(r)
            .filter(|(_, r)| !r.is_empty())
            .map(|(t, _)| t.to_string())
            .collect()
    }

    #[test]
    fn spans_parse_in_order_and_count_back_by_the_calendar() {
        assert_eq!(
            Within::parse("90d"),
            Some(Within {
                days: 90,
                ..Within::default()
            })
        );
        assert_eq!(
            Within::parse("1y6m2d12h"),
            Some(Within {
                years: 1,
                months: 6,
                days: 2,
                hours: 12
            })
        );
        for bad in ["", "d", "5", "1d1y", "1d1d", "1w", "-1d", "1.5d"] {
            assert_eq!(Within::parse(bad), None, "{bad}");
        }
        let six_years = Within::parse("6y").unwrap();
        assert_eq!(
            six_years.cutoff(at("2026-03-31T12:00:00Z")),
            at("2020-03-31T12:00:00Z")
        );
        assert_eq!(
            six_years.cutoff(at("2024-02-29T00:30:00Z")),
            at("2018-02-28T00:30:00Z")
        );
        let month = Within::parse("1m").unwrap();
        assert_eq!(
            month.cutoff(at("2026-03-31T00:00:00Z")),
            at("2026-02-28T00:00:00Z")
        );
        assert_eq!(Within::parse("90d").unwrap().to_string(), "90d");
    }

    #[test]
    fn each_bucket_keeps_its_newest_snapshot() {
        let times = [
            "2026-01-01T00:00:01Z",
            "2025-12-31T23:59:59Z",
            "2025-12-31T12:00:00Z",
            "2025-12-30T00:00:00Z",
        ];
        let daily = Policy {
            daily: Some(2),
            ..Policy::default()
        };
        assert_eq!(
            kept(&daily, &times),
            ["2026-01-01T00:00:01Z", "2025-12-31T23:59:59Z"]
        );
        let yearly = Policy {
            yearly: Some(-1),
            ..Policy::default()
        };
        assert_eq!(
            kept(&yearly, &times),
            ["2026-01-01T00:00:01Z", "2025-12-31T23:59:59Z"]
        );
        // 2025-12-29 (a Monday) starts ISO week 2026-W01, as does 2026-01-01.
        let weekly = Policy {
            weekly: Some(1),
            ..Policy::default()
        };
        assert_eq!(kept(&weekly, &times), ["2026-01-01T00:00:01Z"]);
        let last = Policy {
            last: Some(3),
            ..Policy::default()
        };
        assert_eq!(kept(&last, &times).len(), 3);
    }

    #[test]
    fn within_daily_keeps_a_day_each_within_the_span_of_the_newest() {
        let times = [
            "2026-04-01T00:00:10Z",
            "2026-04-01T00:00:05Z",
            "2026-03-31T23:59:59Z",
            "2026-01-01T00:00:10Z",
            "2026-01-01T00:00:00Z",
        ];
        let p = Policy {
            within_daily: Within::parse("90d"),
            ..Policy::default()
        };
        // 90 days before 2026-04-01T00:00:10 is 2026-01-01T00:00:10.
        assert_eq!(
            kept(&p, &times),
            [
                "2026-04-01T00:00:10Z",
                "2026-03-31T23:59:59Z",
                "2026-01-01T00:00:10Z"
            ]
        );
    }

    #[test]
    fn of_two_snapshots_in_one_second_the_later_is_the_newest() {
        let policy = Policy {
            last: Some(1),
            ..Policy::default()
        };
        let c = |nsec| Candidate {
            time: at("2026-11-26T01:30:00Z"),
            nsec,
            tags: Vec::new(),
        };
        assert_eq!(
            apply(&policy, &[c(900), c(100)]),
            [vec!["last".to_string()], vec![]]
        );
        assert_eq!(
            apply(&policy, &[c(100), c(900)]),
            [vec![], vec!["last".to_string()]]
        );
    }
}
