//! The request path every request takes, in API.md's stage order: request id and
//! logging around everything, then auth (for `/v1`), then route and method from
//! [`crate::routes::ROUTES`], then the in-flight cap and readiness, then the handler.
//! The requests served most, a bodiless GET or HEAD of one key (its envelope or its
//! raw value) and a PUT of one key, take the same stages without axum's router
//! ([`App::get_key`], [`App::put_key`]): no boxed body, no copies of the URI and
//! headers, no `tracing` span unless a line is logged.

use std::ops::Deref;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::DefaultBodyLimit;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use caskade_engine::Engine;
use futures_util::FutureExt;
use hyper::body::{Frame, SizeHint};
use tokio::sync::{Semaphore, SemaphorePermit};
use tower::ServiceExt;
use tracing::{Instrument, error, info, info_span};

use crate::auth::{Scope, Tokens};
use crate::logging;
use crate::metrics::Metrics;
use crate::problem::{ApiError, ErrorCode};
use crate::request_id::{self, RequestId};
use crate::routes::{self, Match, UNMATCHED};
use crate::state::AppState;

/// The server as the connections see it. Exists before the engine is open, so
/// `/healthz` and `/readyz` answer during recovery.
#[derive(Debug)]
pub struct App {
    /// `None` = no `--auth-tokens`: `/v1` is open (and only loopback is served).
    tokens: Option<Tokens>,
    /// Request and engine metrics.
    metrics: Arc<Metrics>,
    /// Permits for `/v1` requests; none left → 503 at once instead of a queue.
    inflight: Arc<Semaphore>,
    /// The cap, for the 503's detail.
    inflight_max: usize,
    /// The engine, set once recovery has finished; shared with the metrics collector.
    engine: Arc<OnceLock<Engine>>,
    /// The `/v1` router, built when the engine is open (its state needs the engine).
    router: OnceLock<Router>,
    /// The router's state, for the routes served without the router; set after it.
    state: OnceLock<AppState>,
    /// Set by shutdown: `/readyz` and new `/v1` requests answer 503.
    shutting_down: AtomicBool,
    /// The OpenAPI document, rendered once.
    openapi: Bytes,
}

impl App {
    /// A server that is not ready yet: `/v1` answers 503 until [`App::set_ready`].
    pub fn new(tokens: Option<Tokens>, inflight_max: usize) -> Arc<App> {
        let engine = Arc::new(OnceLock::new());
        let openapi = serde_json::to_vec(&crate::openapi::document()).unwrap_or_default();
        let inflight = Arc::new(Semaphore::new(inflight_max));
        let metrics = Metrics::new(engine.clone(), inflight.clone(), inflight_max);
        Arc::new(App {
            tokens,
            metrics: Arc::new(metrics),
            inflight,
            inflight_max,
            engine,
            router: OnceLock::new(),
            state: OnceLock::new(),
            shutting_down: AtomicBool::new(false),
            openapi: Bytes::from(openapi),
        })
    }

    /// Recovery has finished: serve `/v1` from now on.
    pub fn set_ready(&self, state: AppState) {
        let engine = state.engine.clone();
        let _ = self.router.set(router(state.clone()));
        let _ = self.state.set(state);
        let _ = self.engine.set(engine);
    }

    /// Shutdown has begun: `/readyz` answers 503 so balancers drain this node.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// True once the engine is open and until shutdown begins.
    pub fn is_ready(&self) -> bool {
        self.router.get().is_some() && !self.shutting_down.load(Ordering::SeqCst)
    }

    /// The open engine, for closing it at shutdown.
    pub fn engine(&self) -> Option<Engine> {
        self.engine.get().cloned()
    }

