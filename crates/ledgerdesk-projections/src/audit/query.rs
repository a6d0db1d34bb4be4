//! The audit query language: every [`AuditFilter`] written as one string,
//! in the qualifier style of GitHub's audit log search, plus free text.
//!
//! ```text
//! action:ticket.status actor:<uuid> dept:<uuid> created:>=2026-01-01 "refund"
//! ```
//!
//! - `qualifier:value`; qualifiers are `action`, `actor`, `dept` (or
//!   `department`), `ticket`, `ip` and `created`. A value may be quoted, and
//!   may list several values with commas (`action:ticket.note_added,ticket.tags_changed`).
//! - The same qualifier twice means either value; different qualifiers must
//!   all hold.
//! - `-` before a term leaves out what it matches: `-action:user`, `-"test"`.
//! - `action` takes a code of the catalogue, a category (`ticket`, `user`)
//!   or the start of a code up to an underscore (`ticket.status` for
//!   `ticket.status_changed`).
//! - `created` takes `YYYY-MM-DD` (that whole day, UTC) or an RFC 3339 time,
//!   with `>`, `>=`, `<`, `<=`, or a range `A..B` (both ends inclusive, `*`
//!   for an open end).
//! - Anything else is free text: a word or a `"quoted phrase"` that must
//!   appear in the description or the changes.
//!
//! Parsing is pure and total: a malformed query gives a [`QueryError`]
//! naming the offending token and where it starts, never a panic.

use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, NaiveDate, Utc};
use ledgerdesk_domain::catalogue::ACTIONS;
use uuid::Uuid;

use super::AuditFilter;

/// Longest query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 2_000;

/// Why a query could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    /// The offending token, as written.
    pub token: String,
    /// Where it starts, in characters from the start of the query.
    pub offset: usize,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (at character {}: `{}`)",
            self.message, self.offset, self.token
        )
    }
}

impl std::error::Error for QueryError {}

/// One term of a query, before it is understood.
#[derive(Debug)]
struct Token {
    raw: String,
    offset: usize,
    negated: bool,
    qualifier: Option<String>,
    value: String,
}

/// Split `query` into terms, honouring quotes (`\"` and `\\` inside them).
fn tokenize(query: &str) -> Result<Vec<Token>, QueryError> {
    let chars: Vec<char> = query.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let mut negated = false;
        if chars[i] == '-' && i + 1 < chars.len() && !chars[i + 1].is_whitespace() {
            negated = true;
            i += 1;
        }
        let mut qualifier = None;
        let mut value = String::new();
        let mut quoted = false;
        let mut closed = true;
        while i < chars.len() && !chars[i].is_whitespace() {
            let c = chars[i];
            if c == '"' {
                quoted = true;
                closed = false;
                i += 1;
                while i < chars.len() {
                    match chars[i] {
                        '\\' if i + 1 < chars.len() => {
                            value.push(chars[i + 1]);
                            i += 2;
                        }
                        '"' => {
                            closed = true;
                            i += 1;
                            break;
                        }
                        other => {
                            value.push(other);
                            i += 1;
                        }
                    }
                }
                if !closed {
                    break;
                }
            } else if c == ':' && qualifier.is_none() && !quoted {
                qualifier = Some(std::mem::take(&mut value));
                i += 1;
            } else {
                value.push(c);
                i += 1;
            }
        }
        let raw: String = chars[start..i].iter().collect();
        if !closed {
            return Err(QueryError {
                token: raw,
                offset: start,
                message: "the quote is never closed".into(),
            });
        }
        tokens.push(Token {
            raw,
            offset: start,
            negated,
            qualifier,
            value,
        });
    }
    Ok(tokens)
}

/// Parse a whole query into a filter.
pub fn parse(query: &str) -> Result<AuditFilter, QueryError> {
    if query.chars().count() > MAX_QUERY_CHARS {
        return Err(QueryError {
            token: query.chars().take(20).collect(),
            offset: 0,
            message: format!("the query is longer than {MAX_QUERY_CHARS} characters"),
        });
    }
    let mut filter = AuditFilter::default();
    for token in tokenize(query)? {
        let fail = |message: String| QueryError {
            token: token.raw.clone(),
            offset: token.offset,
            message,
        };
        match &token.qualifier {
            None => {
                if token.value.trim().is_empty() {
                    return Err(fail("empty text; write a word or a quoted phrase".into()));
                }
                let list = if token.negated {
                    &mut filter.exclude.text
                } else {
                    &mut filter.text
                };
                list.push(token.value.clone());
            }
            Some(q) => {
                apply(&mut filter, q, &token.value, token.negated).map_err(fail)?;
            }
        }
    }
    Ok(filter)
}

