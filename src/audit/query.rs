//! Reading decision logs back and answering questions about them: which records match, and how
//! they add up. Pure functions over [`DecisionRecord`]s, so `audit` and its tests share them.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use flate2::read::MultiGzDecoder;
use serde::Serialize;

use super::DecisionRecord;
use crate::policy::Action;

/// Where records come from: a file (plain or gzip'd, detected by content) or standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Stdin,
}

impl Source {
    /// `-` is standard input, anything else a path.
    pub fn parse(text: &str) -> Source {
        if text == "-" {
            Source::Stdin
        } else {
            Source::File(PathBuf::from(text))
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Stdin => "<stdin>".into(),
        }
    }
}

/// A line that is not a decision record: reported, then skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub source: String,
    pub line: usize,
    pub error: String,
}

/// Read every record from `source`. Only failing to open it is an error; a line that does not
/// parse (or a stream that breaks off, like a gzip file cut short) goes to `on_malformed`, so one
/// bad line never hides the rest of a log.
pub fn read_source(
    source: &Source,
    keep: &dyn Fn(&DecisionRecord) -> bool,
    on_malformed: &mut dyn FnMut(Malformed),
) -> io::Result<Vec<DecisionRecord>> {
    let input: Box<dyn Read> = match source {
        Source::File(path) => Box::new(File::open(path).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
        })?),
        Source::Stdin => Box::new(io::stdin()),
    };
    read_records(input, &source.describe(), keep, on_malformed)
}

/// Read the records `keep` wants from any reader (filtering while reading keeps memory to the
/// matches); gzip is recognised by its magic bytes, not the file name.
pub fn read_records(
    input: impl Read,
    name: &str,
    keep: &dyn Fn(&DecisionRecord) -> bool,
    on_malformed: &mut dyn FnMut(Malformed),
) -> io::Result<Vec<DecisionRecord>> {
    let mut buffered = BufReader::new(input);
    let gzip = buffered.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn BufRead> = if gzip {
        Box::new(BufReader::new(MultiGzDecoder::new(buffered)))
    } else {
        Box::new(buffered)
    };
    let mut records = Vec::new();
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        number += 1;
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                on_malformed(Malformed {
                    source: name.to_owned(),
                    line: number,
                    error: format!("read error, rest of the file skipped: {e}"),
                });
                break;
            }
        }
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_slice::<DecisionRecord>(text) {
            Ok(record) if keep(&record) => records.push(record),
            Ok(_) => {}
            Err(e) => on_malformed(Malformed {
                source: name.to_owned(),
                line: number,
                error: e.to_string(),
            }),
        }
    }
    Ok(records)
}

/// A point in time from the command line: RFC 3339, a date (midnight UTC), or an age such as
/// `90s`, `30m`, `1h`, `2d`, `1w` counted back from `now`.
pub fn parse_time(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(t.and_utc());
    }
    parse_age(text)
        .and_then(|age| now.checked_sub_signed(age))
        .ok_or_else(|| {
            format!(
                "{text:?} is not a time: use RFC 3339 (2026-01-02T15:04:05Z), a date (2026-01-02) \
                 or an age (90s, 30m, 1h, 2d, 1w)"
            )
        })
}

fn parse_age(text: &str) -> Option<Duration> {
    let unit_at = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(unit_at);
    let n: i64 = digits.parse().ok()?;
    match unit {
        "s" => Duration::try_seconds(n),
        "m" => Duration::try_minutes(n),
        "h" => Duration::try_hours(n),
        "d" => Duration::try_days(n),
        "w" => Duration::try_weeks(n),
        _ => None,
    }
}

/// Which records to keep. Values of one flag are alternatives; different flags must all hold.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub policies: Vec<String>,
    pub namespaces: Vec<String>,
    pub users: Vec<String>,
    /// Compared without regard to case (`pod` finds `Pod`).
    pub kinds: Vec<String>,
    /// `allowed`, `warned` or `denied`.
    pub decisions: Vec<String>,
    pub endpoints: Vec<String>,
}

fn any_or_empty(wanted: &[String], test: impl Fn(&str) -> bool) -> bool {
    wanted.is_empty() || wanted.iter().any(|w| test(w))
}

impl Filter {
    pub fn matches(&self, r: &DecisionRecord) -> bool {
        self.since.is_none_or(|t| r.time >= t)
            && self.until.is_none_or(|t| r.time <= t)
            && any_or_empty(&self.policies, |p| r.policies.iter().any(|h| h.policy == p))
            && any_or_empty(&self.namespaces, |n| r.namespace == n)
            && any_or_empty(&self.users, |u| r.user == u)
            && any_or_empty(&self.kinds, |k| r.kind.eq_ignore_ascii_case(k))
            && any_or_empty(&self.decisions, |d| r.decision == d)
            && if self.endpoints.is_empty() {
                // Shadow records are the candidate set's verdicts, not decisions: only on request.
                r.endpoint != crate::disagreement::SHADOW_ENDPOINT
            } else {
                self.endpoints.contains(&r.endpoint)
            }
    }
}

/// Sort newest first; records of the same instant keep their order.
pub fn newest_first(records: &mut [DecisionRecord]) {
    records.sort_by_key(|r| std::cmp::Reverse(r.time));
}

/// Hits of one policy, by enforcement action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PolicyCount {
    pub policy: String,
    pub total: usize,
    pub deny: usize,
    pub warn: usize,
    pub dryrun: usize,
}

/// Decisions for one namespace or one user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GroupCount {
    pub name: String,
    pub total: usize,
    pub denied: usize,
    pub warned: usize,
    pub allowed: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageCount {
    pub message: String,
    pub count: usize,
}