    /// Serves one request: never fails, every problem is an API.md error envelope.
    pub async fn handle(self: Arc<Self>, req: Request<Body>) -> Response {
        let started = Instant::now();
        if let Some(response) = self.get_key(&req) {
            return response;
        }
        let (mut req, body_read) = watch_body(req);
        let id = request_id::header_or_fresh(req.headers());
        let id_text = id.to_str().unwrap_or_default();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let found = routes::find(&method, &path);
        let route = match found {
            Match::Found(t) | Match::WrongMethod(t) => t,
            Match::NoRoute => UNMATCHED,
        };
        req.extensions_mut().insert(RequestId(id_text.to_owned()));
        let span = info_span!("request", request_id = %id_text);
        let mut response = self.dispatch(req, &path, found).instrument(span).await;
        self.finish(&method, route, &path, id_text, &response, started);
        stamp(&mut response, id, body_read.load(Ordering::Relaxed));
        response
    }

    /// A bodiless read of one key — `GET /v1/kv/{entity}/{key}` (the envelope, the
    /// request served most), `GET …/value` (the raw bytes) or a `HEAD` of either — or
    /// `None` for any other request ([`App::handle`] serves those). The same stages as
    /// [`App::dispatch`] and the router (auth, in-flight cap, readiness, the handler,
    /// HEAD's body dropped after its `Content-Length` is set), called directly: no
    /// router, no copies of the URI and headers, no span (an error line builds one), no
    /// future.
    pub fn get_key<B: HttpBody>(&self, req: &Request<B>) -> Option<Response> {
        let read = KeyRead::of(req)?;
        let started = Instant::now();
        let id = request_id::header_or_fresh(req.headers());
        let id_text = id.to_str().unwrap_or_default();
        let path = req.uri().path();
        let mut response = self.serve_get_key(req, read, path, id_text);
        if read.head {
            drop_body(&mut response);
        }
        self.finish(req.method(), read.route, path, id_text, &response, started);
        stamp(&mut response, id, true);
        Some(response)
    }

    fn serve_get_key<B>(&self, req: &Request<B>, read: KeyRead, path: &str, id: &str) -> Response {
        let (_permit, state) = match self.admit(req.method(), req.headers(), path) {
            Ok(admitted) => admitted,
            Err(refused) => return *refused,
        };
        let handler = if read.is_envelope() {
            crate::kv::get_envelope_now
        } else {
            crate::kv::get_value_now
        };
        logging::with_request(id, || {
            let served = std::panic::catch_unwind(AssertUnwindSafe(|| {
                handler(state, req.uri(), req.headers())
            }));
            match served {
                Ok(Ok(response)) => response,
                Ok(Err(error)) => error.into_response(),
                Err(_) => handler_panicked(path).into_response(),
            }
        })
    }

    /// True for `PUT /v1/kv/{entity}/{key}`, which [`App::put_key`] serves.
    pub fn is_put_key<B>(req: &Request<B>) -> bool {
        req.method() == Method::PUT && routes::is_kv_key(req.uri().path())
    }

