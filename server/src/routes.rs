//! The one table of every route the server answers. The dispatcher decides 404 and
//! 405 from it, metrics and logs label requests with its templates, and the OpenAPI
//! document is checked against it, so the three can never disagree.

use axum::http::{HeaderValue, Method};

/// One route: a method and a path template in axum's `{param}` syntax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The HTTP method, upper case.
    pub method: &'static str,
    /// The path template, e.g. `/v1/kv/{entity}/{key}`.
    pub template: &'static str,
}

const fn route(method: &'static str, template: &'static str) -> Route {
    Route { method, template }
}

/// Every route of API.md. HEAD is listed wherever GET is, as API.md promises.
pub const ROUTES: &[Route] = &[
    route("GET", "/healthz"),
    route("HEAD", "/healthz"),
    route("GET", "/readyz"),
    route("HEAD", "/readyz"),
    route("GET", "/metrics"),
    route("HEAD", "/metrics"),
    route("GET", "/openapi.json"),
    route("HEAD", "/openapi.json"),
    route("PUT", "/v1/kv/{entity}/{key}"),
    route("GET", "/v1/kv/{entity}/{key}"),
    route("HEAD", "/v1/kv/{entity}/{key}"),
    route("DELETE", "/v1/kv/{entity}/{key}"),
    route("GET", "/v1/kv/{entity}/{key}/value"),
    route("HEAD", "/v1/kv/{entity}/{key}/value"),
    route("GET", "/v1/kv/{entity}"),
    route("HEAD", "/v1/kv/{entity}"),
    route("POST", "/v1/bulk"),
    route("GET", "/v1/admin/stats"),
    route("HEAD", "/v1/admin/stats"),
    route("POST", "/v1/admin/compact"),
    route("POST", "/v1/admin/backup"),
];

/// The template of one key (GET is the envelope), the route served most.
pub const KV_KEY: &str = "/v1/kv/{entity}/{key}";

/// Whether `path` fits [`KV_KEY`], i.e. `template_of(path) == Some(KV_KEY)`, without
/// walking the table: `/v1/kv/`, a non-empty entity, `/`, a non-empty key, no more `/`.
pub fn is_kv_key(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/v1/kv/") else {
        return false;
    };
    rest.split_once('/')
        .is_some_and(|(entity, key)| !entity.is_empty() && !key.is_empty() && !key.contains('/'))
}

/// The template of one key's raw value (`GET …/value`).
pub const KV_VALUE: &str = "/v1/kv/{entity}/{key}/value";

/// Whether `path` fits [`KV_VALUE`], i.e. `template_of(path) == Some(KV_VALUE)`,
/// without walking the table: a [`KV_KEY`] path followed by `/value`.
pub fn is_kv_value(path: &str) -> bool {
    path.strip_suffix("/value").is_some_and(is_kv_key)
}

/// Label used for requests that match no template, so metrics stay bounded.
pub const UNMATCHED: &str = "unmatched";

/// What the table says about a request path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    /// No template fits the path.
    NoRoute,
    /// A template fits but not with this method.
    WrongMethod(&'static str),
    /// Both fit.
    Found(&'static str),
}

/// Finds the template of `path` and whether `method` is served there.
pub fn find(method: &Method, path: &str) -> Match {
    let Some(template) = template_of(path) else {
        return Match::NoRoute;
    };
    let served = ROUTES
        .iter()
        .any(|r| r.template == template && r.method == method.as_str());
    if served {
        Match::Found(template)
    } else {
        Match::WrongMethod(template)
    }
}

/// The template a raw path fits: literal segments equal, `{param}` segments non-empty.
pub fn template_of(path: &str) -> Option<&'static str> {
    ROUTES
        .iter()
        .map(|r| r.template)
        .find(|template| fits(template, path))
}

/// The `Allow` header for a template: its methods, in table order.
pub fn allow(template: &str) -> HeaderValue {
    let methods: Vec<&str> = ROUTES
        .iter()
        .filter(|r| r.template == template)
        .map(|r| r.method)
        .collect();
    HeaderValue::from_str(&methods.join(", ")).unwrap_or(HeaderValue::from_static(""))
}

fn fits(template: &str, path: &str) -> bool {
    let mut want = template.split('/');
    let mut have = path.split('/');
    loop {
        match (want.next(), have.next()) {
            (None, None) => return true,
            (Some(w), Some(h)) if w.starts_with('{') => {
                if h.is_empty() {
                    return false;
                }
            }
            (Some(w), Some(h)) if w == h => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_find_their_templates() {
        assert_eq!(
            template_of("/v1/kv/user/alice"),
            Some("/v1/kv/{entity}/{key}")
        );
        assert_eq!(
            template_of("/v1/kv/user/value/value"),
            Some("/v1/kv/{entity}/{key}/value")
        );
        assert_eq!(template_of("/v1/kv/user"), Some("/v1/kv/{entity}"));
        assert_eq!(template_of("/v1/kv/user/"), None);
        assert_eq!(template_of("/v1/kv//a"), None);
        assert_eq!(template_of("/v1/nothing-here"), None);
        assert_eq!(template_of("/healthz/"), None);
    }

    #[test]
    fn wrong_method_names_the_template_and_allow_lists_methods() {
        let found = find(&Method::PATCH, "/v1/kv/user/a");
        assert_eq!(found, Match::WrongMethod("/v1/kv/{entity}/{key}"));
        assert_eq!(allow("/v1/kv/{entity}/{key}"), "PUT, GET, HEAD, DELETE");
        assert_eq!(find(&Method::HEAD, "/readyz"), Match::Found("/readyz"));
    }

    #[test]
    fn the_kv_shortcuts_agree_with_the_table() {
        type Shortcut = fn(&str) -> bool;
        let shortcuts: [(&str, Shortcut); 2] = [(KV_KEY, is_kv_key), (KV_VALUE, is_kv_value)];
        for (template, shortcut) in shortcuts {
            let table = |p: &str| template_of(p) == Some(template);
            for path in [
                "/v1/kv/user/alice",
                "/v1/kv/user/alice/value",
                "/v1/kv/user/value/value",
                "/v1/kv/user/value",
                "/v1/kv/user/",
                "/v1/kv/user//value",
                "/v1/kv//a",
                "/v1/kv//a/value",
                "/v1/kv/user",
                "/v1/kv/a/b/",
                "/v1/kv/a/b/value/",
                "/v1/kv/a/b/c/value",
                "/v1/kv/x/y",
                "/v2/kv/user/a",
                "/v2/kv/user/a/value",
                "/v1/kv/user/a%2Fb",
            ] {
                assert_eq!(shortcut(path), table(path), "{template}: {path}");
            }
            proptest::proptest!(|(path in "(/|v1|kv|user|a|value|%2F){0,9}")| {
                proptest::prop_assert_eq!(shortcut(&path), table(&path), "{}: {}", template, path);
            });
        }
    }

    #[test]
    fn templates_are_unique_per_method() {
        for (i, a) in ROUTES.iter().enumerate() {
            assert!(!ROUTES[i + 1..].contains(a), "{a:?} listed twice");
        }
    }
}
