//! `GET /`: the inspector, one self-contained page (inline script and
//! style, no external asset, no build step). It holds no data: it takes
//! the admin token from the URL fragment (`/#token=…`, which browsers never
//! send to the server, so it cannot reach a log) or from a form, and reads
//! `GET /events` with it. Its content security policy lets it talk to this
//! listener only.

use crate::http::Status;
use crate::server::conn::reply::Refusal;

const PAGE: &str = include_str!("inspector.html");

const HEADERS: &[(&str, &str)] = &[
    ("Content-Type", "text/html; charset=utf-8"),
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
         connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'",
    ),
    ("Cache-Control", "no-store"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
];

pub(super) fn page() -> Refusal {
    Refusal {
        status: Status::OK,
        headers: HEADERS,
        reason: PAGE.to_owned(),
    }
}