    /// `PUT /v1/kv/{entity}/{key}` ([`App::is_put_key`]), served as [`App::get_key`]
    /// serves its GET: the same stages as the router's, called directly, with hyper's
    /// own body (not boxed), no copies of the URI and headers, no span.
    pub async fn put_key<B>(&self, req: Request<B>) -> Response
    where
        B: HttpBody<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let id = request_id::header_or_fresh(req.headers());
        let id_text = id.to_str().unwrap_or_default();
        let (parts, body) = req.into_parts();
        let path = parts.uri.path();
        let body_read = AtomicBool::new(body.is_end_stream());
        let body = Watched {
            inner: body,
            done: &body_read,
        };
        let served = logging::in_request(id_text, self.serve_put_key(&parts, path, body));
        let mut response = served.await;
        self.finish(
            &Method::PUT,
            routes::KV_KEY,
            path,
            id_text,
            &response,
            started,
        );
        stamp(&mut response, id, body_read.load(Ordering::Relaxed));
        response
    }

    async fn serve_put_key<B>(&self, parts: &Parts, path: &str, body: B) -> Response
    where
        B: HttpBody<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (_permit, state) = match self.admit(&parts.method, &parts.headers, path) {
            Ok(admitted) => admitted,
            Err(refused) => return *refused,
        };
        let put = crate::kv::put_now(state, &parts.uri, &parts.headers, body);
        match AssertUnwindSafe(put).catch_unwind().await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => error.into_response(),
            Err(_) => handler_panicked(path).into_response(),
        }
    }

    /// The stages before the handler of a request served without the router
    /// ([`App::get_key`], [`App::put_key`]), in API.md's order: auth, the in-flight cap,
    /// readiness. The in-flight permit and the open store, or the answer that refuses
    /// the request (boxed: a refusal is the rare path).
    fn admit(
        &self,
        method: &Method,
        headers: &HeaderMap,
        path: &str,
    ) -> Result<(SemaphorePermit<'_>, &AppState), Box<Response>> {
        if let Err(denied) = self.authorize(method, headers, path) {
            return Err(Box::new(denied.into_response()));
        }
        let Ok(permit) = self.inflight.try_acquire() else {
            return Err(Box::new(self.too_busy(path)));
        };
        match self.state.get() {
            Some(state) if !self.shutting_down.load(Ordering::SeqCst) => Ok((permit, state)),
            _ => Err(Box::new(with_retry_after(self.unavailable(path)))),
        }
    }

    /// Counts the request and writes its access-log line.
    fn finish(
        &self,
        method: &Method,
        route: &'static str,
        path: &str,
        id: &str,
        response: &Response,
        started: Instant,
    ) {
        let took = started.elapsed();
        let status = response.status();
        self.metrics.observe(method, route, status, took);
        let line = logging::Access {
            request_id: id,
            method: method.as_str(),
            route,
            path,
            status: status.as_u16(),
            latency_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        };
        if !logging::access(&line) {
            info_span!("request", request_id = %id).in_scope(|| {
                info!(%method, route, path, status = status.as_u16(),
                    latency_ms = line.latency_ms(), "request");
            });
        }
    }

    async fn dispatch(&self, req: Request<Body>, path: &str, found: Match) -> Response {
        if is_v1(path)
            && let Err(denied) = self.authorize(req.method(), req.headers(), path)
        {
            return denied.into_response();
        }
        let template = match found {
            Match::NoRoute => return route_not_found(path).into_response(),
            Match::WrongMethod(t) => return method_not_allowed(req.method(), path, t),
            Match::Found(t) => t,
        };
        match template {
            "/healthz" => ok_json(StatusCode::OK, r#"{"ok":true,"data":{"status":"alive"}}"#),
            "/readyz" => self.readyz(path),
            "/metrics" => self.metrics_response(path).await,
            "/openapi.json" => json_response(self.openapi.clone()),
            _ => self.v1(req, path).await,
        }
    }

    fn authorize(&self, method: &Method, headers: &HeaderMap, path: &str) -> Result<(), ApiError> {
        let Some(tokens) = &self.tokens else {
            return Ok(());
        };
        let needed = Scope::required(method, path);
        tokens
            .authorize(headers, needed)
            .map(|_| ())
            .map_err(|denied| ApiError::one(path, denied.code, denied.detail))
    }

    fn readyz(&self, path: &str) -> Response {
        if self.is_ready() {
            return ok_json(StatusCode::OK, r#"{"ok":true,"data":{"ready":true}}"#);
        }
        self.unavailable(path).into_response()
    }

    /// Why `/v1` cannot be served now.
    fn unavailable(&self, path: &str) -> ApiError {
        let detail = if self.shutting_down.load(Ordering::SeqCst) {
            "the server is shutting down; retry on another node or after restart"
        } else {
            "the store is still opening (recovery); retry when /readyz answers 200"
        };
        ApiError::one(path, ErrorCode::Unavailable, detail)
    }

    async fn metrics_response(&self, path: &str) -> Response {
        let metrics = self.metrics.clone();
        match tokio::task::spawn_blocking(move || metrics.render()).await {
            Ok(text) => (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
                )],
                text,
            )
                .into_response(),
            Err(_) => ApiError::one(path, ErrorCode::Internal, "rendering the metrics failed")
                .into_response(),
        }
    }

    /// The 503 of a full in-flight cap.
    fn too_busy(&self, path: &str) -> Response {
        let detail = format!(
            "too many requests in flight (limit {}); retry shortly",
            self.inflight_max
        );
        with_retry_after(ApiError::one(path, ErrorCode::Unavailable, detail))
    }

    async fn v1(&self, req: Request<Body>, path: &str) -> Response {
        let Ok(_permit) = self.inflight.clone().try_acquire_owned() else {
            return self.too_busy(path);
        };
        let router = match self.router.get() {
            Some(router) if !self.shutting_down.load(Ordering::SeqCst) => router.clone(),
            _ => return with_retry_after(self.unavailable(path)),
        };
        let served = AssertUnwindSafe(router.oneshot(req)).catch_unwind().await;
        match served {
            Ok(Ok(response)) => json_405(response, path),
            Ok(Err(never)) => match never {},
            Err(_) => handler_panicked(path).into_response(),
        }
    }
}

