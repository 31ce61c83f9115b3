//! A POST of a raw body as the server gets it from a careless client (bad input tests): whatever
//! it answers, and no error for a missing answer.

use std::time::Duration;

use serde_json::Value;

/// POSTs `body` as `application/json`: (status, JSON body or the text as a string, value of
/// `Retry-After`), whatever the status code; status 0 and the error as the body when there was no
/// HTTP answer.
pub fn post_raw(url: &str, body: &str, timeout: Duration) -> (u16, Value, Option<String>) {
    let resp = crate::http::with_key(crate::http::agent().post(url))
        .set("content-type", "application/json")
        .timeout(timeout)
        .send_string(body);
    let resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return (0, Value::String(e.to_string()), None),
    };
    let status = resp.status();
    let retry_after = resp.header("retry-after").map(String::from);
    let value = crate::http::json_or_text(resp.into_string().unwrap_or_default());
    (status, value, retry_after)
}