/// Add one `qualifier:value` (maybe negated) to `filter`; the error is a
/// message for the caller, who knows where the term came from.
pub fn apply(
    filter: &mut AuditFilter,
    qualifier: &str,
    value: &str,
    negated: bool,
) -> Result<(), String> {
    let qualifier = qualifier.to_ascii_lowercase();
    if qualifier == "created" {
        if negated {
            return Err(
                "`created` cannot be negated; use a range such as created:<2026-01-01".into(),
            );
        }
        let (from, to) = time_range(value)?;
        if let Some(from) = from {
            filter.from = Some(filter.from.map_or(from, |f| f.max(from)));
        }
        if let Some(to) = to {
            filter.to = Some(filter.to.map_or(to, |t| t.min(to)));
        }
        return Ok(());
    }
    let values: Vec<&str> = value.split(',').map(str::trim).collect();
    if values.iter().any(|v| v.is_empty()) {
        return Err(format!(
            "`{qualifier}` needs a value, e.g. {}",
            example(&qualifier)
        ));
    }
    let x = &mut filter.exclude;
    match qualifier.as_str() {
        "action" => {
            let list = if negated {
                &mut x.actions
            } else {
                &mut filter.actions
            };
            for v in values {
                list.extend(actions_matching(v)?);
            }
            // A set: sorted, so equal filters compare equal however written.
            list.sort();
            list.dedup();
        }
        "actor" => {
            let list = if negated {
                &mut x.actors
            } else {
                &mut filter.actors
            };
            push_uuids(list, &values, "actor", "a user id")?;
        }
        "dept" | "department" => {
            let list = if negated {
                &mut x.departments
            } else {
                &mut filter.departments
            };
            push_uuids(list, &values, "dept", "a department id")?;
        }
        "ticket" => {
            let list = if negated {
                &mut x.tickets
            } else {
                &mut filter.tickets
            };
            push_uuids(list, &values, "ticket", "a ticket id")?;
        }
        "ip" => {
            let list = if negated { &mut x.ips } else { &mut filter.ips };
            for v in values {
                let ip: IpAddr = v
                    .parse()
                    .map_err(|_| format!("`{v}` is not an IP address"))?;
                let ip = ip.to_string();
                if !list.contains(&ip) {
                    list.push(ip);
                }
            }
        }
        other => {
            return Err(format!(
                "unknown qualifier `{other}`; use action, actor, dept, ticket, ip or created, \
                 or put the text in quotes"
            ))
        }
    }
    Ok(())
}

fn example(qualifier: &str) -> &'static str {
    match qualifier {
        "action" => "action:ticket.status_changed",
        "ip" => "ip:203.0.113.7",
        _ => "actor:018f…-uuid",
    }
}

fn push_uuids(list: &mut Vec<Uuid>, values: &[&str], name: &str, what: &str) -> Result<(), String> {
    for v in values {
        let id: Uuid = v
            .parse()
            .map_err(|_| format!("`{name}` takes {what} (a UUID), not `{v}`"))?;
        if !list.contains(&id) {
            list.push(id);
        }
    }
    Ok(())
}

/// The catalogue codes `value` names: the code itself, a category
/// (`ticket` → `ticket.*`), or the start of a code up to `_`.
pub fn actions_matching(value: &str) -> Result<Vec<String>, String> {
    let value = value.to_ascii_lowercase();
    let codes: Vec<String> = ACTIONS
        .iter()
        .map(|a| a.code)
        .filter(|code| {
            *code == value
                || code
                    .strip_prefix(value.as_str())
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('_'))
        })
        .map(str::to_owned)
        .collect();
    if codes.is_empty() {
        Err(format!(
            "no action `{value}`; see GET /api/v1/audit/actions for the codes"
        ))
    } else {
        Ok(codes)
    }
}

/// `[from, to)`, either end open.
type Bounds = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// `[from, to)` of a `created:` value.
fn time_range(value: &str) -> Result<Bounds, String> {
    let bad = || {
        format!(
            "`{value}` is not a time range; write created:2026-01-01, created:>=2026-01-01, \
             created:<2026-02-01T00:00:00Z or created:2026-01-01..2026-01-31"
        )
    };
    if let Some((a, b)) = value.split_once("..") {
        let from = if a == "*" {
            None
        } else {
            Some(instant(a).ok_or_else(bad)?.0)
        };
        let to = if b == "*" {
            None
        } else {
            Some(instant(b).ok_or_else(bad)?.1)
        };
        if from.is_none() && to.is_none() {
            return Err(bad());
        }
        return Ok((from, to));
    }
    for op in [">=", "<=", ">", "<"] {
        if let Some(rest) = value.strip_prefix(op) {
            let (start, end) = instant(rest).ok_or_else(bad)?;
            return Ok(match op {
                ">=" => (Some(start), None),
                ">" => (Some(end), None),
                "<=" => (None, Some(end)),
                _ => (None, Some(start)),
            });
        }
    }
    let (start, end) = instant(value).ok_or_else(bad)?;
    Ok((Some(start), Some(end)))
}