/// Logs a handler's panic and answers 500.
fn handler_panicked(path: &str) -> ApiError {
    logging::in_request_span(|| error!("the handler panicked; answering 500"));
    ApiError::one(
        path,
        ErrorCode::Internal,
        "an internal error occurred; quote the x-request-id header when reporting it",
    )
}

/// Adds the request id, and `Connection: close` when the body was left unread: its
/// bytes are still on the wire, so the connection cannot carry another request, and
/// the client should hear that rather than find out. A 304 carries no `Content-Length`.
/// Called after [`App::finish`] has logged the request, so that the id moves into the
/// response rather than being cloned (a clone of a fresh id allocates).
fn stamp(response: &mut Response, id: HeaderValue, body_read: bool) {
    response.headers_mut().insert(request_id::HEADER, id);
    if !body_read {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    // The router sets `Content-Length` from the (empty) body on HEAD; on a 304 that
    // would claim the representation is 0 bytes (RFC 9110 §8.6), and GET's 304 has none.
    if response.status() == StatusCode::NOT_MODIFIED {
        response.headers_mut().remove(header::CONTENT_LENGTH);
    }
}

/// Which read of one key [`App::get_key`] serves without the router.
#[derive(Clone, Copy, Debug)]
struct KeyRead {
    /// The route's template, for metrics and the access line.
    route: &'static str,
    /// A HEAD: the answer's headers only.
    head: bool,
}

impl KeyRead {
    /// The read a request asks for, or `None` when it is not a bodiless GET or HEAD of
    /// one key. As the router's table says: `GET /v1/kv/{entity}/{key}` is the envelope;
    /// `HEAD` of it, and `GET` or `HEAD` of `…/value`, the raw value.
    fn of<B: HttpBody>(req: &Request<B>) -> Option<KeyRead> {
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => return None,
        };
        if !req.body().is_end_stream() {
            return None;
        }
        let path = req.uri().path();
        let route = if routes::is_kv_key(path) {
            routes::KV_KEY
        } else if routes::is_kv_value(path) {
            routes::KV_VALUE
        } else {
            return None;
        };
        Some(KeyRead { route, head })
    }

    /// GET's envelope; every other read answers the raw value.
    fn is_envelope(self) -> bool {
        self.route == routes::KV_KEY && !self.head
    }
}

