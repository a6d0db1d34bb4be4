//! The audit log page, after LiveAgent's custom filter: actions grouped
//! by category, agent, department, a time frame (presets or custom), ticket,
//! IP, text and the expert query. The form's values are turned into the
//! API's own parameters and searched by [`crate::routes::audit::page`], the
//! function behind `GET /api/v1/audit` (which records the search); the
//! export and live links carry exactly those parameters to the API's own
//! export and stream handlers, mounted under `/console/audit/`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use askama::Template;
use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, SecondsFormat, TimeZone, Utc};
use ledgerdesk_domain::catalogue::ACTIONS;
use serde_json::Value;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::Cx;
use crate::routes::audit;
use crate::routes::names::names;
use crate::state::AppState;

use super::page::{html, Chrome, PageResult, Time};

/// Entries per page.
const PAGE_SIZE: usize = 50;

/// The form as the URL holds it.
#[derive(Debug, Default, Clone)]
pub struct Form {
    actions: Vec<String>,
    actor: String,
    department: String,
    period: String,
    from: String,
    to: String,
    tz: String,
    ticket: String,
    ip: String,
    q: String,
    query: String,
    cursor: String,
}

impl Form {
    fn parse(query_string: &str) -> Self {
        let mut f = Form::default();
        for (k, v) in form_urlencoded::parse(query_string.as_bytes()) {
            let v = v.trim().to_string();
            match k.as_ref() {
                "action" if !v.is_empty() => f.actions.push(v),
                "actor" => f.actor = v,
                "department" => f.department = v,
                "period" => f.period = v,
                "from" => f.from = v,
                "to" => f.to = v,
                "tz" => f.tz = v,
                "ticket" => f.ticket = v,
                "ip" => f.ip = v,
                "q" => f.q = v,
                "query" => f.query = v,
                "cursor" => f.cursor = v,
                // Unknown keys are ignored: a page is forgiving where the
                // API is strict, and the API still checks what it gets.
                _ => {}
            }
        }
        f
    }

    /// The reader's offset from UTC (minutes east, as the script sends it).
    fn offset(&self) -> Result<FixedOffset, ApiError> {
        if self.tz.is_empty() {
            return Ok(FixedOffset::east_opt(0).expect("UTC"));
        }
        self.tz
            .parse::<i32>()
            .ok()
            .filter(|m| (-14 * 60..=14 * 60).contains(m))
            .and_then(|m| FixedOffset::east_opt(m * 60))
            .ok_or_else(|| ApiError::bad_field("tz", "tz must be minutes east of UTC, -840 to 840"))
    }

    /// `[from, to)` of the time frame, in the reader's zone.
    fn frame(&self, now: DateTime<Utc>) -> Result<(Option<String>, Option<String>), ApiError> {
        let zone = self.offset()?;
        let midnight = |d: NaiveDate| -> Result<String, ApiError> {
            let local = zone
                .from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"))
                .single()
                .ok_or_else(|| ApiError::bad_field("from", "no such local time"))?;
            Ok(local
                .with_timezone(&Utc)
                .to_rfc3339_opts(SecondsFormat::Secs, true))
        };
        let today = now.with_timezone(&zone).date_naive();
        let day = |name: &str, text: &str| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
                ApiError::bad_field(name, format!("{name} must be a date (YYYY-MM-DD)"))
            })
        };
        Ok(match self.period.as_str() {
            "" | "all" => (None, None),
            "today" => (Some(midnight(today)?), None),
            "yesterday" => (
                Some(midnight(today - Duration::days(1))?),
                Some(midnight(today)?),
            ),
            "7d" => (Some(midnight(today - Duration::days(6))?), None),
            "month" => (Some(midnight(today.with_day(1).expect("day 1"))?), None),
            "custom" => {
                let from = match self.from.as_str() {
                    "" => None,
                    f => Some(midnight(day("from", f)?)?),
                };
                let to = match self.to.as_str() {
                    "" => None,
                    // The last day counts in full.
                    t => Some(midnight(
                        day("to", t)?
                            .checked_add_signed(Duration::days(1))
                            .ok_or_else(|| ApiError::bad_field("to", "to is out of range"))?,
                    )?),
                };
                (from, to)
            }
            _ => {
                return Err(ApiError::bad_field(
                    "period",
                    "period must be today, yesterday, 7d, month or custom",
                ))
            }
        })
    }

    /// The API's filter parameters for this form (no paging).
    fn api_filters(&self, now: DateTime<Utc>) -> Result<Vec<(&'static str, String)>, ApiError> {
        let mut out: Vec<(&'static str, String)> = Vec::new();
        for a in &self.actions {
            out.push(("action", a.clone()));
        }
        let singles = [
            ("actor", &self.actor),
            ("department", &self.department),
            ("ticket", &self.ticket),
            ("ip", &self.ip),
            ("q", &self.q),
            ("query", &self.query),
        ];
        for (k, v) in singles {
            if !v.is_empty() {
                out.push((k, v.clone()));
            }
        }
        let (from, to) = self.frame(now)?;
        out.extend(from.map(|f| ("from", f)));
        out.extend(to.map(|t| ("to", t)));
        Ok(out)
    }

    /// The page's own parameters, for paging links.
    fn console_query(&self) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for a in &self.actions {
            s.append_pair("action", a);
        }
        for (k, v) in [
            ("actor", &self.actor),
            ("department", &self.department),
            ("period", &self.period),
            ("from", &self.from),
            ("to", &self.to),
            ("tz", &self.tz),
            ("ticket", &self.ticket),
            ("ip", &self.ip),
            ("q", &self.q),
            ("query", &self.query),
        ] {
            if !v.is_empty() {
                s.append_pair(k, v);
            }
        }
        s.finish()
    }
}

