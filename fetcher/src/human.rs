//! Sizes and ages as people read them: `1.2 MiB`, `3m 5s`.

use std::fmt;
use std::time::Duration;

/// A byte count in binary units with one decimal (`0 B`, `999 B`, `1.0 KiB`, `1.2 MiB`).
#[derive(Debug, Clone, Copy)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        if self.0 < 1024 {
            return f.pad(&format!("{} B", self.0));
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        // Round first, so 1023.96 KiB reads 1.0 MiB, not 1024.0 KiB.
        while (value * 10.0).round() / 10.0 >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        f.pad(&format!("{value:.1} {}", UNITS[unit]))
    }
}

/// A duration to the second, largest units first (`0s`, `42s`, `3m 5s`, `2days 1h`).
pub fn age(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        let s = |n| Size(n).to_string();
        assert_eq!(s(0), "0 B");
        assert_eq!(s(1023), "1023 B");
        assert_eq!(s(1024), "1.0 KiB");
        assert_eq!(s(1_258_291), "1.2 MiB");
        assert_eq!(s((1 << 20) - 1), "1.0 MiB");
        assert_eq!(s(5 << 30), "5.0 GiB");
        assert_eq!(s(u64::MAX), "16.0 EiB");
        assert_eq!(format!("{:>9}", Size(2048)), "  2.0 KiB");
    }

    #[test]
    fn ages_to_the_second() {
        assert_eq!(age(Duration::from_millis(1500)), "1s");
        assert_eq!(age(Duration::from_secs(185)), "3m 5s");
        assert_eq!(age(Duration::ZERO), "0s");
    }
}
