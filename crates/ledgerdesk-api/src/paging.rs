//! One paging style for every list: a keyset cursor (opaque to clients:
//! pass back what the last page gave), `limit` from 1 to [`MAX_LIMIT`]
//! (default [`DEFAULT_LIMIT`]), and the next cursor both in the body
//! (`next_cursor`, absent on the last page) and in a `Link: <…>;
//! rel="next"` header that repeats the request with the cursor replaced.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponseBuilder};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;

use crate::error::ApiError;

/// Items per page when `limit` is absent.
pub const DEFAULT_LIMIT: usize = ledgerdesk_projections::DEFAULT_LIMIT;
/// The largest `limit`.
pub const MAX_LIMIT: usize = ledgerdesk_projections::MAX_LIMIT;

/// `limit`, checked: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
pub fn limit(limit: Option<i64>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT as i64).contains(&n) => Ok(n as usize),
        Some(_) => Err(ApiError::bad_field(
            "limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        )),
    }
}

/// A cursor for the position-like key `n` of a list named `kind`; opaque,
/// so a client pages with what it was given rather than with numbers it
/// makes up.
pub fn position_cursor(kind: &str, n: u64) -> String {
    B64.encode(format!("{kind}:{n}"))
}

/// The key a [`position_cursor`] of `kind` stands for; 400 naming `cursor`
/// for anything else.
pub fn decode_position_cursor(kind: &str, cursor: &str) -> Result<u64, ApiError> {
    B64.decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix(kind)?.strip_prefix(':')?.parse().ok())
        .ok_or_else(|| ApiError::bad_field("cursor", "the cursor is not one this API gave out"))
}

/// A read model's own cursor (its keyset values) made opaque and bound to
/// the list `kind`: a cursor of one list is refused by another, and keys
/// such as an email do not travel in URLs as they are.
pub fn seal(kind: &str, raw: Option<String>) -> Option<String> {
    raw.map(|raw| B64.encode(format!("{kind}:{raw}")))
}

/// The read model's cursor a [`seal`]ed cursor of `kind` stands for; 400
/// naming `cursor` for anything else.
pub fn open(kind: &str, cursor: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    B64.decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| Some(text.strip_prefix(kind)?.strip_prefix(':')?.to_string()))
        .map(Some)
        .ok_or_else(|| ApiError::bad_field("cursor", "the cursor is not one this API gave out"))
}

/// Name the next page in a `Link` header: this request's path and query,
/// without the parameters in `replaced` and `cursor`, then `cursor=next`.
pub fn link_next(
    response: &mut HttpResponseBuilder,
    req: &HttpRequest,
    replaced: &[&str],
    next: Option<&str>,
) {
    let Some(next) = next else { return };
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(req.query_string().as_bytes()) {
        if k != "cursor" && !replaced.contains(&k.as_ref()) {
            query.append_pair(&k, &v);
        }
    }
    query.append_pair("cursor", next);
    response.insert_header((
        header::LINK,
        format!("<{}?{}>; rel=\"next\"", req.path(), query.finish()),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;
    use actix_web::HttpResponse;

    #[test]
    fn sealed_cursors_round_trip_and_stay_with_their_list() {
        let sealed = seal("users", Some("id_a@example.com".into())).unwrap();
        assert!(!sealed.contains('@'));
        assert_eq!(
            open("users", Some(&sealed)).unwrap().unwrap(),
            "id_a@example.com"
        );
        assert!(open("departments", Some(&sealed)).is_err());
        assert!(open("users", Some("0_018f")).is_err());
        assert_eq!(open("users", None).unwrap(), None);
    }

    #[test]
    fn limits_default_and_refuse_out_of_range() {
        assert_eq!(limit(None).unwrap(), 50);
        assert_eq!(limit(Some(500)).unwrap(), 500);
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(501)).is_err());
    }

    #[test]
    fn position_cursors_round_trip_and_refuse_other_kinds() {
        let c = position_cursor("events", 42);
        assert_eq!(decode_position_cursor("events", &c).unwrap(), 42);
        assert!(decode_position_cursor("checkpoints", &c).is_err());
        assert!(decode_position_cursor("events", "42").is_err());
    }

    #[test]
    fn the_link_repeats_the_request_with_the_next_cursor() {
        let req = TestRequest::get()
            .uri("/api/v1/users?limit=2&cursor=old&after=3&min_position=9")
            .to_http_request();
        let mut res = HttpResponse::Ok();
        link_next(&mut res, &req, &["after"], Some("a b+c"));
        let res = res.finish();
        assert_eq!(
            res.headers().get(header::LINK).unwrap(),
            "</api/v1/users?limit=2&min_position=9&cursor=a+b%2Bc>; rel=\"next\""
        );
        let mut last = HttpResponse::Ok();
        link_next(&mut last, &req, &[], None);
        assert!(last.finish().headers().get(header::LINK).is_none());
    }
}