fn encode(pairs: &[(&str, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// A choice in a menu.
#[derive(Debug)]
pub struct Choice {
    value: String,
    label: String,
    selected: bool,
}

/// A category of actions.
#[derive(Debug)]
pub struct Group {
    label: String,
    actions: Vec<Choice>,
}

/// One field's before and after.
#[derive(Debug)]
pub struct Change {
    field: String,
    before: String,
    after: String,
}

/// One entry as the table shows it.
#[derive(Debug)]
pub struct Row {
    position: u64,
    time: Time,
    agent: String,
    department: String,
    action: String,
    label: String,
    ticket: Option<String>,
    description: String,
    changes: Vec<Change>,
    ip: String,
}

fn shown(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn changes(v: &Value) -> Vec<Change> {
    v.as_array()
        .map(|items| {
            items
                .iter()
                .map(|c| Change {
                    field: c["field"].as_str().unwrap_or_default().to_string(),
                    before: shown(&c["before"]),
                    after: shown(&c["after"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn category_label(category: &str) -> String {
    let mut c = category.chars();
    c.next()
        .map(|first| first.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPageView {
    chrome: Option<Chrome>,
    form: Form,
    groups: Vec<Group>,
    agents: Vec<Choice>,
    departments: Vec<Choice>,
    periods: Vec<Choice>,
    rows: Vec<Row>,
    error: Option<String>,
    searched: bool,
    next: Option<String>,
    first: Option<String>,
    export_csv: String,
    export_ndjson: String,
    stream: String,
    recorded_query: String,
}

/// `GET /console/audit`.
pub async fn page(state: web::Data<AppState>, cx: Cx, req: HttpRequest) -> PageResult {
    let chrome = Chrome::of(&state, &req, "/console/audit").await?;
    let form = Form::parse(req.query_string());
    let pool = state.store.db();

    let selected = |list: &[String], v: &str| list.iter().any(|a| a == v);
    let mut groups: Vec<Group> = Vec::new();
    for a in ACTIONS {
        let category = a.code.split('.').next().unwrap_or(a.code);
        let label = category_label(category);
        if groups.last().is_none_or(|g| g.label != label) {
            groups.push(Group {
                label,
                actions: Vec::new(),
            });
        }
        if let Some(g) = groups.last_mut() {
            g.actions.push(Choice {
                value: a.code.to_string(),
                label: a.label.to_string(),
                selected: selected(&form.actions, a.code),
            });
        }
    }
    let hidden: Vec<Uuid> = state.helpdesk.system_account().await?.into_iter().collect();
    let (people_rows, department_rows) = super::people_and_departments(&pool, &hidden).await?;
    let agents = people_rows
        .into_iter()
        .map(|p| Choice {
            selected: p.id.to_string() == form.actor,
            value: p.id.to_string(),
            label: format!("{} ({})", p.name, p.role),
        })
        .collect();
    let departments = department_rows
        .iter()
        .map(|d| Choice {
            selected: d.id.to_string() == form.department,
            value: d.id.to_string(),
            label: d.name.clone(),
        })
        .collect();
    let periods = [
        ("", "Any time"),
        ("today", "Today"),
        ("yesterday", "Yesterday"),
        ("7d", "Last 7 days"),
        ("month", "This month"),
        ("custom", "Custom (from – to)"),
    ]
    .iter()
    .map(|(v, l)| Choice {
        value: v.to_string(),
        label: l.to_string(),
        selected: form.period == *v,
    })
    .collect();

    let mut view = AuditPageView {
        chrome: Some(chrome),
        form: form.clone(),
        groups,
        agents,
        departments,
        periods,
        rows: Vec::new(),
        error: None,
        searched: false,
        next: None,
        first: None,
        export_csv: String::new(),
        export_ndjson: String::new(),
        stream: String::new(),
        recorded_query: String::new(),
    };

    let filters = match form.api_filters(Utc::now()) {
        Ok(f) => f,
        Err(e) => {
            view.error = Some(e.to_string());
            return Ok(html(StatusCode::BAD_REQUEST, &view));
        }
    };
    let mut params = filters.clone();
    params.push(("limit", PAGE_SIZE.to_string()));
    // What the reader just did is on the page: the view is given (up to
    // `projections.max_wait_ms`) to reach the log's head.
    let head = state.store.head().await.map_err(ApiError::from)?.position;
    params.push(("min_position", head.to_string()));
    if !form.cursor.is_empty() {
        params.push(("cursor", form.cursor.clone()));
    }
    let found = match audit::page(&state, &cx, &encode(&params)).await {
        Ok(found) => found,
        // A filter the API refuses is shown on the form, not as an error page.
        Err(e @ ApiError::BadRequest { .. }) => {
            view.error = Some(e.to_string());
            return Ok(html(StatusCode::BAD_REQUEST, &view));
        }
        Err(e) => return Err(e.into()),
    };
    let dept_ids: Vec<Uuid> = found
        .items
        .iter()
        .filter_map(|r| r.actor_department)
        .collect();
    let dept_names = names(&state, &[], &dept_ids).await?;
    view.rows = found
        .items
        .iter()
        .map(|r| Row {
            position: r.position,
            time: r.recorded_at.into(),
            agent: r.actor_name.clone().unwrap_or_else(|| r.actor_kind.clone()),
            department: r
                .actor_department
                .and_then(|d| dept_names.department(d))
                .unwrap_or_default(),
            action: r.action.clone(),
            label: r.label.clone(),
            ticket: r.ticket_id.map(|t| t.to_string()),
            description: r.description.clone(),
            changes: changes(&r.changes),
            ip: r.ip.clone().unwrap_or_default(),
        })
        .collect();
    view.searched = true;
    let own = form.console_query();
    let join = |base: &str, q: &str| {
        if q.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{q}")
        }
    };
    view.next = found.next_cursor.map(|c| {
        let cursor: String = form_urlencoded::byte_serialize(c.as_bytes()).collect();
        if own.is_empty() {
            format!("/console/audit?cursor={cursor}")
        } else {
            format!("/console/audit?{own}&cursor={cursor}")
        }
    });
    view.first = (!form.cursor.is_empty()).then(|| join("/console/audit", &own));
    let api = encode(&filters);
    let with_format = |f: &str| {
        if api.is_empty() {
            format!("/console/audit/export?format={f}")
        } else {
            format!("/console/audit/export?{api}&format={f}")
        }
    };
    view.export_csv = with_format("csv");
    view.export_ndjson = with_format("ndjson");
    view.stream = join("/console/audit/stream", &api);
    view.recorded_query = found.query;
    Ok(html(StatusCode::OK, &view))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn presets_are_days_in_the_readers_zone() {
        let now = at("2026-03-10T23:30:00Z");
        let mut f = Form::parse("period=today");
        assert_eq!(
            f.frame(now).unwrap(),
            (Some("2026-03-10T00:00:00Z".into()), None)
        );
        // An hour east of UTC it is already the 11th.
        f.tz = "60".into();
        assert_eq!(
            f.frame(now).unwrap(),
            (Some("2026-03-10T23:00:00Z".into()), None)
        );
        let f = Form::parse("period=yesterday");
        assert_eq!(
            f.frame(now).unwrap(),
            (
                Some("2026-03-09T00:00:00Z".into()),
                Some("2026-03-10T00:00:00Z".into())
            )
        );
        let f = Form::parse("period=7d");
        assert_eq!(f.frame(now).unwrap().0.unwrap(), "2026-03-04T00:00:00Z");
        let f = Form::parse("period=month");
        assert_eq!(f.frame(now).unwrap().0.unwrap(), "2026-03-01T00:00:00Z");
        let f = Form::parse("period=custom&from=2026-01-01&to=2026-01-31");
        assert_eq!(
            f.frame(now).unwrap(),
            (
                Some("2026-01-01T00:00:00Z".into()),
                Some("2026-02-01T00:00:00Z".into())
            )
        );
        assert!(Form::parse("period=custom&from=01/02/2026")
            .frame(now)
            .is_err());
        assert!(Form::parse("period=fortnight").frame(now).is_err());
        assert!(Form::parse("tz=9999&period=today").frame(now).is_err());
    }

    #[test]
    fn the_form_becomes_the_apis_filters() {
        let f = Form::parse("action=ticket.status&action=user&actor=&q=refund&period=&cursor=abc");
        let api = f.api_filters(Utc::now()).unwrap();
        assert_eq!(encode(&api), "action=ticket.status&action=user&q=refund");
        assert_eq!(
            f.console_query(),
            "action=ticket.status&action=user&q=refund"
        );
    }
}