/// A date or an RFC 3339 instant as `[start, end)`: a date covers its
/// whole day (UTC), an instant one microsecond (the log's resolution).
pub fn instant(text: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        let t = t.with_timezone(&Utc);
        return Some((t, t + chrono::Duration::microseconds(1)));
    }
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    let start = day.and_hms_opt(0, 0, 0)?.and_utc();
    let end = day.succ_opt()?.and_hms_opt(0, 0, 0)?.and_utc();
    Some((start, end))
}

/// `filter` written back as a query that [`parse`] reads to the same
/// filter (paging aside). Used to record which filters an auditor used.
pub fn render(filter: &AuditFilter) -> String {
    let mut terms: Vec<String> = Vec::new();
    let x = &filter.exclude;
    let join = |v: &[String]| v.join(",");
    let ids = |v: &[Uuid]| v.iter().map(Uuid::to_string).collect::<Vec<_>>().join(",");
    for (name, included, excluded) in [
        (
            "action",
            compact_actions(&filter.actions).join(","),
            compact_actions(&x.actions).join(","),
        ),
        ("actor", ids(&filter.actors), ids(&x.actors)),
        ("dept", ids(&filter.departments), ids(&x.departments)),
        ("ticket", ids(&filter.tickets), ids(&x.tickets)),
        ("ip", join(&filter.ips), join(&x.ips)),
    ] {
        if !included.is_empty() {
            terms.push(format!("{name}:{}", quote_if_needed(&included)));
        }
        if !excluded.is_empty() {
            terms.push(format!("-{name}:{}", quote_if_needed(&excluded)));
        }
    }
    let time = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    if let Some(from) = filter.from {
        terms.push(format!("created:>={}", time(from)));
    }
    if let Some(to) = filter.to {
        terms.push(format!("created:<{}", time(to)));
    }
    for t in &filter.text {
        terms.push(quote(t));
    }
    for t in &x.text {
        terms.push(format!("-{}", quote(t)));
    }
    terms.join(" ")
}

/// Codes written as short as they read back: a whole category as its name
/// (`ticket` rather than every `ticket.*` code).
fn compact_actions(codes: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut covered: Vec<&str> = Vec::new();
    for action in ACTIONS {
        let category = action.code.split('.').next().unwrap_or(action.code);
        if out.iter().any(|c| c == category) {
            continue;
        }
        let all: Vec<&str> = ACTIONS
            .iter()
            .map(|a| a.code)
            .filter(|c| c.split('.').next() == Some(category))
            .collect();
        if all.iter().all(|c| codes.iter().any(|x| x == c)) {
            out.push(category.to_owned());
            covered.extend(all);
        }
    }
    out.extend(
        codes
            .iter()
            .filter(|c| !covered.contains(&c.as_str()))
            .cloned(),
    );
    out
}

fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn quote_if_needed(value: &str) -> String {
    if value
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\')
    {
        quote(value)
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const A: &str = "018f0000-0000-7000-8000-000000000001";
    const D: &str = "018f0000-0000-7000-8000-000000000002";

    fn day(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
    }

    #[test]
    fn the_issue_example_reads_as_expected() {
        let f = parse(&format!(
            "action:ticket.status actor:{A} dept:{D} created:>=2026-01-01 \"refund\""
        ))
        .unwrap();
        assert_eq!(f.actions, ["ticket.status_changed"]);
        assert_eq!(f.actors, [A.parse::<Uuid>().unwrap()]);
        assert_eq!(f.departments, [D.parse::<Uuid>().unwrap()]);
        assert_eq!(f.from, Some(day(2026, 1, 1)));
        assert_eq!(f.to, None);
        assert_eq!(f.text, ["refund"]);
    }

    #[test]
    fn categories_negation_and_lists() {
        let f = parse("action:user -action:user.logged_in,user.logged_out -\"smoke test\" ip:203.0.113.7 word").unwrap();
        assert!(f.actions.iter().all(|a| a.starts_with("user.")));
        assert!(f.actions.contains(&"user.state_changed".to_string()));
        assert_eq!(f.exclude.actions, ["user.logged_in", "user.logged_out"]);
        assert_eq!(f.exclude.text, ["smoke test"]);
        assert_eq!(f.ips, ["203.0.113.7"]);
        assert_eq!(f.text, ["word"]);
        // `ticket.status` is not a prefix of `ticket.status_x` only by
        // accident: whole words only.
        assert!(parse("action:ticket.stat").is_err());
    }

    #[test]
    fn time_ranges() {
        let f = parse("created:2026-01-01..2026-01-31").unwrap();
        assert_eq!(
            (f.from, f.to),
            (Some(day(2026, 1, 1)), Some(day(2026, 2, 1)))
        );
        let f = parse("created:>2026-01-01").unwrap();
        assert_eq!(f.from, Some(day(2026, 1, 2)));
        let f = parse("created:<=2026-01-01").unwrap();
        assert_eq!(f.to, Some(day(2026, 1, 2)));
        let f = parse("created:<2026-01-01").unwrap();
        assert_eq!(f.to, Some(day(2026, 1, 1)));
        let f = parse("created:2026-03-05").unwrap();
        assert_eq!(
            (f.from, f.to),
            (Some(day(2026, 3, 5)), Some(day(2026, 3, 6)))
        );
        let f = parse("created:*..2026-01-01 created:>=2025-06-01T10:00:00+02:00").unwrap();
        assert_eq!(f.to, Some(day(2026, 1, 2)));
        assert_eq!(
            f.from,
            Some(Utc.with_ymd_and_hms(2025, 6, 1, 8, 0, 0).unwrap())
        );
    }

    #[test]
    fn errors_point_at_the_offending_token() {
        let cases = [
            (
                "action:ticket.status colour:red",
                "colour:red",
                21,
                "unknown qualifier",
            ),
            ("actor:bob", "actor:bob", 0, "UUID"),
            ("a \"unclosed", "\"unclosed", 2, "never closed"),
            ("action:nope", "action:nope", 0, "no action"),
            (
                "created:yesterday",
                "created:yesterday",
                0,
                "not a time range",
            ),
            (
                "-created:>2026-01-01",
                "-created:>2026-01-01",
                0,
                "cannot be negated",
            ),
            ("ip:999.1.1.1", "ip:999.1.1.1", 0, "not an IP"),
            ("action:", "action:", 0, "needs a value"),
            ("x \"\"", "\"\"", 2, "empty text"),
            ("created:*..*", "created:*..*", 0, "not a time range"),
        ];
        for (query, token, offset, message) in cases {
            let e = parse(query).unwrap_err();
            assert_eq!(e.token, token, "{query}");
            assert_eq!(e.offset, offset, "{query}");
            assert!(e.message.contains(message), "{query}: {}", e.message);
        }
    }

    #[test]
    fn render_writes_whole_categories_by_name() {
        let f = parse("action:ticket,user.logged_in -action:department").unwrap();
        assert_eq!(
            render(&f),
            "action:ticket,user.logged_in -action:department"
        );
        let f = parse("action:ticket.status").unwrap();
        assert_eq!(render(&f), "action:ticket.status_changed");
    }

    #[test]
    fn render_reads_back_to_the_same_filter() {
        for query in [
            "",
            "action:ticket -action:ticket.note_added created:2026-01-01..2026-02-01",
            &format!("actor:{A} -dept:{D} ip:::1 \"a \\\"quoted\\\" phrase\" -back\\\\slash"),
            "ticket:018f0000-0000-7000-8000-000000000003 created:>=2026-01-01T12:30:00.123456Z",
        ] {
            let f = parse(query).unwrap();
            assert_eq!(parse(&render(&f)).unwrap(), f, "{query} → {}", render(&f));
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Nothing panics, whatever the input.
            #[test]
            fn parse_is_total(query in "\\PC{0,80}") {
                let _ = parse(&query);
            }

            /// Whatever parses renders back to a query meaning the same.
            #[test]
            fn render_round_trips(query in prop::collection::vec(
                prop_oneof![
                    Just("action:ticket".to_string()),
                    Just("-action:user.logged_in".to_string()),
                    Just(format!("actor:{A}")),
                    Just(format!("-dept:{D}")),
                    Just("created:>=2026-01-01".to_string()),
                    Just("created:<2026-06-01T00:00:00Z".to_string()),
                    Just("ip:10.0.0.1".to_string()),
                    "[a-z\"\\\\ ]{1,8}".prop_map(|t| format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\""))),
                    "-?[a-z]{1,8}",
                ],
                0..6,
            )) {
                let query = query.join(" ");
                if let Ok(f) = parse(&query) {
                    prop_assert_eq!(parse(&render(&f)).unwrap(), f);
                }
            }
        }
    }
}