/// What the router does to every HEAD answer: `Content-Length` set from the body's
/// exact size, unless the answer has one, then the body dropped.
fn drop_body(response: &mut Response) {
    if let Some(len) = response.body().size_hint().exact()
        && !response.headers().contains_key(header::CONTENT_LENGTH)
    {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    *response.body_mut() = Body::empty();
}

/// Wraps the request body so the caller learns whether it was read to its end.
fn watch_body(req: Request<Body>) -> (Request<Body>, Arc<AtomicBool>) {
    let (parts, body) = req.into_parts();
    let done = Arc::new(AtomicBool::new(body.is_end_stream()));
    let watched = Watched {
        inner: body,
        done: done.clone(),
    };
    (Request::from_parts(parts, Body::new(watched)), done)
}

/// A request body that sets `done` once its last frame has been read. `D` is the
/// flag's owner: an `Arc` for a body handed to the router (which needs it `'static`),
/// a reference for one read while the caller waits.
struct Watched<B, D> {
    inner: B,
    done: D,
}

impl<B, D> HttpBody for Watched<B, D>
where
    B: HttpBody + Unpin,
    D: Deref<Target = AtomicBool> + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.done.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The `/v1` router over the open engine: kv routes and admin routes. Bodies are not
/// limited here: the kv routes enforce API.md's limits while the body streams in.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(crate::kv::routes())
        .merge(crate::admin::routes())
        .fallback(fallback)
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Reached only when the route table lists a route the router does not serve.
async fn fallback(uri: Uri) -> ApiError {
    route_not_found(uri.path())
}

fn is_v1(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

fn route_not_found(path: &str) -> ApiError {
    ApiError::one(
        path,
        ErrorCode::RouteNotFound,
        "no route has this path; /openapi.json lists every route",
    )
}

fn method_not_allowed(method: &Method, path: &str, template: &str) -> Response {
    let allow = routes::allow(template);
    let detail = format!(
        "{} is not allowed here; allowed: {}",
        method_name(method),
        allow.to_str().unwrap_or_default()
    );
    ApiError::one(path, ErrorCode::MethodNotAllowed, detail)
        .with_allow(allow)
        .into_response()
}

/// The method for a message, bounded so a giant custom method cannot flood a detail.
fn method_name(method: &Method) -> &str {
    let name = method.as_str();
    if name.len() <= 16 {
        name
    } else {
        "this method"
    }
}

/// A bare 405 from a handler's router becomes the API's JSON 405, keeping `Allow`.
fn json_405(response: Response, path: &str) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED || is_json(&response) {
        return response;
    }
    let mut error = ApiError::one(
        path,
        ErrorCode::MethodNotAllowed,
        "this method is not allowed on this route; see the Allow header",
    );
    if let Some(allow) = response.headers().get(header::ALLOW) {
        error = error.with_allow(allow.clone());
    }
    error.into_response()
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

fn with_retry_after(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn ok_json(status: StatusCode, body: &'static str) -> Response {
    let mut response = json_response(Bytes::from_static(body.as_bytes()));
    *response.status_mut() = status;
    response
}

fn json_response(body: Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKENS: &str = "r-tok read\nw-tok write\na-tok admin\n";

    fn app(tokens: Option<&str>, inflight_max: usize) -> Arc<App> {
        let tokens = tokens.map(|t| Tokens::parse(t).unwrap_or_else(|e| panic!("{e}")));
        App::new(tokens, inflight_max)
    }

    async fn call(app: &Arc<App>, method: &str, path: &str, token: Option<&str>) -> Response {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = builder.body(Body::empty()).unwrap_or_default();
        app.clone().handle(req).await
    }

    async fn error_code(response: Response) -> u64 {
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await;
        let doc: serde_json::Value =
            serde_json::from_slice(&body.unwrap_or_default()).unwrap_or_default();
        doc["errors"][0]["error_code"].as_u64().unwrap_or(0)
    }

    #[tokio::test]
    async fn health_answers_before_the_store_is_open_and_ready_does_not() {
        let app = app(None, 8);
        assert_eq!(call(&app, "GET", "/healthz", None).await.status(), 200);
        let ready = call(&app, "GET", "/readyz", None).await;
        assert_eq!(ready.status(), 503);
        assert_eq!(error_code(ready).await, 5002);
        let kv = call(&app, "GET", "/v1/kv/user/a", None).await;
        assert_eq!(kv.status(), 503);
        assert!(kv.headers().contains_key(header::RETRY_AFTER));
    }

    #[tokio::test]
    async fn shutting_down_turns_readiness_and_v1_off() {
        let app = app(None, 8);
        app.begin_shutdown();
        assert_eq!(call(&app, "GET", "/readyz", None).await.status(), 503);
        let kv = call(&app, "GET", "/v1/kv/user/a", None).await;
        let body = axum::body::to_bytes(kv.into_body(), 1 << 20).await;
        let text = String::from_utf8(body.unwrap_or_default().to_vec()).unwrap_or_default();
        assert!(text.contains("shutting down"), "{text}");
        assert_eq!(call(&app, "GET", "/healthz", None).await.status(), 200);
    }

    #[tokio::test]
    async fn unknown_routes_are_json_404_and_wrong_methods_json_405_with_allow() {
        let app = app(None, 8);
        let missing = call(&app, "GET", "/v1/nothing-here", None).await;
        assert_eq!(missing.status(), 404);
        assert_eq!(error_code(missing).await, 2002);
        let wrong = call(&app, "PATCH", "/v1/kv/user/a", None).await;
        assert_eq!(wrong.status(), 405);
        let allow = wrong.headers().get(header::ALLOW).cloned();
        assert_eq!(
            allow,
            Some(HeaderValue::from_static("PUT, GET, HEAD, DELETE"))
        );
        assert_eq!(error_code(wrong).await, 2003);
    }

    #[tokio::test]
    async fn auth_comes_before_routing_and_checks_scopes() {
        let app = app(Some(TOKENS), 8);
        let anonymous = call(&app, "GET", "/v1/nothing-here", None).await;
        assert_eq!(anonymous.status(), 401);
        assert_eq!(
            anonymous.headers().get(header::WWW_AUTHENTICATE),
            Some(&HeaderValue::from_static("Bearer"))
        );
        let wrong = call(&app, "GET", "/v1/kv/user/a", Some("nope")).await;
        assert_eq!(error_code(wrong).await, 3001);
        let reader_writes = call(&app, "PUT", "/v1/kv/user/a", Some("r-tok")).await;
        assert_eq!(reader_writes.status(), 403);
        assert_eq!(error_code(reader_writes).await, 3002);
        let writer_admin = call(&app, "GET", "/v1/admin/stats", Some("w-tok")).await;
        assert_eq!(writer_admin.status(), 403);
        let admin_reads = call(&app, "GET", "/v1/kv/user/a", Some("a-tok")).await;
        assert_eq!(
            admin_reads.status(),
            503,
            "past auth, the store is not open"
        );
        assert_eq!(call(&app, "GET", "/healthz", None).await.status(), 200);
    }

    #[tokio::test]
    async fn beyond_the_inflight_cap_requests_get_503_at_once() {
        let app = app(None, 0);
        let refused = call(&app, "GET", "/v1/kv/user/a", None).await;
        assert_eq!(refused.status(), 503);
        let body = axum::body::to_bytes(refused.into_body(), 1 << 20).await;
        let text = String::from_utf8(body.unwrap_or_default().to_vec()).unwrap_or_default();
        assert!(text.contains("too many requests in flight"), "{text}");
    }

    #[tokio::test]
    async fn request_ids_are_echoed_or_generated() {
        let app = app(None, 8);
        let req = Request::get("/healthz")
            .header(request_id::HEADER, "trace-42")
            .body(Body::empty())
            .unwrap_or_default();
        let echoed = app.clone().handle(req).await;
        assert_eq!(
            echoed.headers().get(request_id::HEADER),
            Some(&HeaderValue::from_static("trace-42"))
        );
        let generated = call(&app, "GET", "/healthz", None).await;
        assert!(generated.headers().contains_key(request_id::HEADER));
    }

    #[tokio::test]
    async fn an_unread_body_closes_the_connection_and_a_read_one_does_not() {
        let app = app(None, 8);
        let req = Request::put("/v1/nothing-here")
            .body(Body::from("{\"value\":1}"))
            .unwrap_or_default();
        let refused = app.clone().handle(req).await;
        let close = Some(&HeaderValue::from_static("close"));
        assert_eq!(refused.headers().get(header::CONNECTION), close);
        let bodiless = call(&app, "GET", "/v1/nothing-here", None).await;
        assert_eq!(bodiless.headers().get(header::CONNECTION), None);
    }

    #[tokio::test]
    async fn openapi_and_metrics_are_served() {
        let app = app(None, 8);
        assert_eq!(call(&app, "GET", "/openapi.json", None).await.status(), 200);
        call(&app, "GET", "/healthz", None).await;
        let metrics = call(&app, "GET", "/metrics", None).await;
        assert_eq!(metrics.status(), 200);
        let body = axum::body::to_bytes(metrics.into_body(), 1 << 20).await;
        let text = String::from_utf8(body.unwrap_or_default().to_vec()).unwrap_or_default();
        assert!(text.contains(r#"route="/healthz""#), "{text}");
    }
}
