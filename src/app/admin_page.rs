//! The Socket.IO Admin UI's static files (`ui/dist` of the `@socket.io/admin-ui` npm package)
//! at `/admin-ui/`, read into memory once. The UI is a single page with relative paths and
//! hash routing, so it works under any path; it connects to the admin namespace it is told of
//! in its connection form.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::Path as UrlPath;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use bytes::Bytes;

/// Where the UI is served.
pub const PATH: &str = "/admin-ui/";

/// The UI's files below `dir` (source maps left out), served at [`PATH`]. A missing directory
/// is not fatal: the page then says how to install it.
pub fn routes(dir: &Path) -> Router {
    let files = Arc::new(read_all(dir).unwrap_or_else(|e| {
        tracing::warn!(dir = %dir.display(), "Admin UI not found ({e}); run `npm ci --prefix web`");
        HashMap::new()
    }));
    let index = files.clone();
    Router::new()
        .route("/admin-ui", get(|| async { Redirect::permanent(PATH) }))
        .route(
            PATH,
            get(move || async move { serve(&index, "index.html") }),
        )
        .route(
            "/admin-ui/{*file}",
            get(move |UrlPath(file): UrlPath<String>| async move { serve(&files, &file) }),
        )
}

fn serve(files: &HashMap<String, Bytes>, name: &str) -> Response {
    match files.get(name) {
        Some(body) => ([(header::CONTENT_TYPE, content_type(name))], body.clone()).into_response(),
        None if files.is_empty() => (
            StatusCode::NOT_FOUND,
            "The Admin UI is not installed: run `npm ci --prefix web`.\n",
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "application/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

/// Every file below `dir` by its path relative to it (`/`-separated), source maps aside.
fn read_all(dir: &Path) -> std::io::Result<HashMap<String, Bytes>> {
    let mut files = HashMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e != "map")
                && let Ok(relative) = path.strip_prefix(dir)
            {
                let name = relative.to_string_lossy().replace('\\', "/");
                files.insert(name, Bytes::from(std::fs::read(&path)?));
            }
        }
    }
    Ok(files)
}
