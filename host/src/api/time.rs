//! Timestamps as OME writes them: ISO 8601 with milliseconds and the UTC offset
//! (`2026-11-26T02:21:06.123+00:00`). This host writes UTC (OME writes the server's local time
//! with its offset; both parse to the same instant).

/// `ms` since the Unix epoch as OME's timestamp, in UTC.
pub fn iso8601(ms: u64) -> String {
    let (days, ms_of_day) = (ms / 86_400_000, ms % 86_400_000);
    let (y, m, d) = civil_from_days(days as i64);
    let (h, min, s, milli) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60, ms_of_day / 1000 % 60, ms_of_day % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}+00:00")
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_omes_format_in_utc() {
        assert_eq!(super::iso8601(0), "1970-01-01T00:00:00.000+00:00");
        assert_eq!(super::iso8601(951_782_400_000 + 1), "2000-02-29T00:00:00.001+00:00");
        assert_eq!(super::iso8601(1_795_659_666_123), "2026-11-26T02:21:06.123+00:00");
    }
}
