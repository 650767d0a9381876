//! What each bench hands back, and how it is printed: a table with a target
//! column and a verdict per line, or one JSON object.

use std::time::Duration;

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Meets its target.
    Pass,
    /// Misses its target (reported, not an error).
    Miss,
    /// A figure without a target.
    Info,
    /// A correctness check failed or requests failed: the run is in error.
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Miss => "MISS",
            Verdict::Info => "",
            Verdict::Fail => "FAIL",
        }
    }

    pub fn at_least(value: f64, target: f64) -> Self {
        if value >= target {
            Verdict::Pass
        } else {
            Verdict::Miss
        }
    }

    pub fn under(value: f64, target: f64) -> Self {
        if value < target {
            Verdict::Pass
        } else {
            Verdict::Miss
        }
    }

    pub fn check(ok: bool) -> Self {
        if ok {
            Verdict::Pass
        } else {
            Verdict::Fail
        }
    }
}

pub struct Row {
    pub name: String,
    pub value: String,
    pub target: String,
    pub verdict: Verdict,
}

impl Row {
    pub fn new(
        name: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
        verdict: Verdict,
    ) -> Row {
        Row {
            name: name.into(),
            value: value.into(),
            target: target.into(),
            verdict,
        }
    }

    pub fn info(name: impl Into<String>, value: impl Into<String>) -> Row {
        Row::new(name, value, "", Verdict::Info)
    }
}

/// One bench's figures: JSON for `--json`, rows for the table, and errors
/// (requests that failed, checks that did not hold).
pub struct Section {
    pub name: &'static str,
    pub json: Value,
    pub rows: Vec<Row>,
    pub errors: Vec<String>,
}

pub fn print_table(header: &[String], sections: &[Section]) {
    for line in header {
        println!("{line}");
    }
    let all: Vec<&Row> = sections.iter().flat_map(|s| s.rows.iter()).collect();
    let w_name = all
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(0)
        .max("figure".len());
    let w_value = all
        .iter()
        .map(|r| r.value.chars().count())
        .max()
        .unwrap_or(0)
        .max("measured".len());
    let w_target = all
        .iter()
        .map(|r| r.target.chars().count())
        .max()
        .unwrap_or(0)
        .max("target".len());
    println!();
    println!(
        "{:<w_name$}  {:>w_value$}  {:<w_target$}  result",
        "figure", "measured", "target"
    );
    println!("{}", "-".repeat(w_name + w_value + w_target + 12));
    for (i, section) in sections.iter().enumerate() {
        if i > 0 {
            println!();
        }
        for r in &section.rows {
            println!(
                "{:<w_name$}  {:>w_value$}  {:<w_target$}  {}",
                r.name,
                r.value,
                r.target,
                r.verdict.as_str()
            );
        }
    }
    let errors: Vec<(&str, &String)> = sections
        .iter()
        .flat_map(|s| s.errors.iter().map(move |e| (s.name, e)))
        .collect();
    if !errors.is_empty() {
        println!();
        println!("!!! THE RUN HAD ERRORS; ITS FIGURES ARE NOT TO BE TRUSTED !!!");
        for (name, e) in errors {
            println!("!!! {name}: {e}");
        }
    }
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Microseconds for a person: `412 µs`, `1.84 ms`, `2.10 s`.
pub fn fmt_us(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1_000.0)
    } else {
        format!("{:.2} s", us / 1_000_000.0)
    }
}

/// `21,345/s`
pub fn fmt_rate(per_sec: f64) -> String {
    format!("{}/s", thousands(per_sec.round() as u64))
}

pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| std::str::from_utf8(g).unwrap_or("?"))
        .collect();
    groups.join(",")
}

/// Median and max of timings.
pub fn median_max(samples: &mut [Duration]) -> (Duration, Duration) {
    if samples.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    samples.sort();
    let n = samples.len();
    let median = if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2
    };
    (median, samples[n - 1])
}

/// Rounds to 1 decimal for JSON.
pub fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_figures() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(fmt_rate(20_000.4), "20,000/s");
        assert_eq!(fmt_us(412.3), "412 µs");
        assert_eq!(fmt_us(1_840.0), "1.84 ms");
        assert_eq!(fmt_us(2_100_000.0), "2.10 s");
    }

    #[test]
    fn median_and_max() {
        let ms = Duration::from_millis;
        assert_eq!(median_max(&mut []), (Duration::ZERO, Duration::ZERO));
        assert_eq!(median_max(&mut [ms(3), ms(1), ms(2)]), (ms(2), ms(3)));
        assert_eq!(
            median_max(&mut [ms(4), ms(1), ms(2), ms(3)]),
            (Duration::from_micros(2_500), ms(4))
        );
    }

    #[test]
    fn verdicts() {
        assert_eq!(Verdict::at_least(20_000.0, 20_000.0), Verdict::Pass);
        assert_eq!(Verdict::at_least(19_999.0, 20_000.0), Verdict::Miss);
        assert_eq!(Verdict::under(9_999.0, 10_000.0), Verdict::Pass);
        assert_eq!(Verdict::under(10_000.0, 10_000.0), Verdict::Miss);
        assert_eq!(Verdict::check(false), Verdict::Fail);
    }
}