/// What `audit --summary` prints: how the selected decisions add up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub total: usize,
    pub first: Option<DateTime<Utc>>,
    pub last: Option<DateTime<Utc>>,
    /// `allowed`, `warned`, `denied` → count.
    pub decisions: BTreeMap<String, usize>,
    pub policies: Vec<PolicyCount>,
    pub namespaces: Vec<GroupCount>,
    pub users: Vec<GroupCount>,
    pub top_denials: Vec<MessageCount>,
}

/// Most frequent first, then by name, so the output is stable.
fn ranked<T>(map: HashMap<String, T>, count: impl Fn(&T) -> usize) -> Vec<T> {
    let mut items: Vec<(String, T)> = map.into_iter().collect();
    items.sort_by(|(an, a), (bn, b)| count(b).cmp(&count(a)).then_with(|| an.cmp(bn)));
    items.into_iter().map(|(_, v)| v).collect()
}

fn count_group(map: &mut HashMap<String, GroupCount>, name: &str, decision: &str) {
    let entry = map.entry(name.to_owned()).or_insert_with(|| GroupCount {
        name: name.to_owned(),
        ..Default::default()
    });
    entry.total += 1;
    match decision {
        "denied" => entry.denied += 1,
        "warned" => entry.warned += 1,
        _ => entry.allowed += 1,
    }
}

/// The messages a denial gave: one per deny-policy, or the refusal itself when no policy denied
/// (a mutation refusal, a deadline).
fn denial_messages(r: &DecisionRecord) -> Vec<String> {
    let from_policies: Vec<String> = r
        .policies
        .iter()
        .filter(|h| h.action == Action::Deny)
        .map(|h| format!("[{}] {}", h.policy, h.message))
        .collect();
    if !from_policies.is_empty() {
        return from_policies;
    }
    r.message.iter().cloned().collect()
}

pub fn summarize(records: &[DecisionRecord], top: usize) -> Summary {
    let mut decisions = BTreeMap::new();
    let mut policies: HashMap<String, PolicyCount> = HashMap::new();
    let mut namespaces = HashMap::new();
    let mut users = HashMap::new();
    let mut messages: HashMap<String, usize> = HashMap::new();
    for r in records {
        *decisions.entry(r.decision.clone()).or_insert(0) += 1;
        count_group(&mut namespaces, &r.namespace, &r.decision);
        count_group(&mut users, &r.user, &r.decision);
        for hit in &r.policies {
            let p = policies
                .entry(hit.policy.clone())
                .or_insert_with(|| PolicyCount {
                    policy: hit.policy.clone(),
                    ..Default::default()
                });
            p.total += 1;
            match hit.action {
                Action::Deny => p.deny += 1,
                Action::Warn => p.warn += 1,
                Action::Dryrun => p.dryrun += 1,
            }
        }
        if r.decision == "denied" {
            for m in denial_messages(r) {
                *messages.entry(m).or_insert(0) += 1;
            }
        }
    }
    let mut top_denials: Vec<MessageCount> = messages
        .into_iter()
        .map(|(message, count)| MessageCount { message, count })
        .collect();
    top_denials.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.message.cmp(&b.message))
    });
    top_denials.truncate(top);
    Summary {
        total: records.len(),
        first: records.iter().map(|r| r.time).min(),
        last: records.iter().map(|r| r.time).max(),
        decisions,
        policies: ranked(policies, |p| p.total),
        namespaces: ranked(namespaces, |g| g.total),
        users: ranked(users, |g| g.total),
        top_denials,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 4, 12, 0, 0).unwrap()
    }

    #[test]
    fn times_absolute_dates_and_ages() {
        assert_eq!(
            parse_time("2026-03-04T10:00:00+02:00", now()).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 4, 8, 0, 0).unwrap()
        );
        assert_eq!(
            parse_time("2026-03-01", now()).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            parse_time("90m", now()).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 4, 10, 30, 0).unwrap()
        );
        assert_eq!(
            parse_time("2d", now()).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 2, 12, 0, 0).unwrap()
        );
        for bad in ["", "h", "1y", "yesterday", "-1h", "99999999999999999999d"] {
            assert!(parse_time(bad, now()).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_lines_are_reported_with_their_number_and_skipped() {
        let good = r#"{"time":"2026-03-04T11:00:00Z","uid":"u","endpoint":"validate","allowed":true,"decision":"allowed"}"#;
        let text = format!("{good}\nnot json\n\n{good}\n{{\"uid\":1}}\n");
        let mut bad = Vec::new();
        let records =
            read_records(text.as_bytes(), "t.log", &|_| true, &mut |m| bad.push(m)).unwrap();
        assert_eq!(records.len(), 2);
        let lines: Vec<usize> = bad.iter().map(|m| m.line).collect();
        assert_eq!(lines, vec![2, 5]);
        assert_eq!(bad[0].source, "t.log");
    }

    #[test]
    fn a_truncated_gzip_keeps_what_was_read() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let line = r#"{"time":"2026-03-04T11:00:00Z","uid":"u","endpoint":"validate","allowed":true,"decision":"allowed"}"#;
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        for _ in 0..200 {
            writeln!(enc, "{line}").unwrap();
        }
        let gz = enc.finish().unwrap();
        let mut bad = Vec::new();
        let whole = read_records(&gz[..], "g", &|_| true, &mut |m| bad.push(m)).unwrap();
        assert_eq!((whole.len(), bad.len()), (200, 0));
        let cut = &gz[..gz.len() - 12];
        let partial = read_records(cut, "g", &|_| true, &mut |m| bad.push(m)).unwrap();
        assert!(partial.len() <= 200);
        assert_eq!(bad.len(), 1, "{bad:?}");
    }
}
