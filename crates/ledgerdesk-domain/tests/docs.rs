//! `docs/domain.md` copies the transition table and the catalogue: keep
//! the copy honest.

use ledgerdesk_domain::catalogue::ACTIONS;
use ledgerdesk_domain::ticket::STATUS_TRANSITIONS;

fn doc() -> String {
    let path = format!("{}/../../docs/domain.md", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn transition_table_matches_the_code() {
    let doc = doc();
    let start = doc.find("## Ticket status transitions").expect("section");
    let rows: Vec<(String, String)> = doc[start..]
        .lines()
        .skip_while(|l| !l.starts_with("| from"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let to = cells[2].split_whitespace().next().unwrap_or("");
            (cells[1].to_string(), to.to_string())
        })
        .collect();
    let code: Vec<(String, String)> = STATUS_TRANSITIONS
        .iter()
        .map(|(f, t)| (f.as_str().to_string(), t.as_str().to_string()))
        .collect();
    assert_eq!(rows, code);
}

#[test]
fn catalogue_table_matches_the_code() {
    let doc = doc();
    for action in ACTIONS {
        let row = format!(
            "| `{}` | {} | {} |",
            action.code, action.label, action.summary
        );
        assert!(doc.contains(&row), "docs/domain.md lacks {row}");
    }
}
