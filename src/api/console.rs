//! The operator console: a one-page web app every node serves at `/ui`, from files compiled into
//! the binary (`src/api/console/`: HTML, plain JavaScript and CSS, plus a pinned copy of
//! cytoscape.js for the graph view). It needs nothing beyond the node that serves it, so it works
//! offline and behind any firewall that lets the API through.
//!
//! The page is only static files: it reads and changes the cluster through the same public HTTP
//! API as any client, with the API key the operator types in (kept in the browser's session
//! storage). That is why `/ui` needs no key (see `auth::required_role`): loading it reveals
//! nothing that is not in the binary, and every request it then makes is checked like a `curl`.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

use super::ApiError;

/// Where the console lives; `/ui`, `/ui/` and `/ui/<asset>` are served without a key.
pub const PREFIX: &str = "/ui";

/// The console's files, embedded at build time (each one `include_bytes!`-ed, so editing one
/// rebuilds the binary).
#[derive(RustEmbed)]
#[folder = "src/api/console/"]
struct Assets;

/// What the page may load and where it may connect: only this node. Styles may be inline
/// because the graph library sets element styles; nothing else is.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// `GET /ui` and `GET /ui/`: the page.
pub async fn index(headers: HeaderMap) -> Response {
    asset("index.html", &headers)
}

/// `GET /ui/{*path}`: one of the page's files.
pub async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    asset(&path, &headers)
}

/// The embedded file at `path` with its content type and an entity tag, or 304 when the
/// browser's copy is current, or the API's JSON 404.
fn asset(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            format!("the console has no file {path:?}; open {PREFIX} for the console"),
        )
        .into_response();
    };
    let hash = file.metadata.sha256_hash();
    let etag = format!(
        "\"{}\"",
        hash[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let etag = HeaderValue::from_str(&etag).expect("hex is a valid header value");
    let mut response = if headers.get(header::IF_NONE_MATCH) == Some(&etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(path)),
            )],
            file.data,
        )
            .into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, etag);
    // Revalidate every time: a node upgraded in place serves new files at the same names.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_names_is_embedded() {
        let page = Assets::get("index.html").expect("index.html is embedded");
        let page = std::str::from_utf8(&page.data).expect("utf-8");
        for name in ["app.js", "style.css", "cytoscape.min.js"] {
            assert!(
                page.contains(&format!("{PREFIX}/{name}")),
                "index.html does not load {PREFIX}/{name}"
            );
            assert!(Assets::get(name).is_some(), "{name} is not embedded");
        }
    }

    #[test]
    fn files_get_their_content_type_and_a_revalidating_etag() {
        let r = asset("app.js", &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        let etag = r.headers()[header::ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(asset("app.js", &again).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            asset("../Cargo.toml", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }
}
