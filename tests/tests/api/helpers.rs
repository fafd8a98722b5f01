//! The per-test server ([`TestApp`]) and the assertions every area shares.
//!
//! Each `spawn_app*` builds a real [`api_server::Application`] on `127.0.0.1:0` with a
//! database of its own (a fresh SQLite file, or a fresh PostgreSQL database), a cache
//! (in-process memory, or Redis under a key prefix no other test uses) and a random
//! bearer token, runs it on a tokio task, and talks to it over a real socket.
//!
//! Dropping a [`TestApp`] asks the server to shut down; [`TestApp::stop`] does it and
//! waits, reporting how the server ended.

use std::fmt::Display;
use std::time::Duration;

use api_server::{Application, Settings};
use integration_tests::{
    RedisServer, TestDatabase, postgres_url_or_skip, redis_client, redis_server_or_skip,
    redis_url_or_skip, test_name, unique_prefix,
};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, IF_MATCH, IF_NONE_MATCH};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server of one test, and a client for it.
#[derive(Debug)]
pub struct TestApp {
    /// `http://127.0.0.1:{port}`.
    pub address: String,
    /// The bearer token writes need.
    pub token: String,
    /// The cache key prefix of this server (`{prefix}:product:…` in Redis).
    pub prefix: String,
    /// The database the server uses, to look behind its back.
    pub database_url: String,
    /// The Redis the server uses, if any.
    pub redis_url: Option<String>,
    /// The private Redis server, when the test owns one (it may stop it).
    pub redis_server: Option<RedisServer>,
    /// A plain HTTP client (no default headers).
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), String>>>,
    // Held for its `Drop`: the SQLite file's directory.
    _sqlite_dir: Option<TempDir>,
    // The PostgreSQL database, dropped with the app.
    postgres: Option<TestDatabase>,
}

/// A server on a fresh SQLite file with the in-process memory cache.
pub async fn spawn_app() -> TestApp {
    spawn_app_adjusted(|_| {}).await
}

/// [`spawn_app`] with some settings changed by `adjust`.
pub async fn spawn_app_adjusted(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let (dir, url) = sqlite_database();
    let mut app = start_adjusted(url, None, unique_prefix(&test_name()), adjust).await;
    app._sqlite_dir = Some(dir);
    app.wait_until_the_cache_is_ready().await;
    app
}

/// A server on a fresh SQLite file with Redis (`TEST_REDIS_URL` under a unique prefix, or
/// a private `redis-server`). `None`, after a loud notice, when no Redis is available.
pub async fn spawn_app_with_redis() -> Option<TestApp> {
    let (redis_url, server) = redis_url_or_skip(&test_name()).await?;
    let (dir, url) = sqlite_database();
    Some(build(url, Some(redis_url), server, Some(dir), None).await)
}

/// A server on a fresh SQLite file with a private `redis-server` that the test may stop
/// (`app.redis_server`). `None`, after a loud notice, without `redis-server`.
pub async fn spawn_app_with_private_redis() -> Option<TestApp> {
    let server = redis_server_or_skip(&test_name()).await?;
    let (dir, url) = sqlite_database();
    Some(build(url, Some(server.url()), Some(server), Some(dir), None).await)
}

/// A server on a fresh PostgreSQL database with Redis. `None`, after a loud notice, when
/// `TEST_DATABASE_URL` is unset or no Redis is available.
pub async fn spawn_app_on_postgres() -> Option<TestApp> {
    let database = postgres_url_or_skip(&test_name()).await?;
    let (redis_url, server) = redis_url_or_skip(&test_name()).await?;
    let url = database.url().to_owned();
    Some(build(url, Some(redis_url), server, None, Some(database)).await)
}

/// A fresh directory and the URL of an SQLite file in it.
fn sqlite_database() -> (TempDir, String) {
    let dir = tempfile::Builder::new()
        .prefix("api-test-")
        .tempdir()
        .expect("a temporary directory for the SQLite file");
    let url = integration_tests::sqlite_url(dir.path(), "products.db");
    (dir, url)
}

async fn build(
    database_url: String,
    redis_url: Option<String>,
    redis_server: Option<RedisServer>,
    sqlite_dir: Option<TempDir>,
    postgres: Option<TestDatabase>,
) -> TestApp {
    let mut app = start(database_url, redis_url, unique_prefix(&test_name())).await;
    app.redis_server = redis_server;
    app._sqlite_dir = sqlite_dir;
    app.postgres = postgres;
    app.wait_until_the_cache_is_ready().await;
    app
}

/// A server on `database_url` with cache prefix `prefix` (and Redis at `redis_url`, if
/// any), serving; it does not wait for its cache to be ready.
pub async fn start(database_url: String, redis_url: Option<String>, prefix: String) -> TestApp {
    start_adjusted(database_url, redis_url, prefix, |_| {}).await
}

/// [`start`] with some settings changed by `adjust`.
pub async fn start_adjusted(
    database_url: String,
    redis_url: Option<String>,
    prefix: String,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    let token = format!("test-token-{:032x}", rand::random::<u128>());
    let mut settings = Settings {
        bind: "127.0.0.1:0".parse().expect("a socket address"),
        database_url: database_url.clone(),
        redis_url: redis_url.clone(),
        cache_prefix: prefix.clone(),
        cache_ttl_secs: 300,
        cache_max_entries: 100_000,
        api_token: Some(token.clone()),
        ..api_server::Settings::default()
    };
    adjust(&mut settings);
    let application = Application::build(&settings)
        .await
        .expect("the application builds");
    assert_eq!(application.token(), token, "the configured token is used");
    let address = format!("http://127.0.0.1:{}", application.port());
    let (shutdown, stop) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        application
            .run_until(async {
                let _ = stop.await;
            })
            .await
            .map_err(|error| format!("{error:#}"))
    });
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("an HTTP client");
    TestApp {
        address,
        token,
        prefix,
        database_url,
        redis_url,
        redis_server: None,
        client,
        shutdown: Some(shutdown),
        server: Some(server),
        _sqlite_dir: None,
        postgres: None,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

impl TestApp {
    /// Asks the server to shut down and waits for it; `Err` if it failed or panicked.
    pub async fn stop(mut self) -> Result<(), String> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match self.server.take() {
            Some(server) => tokio::time::timeout(Duration::from_secs(15), server)
                .await
                .map_err(|_| "the server did not stop within 15 s".to_owned())?
                .map_err(|error| format!("the server task failed: {error}"))?,
            None => Ok(()),
        }
    }

    /// A second server on this one's database and cache prefix, with Redis at
    /// `redis_url` (this one's, or a relay to it), once its cache is ready: as a second
    /// instance of a deployment.
    pub async fn spawn_peer(&self, redis_url: Option<String>) -> TestApp {
        let peer = start(self.database_url.clone(), redis_url, self.prefix.clone()).await;
        peer.wait_until_the_cache_is_ready().await;
        peer
    }

    /// Waits until `/health` reports the cache `ok`. A server keeps reads off its cache
    /// (and reports it `degraded`) until the outbox relay's first pass, a few
    /// milliseconds after start; tests that expect cache hits start after that.
    pub async fn wait_until_the_cache_is_ready(&self) {
        integration_tests::wait_until(Duration::from_secs(10), async || {
            let health: Value = self.health().await.json().await.unwrap_or_default();
            if health["cache"] == "ok" {
                Ok(())
            } else {
                Err(format!("the cache was not ready after start: {health}"))
            }
        })
        .await;
    }

    /// The private Redis of an app from [`spawn_app_with_private_redis`], to stop,
    /// freeze or restart.
    pub fn private_redis(&mut self) -> &mut RedisServer {
        self.redis_server.as_mut().expect("a private Redis")
    }

    /// Drops the PostgreSQL database under the running server, ending its connections:
    /// a database outage that does not heal.
    pub async fn drop_postgres_database(&mut self) {
        let database = self.postgres.take().expect("a server on PostgreSQL");
        database.cleanup().await.expect("the database is dropped");
    }

    /// `{address}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A request without credentials.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// A request with this server's bearer token.
    pub fn authed(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path)
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
    }

    // --- one method per endpoint ---------------------------------------------------------

    /// `GET /api/products?{query}`.
    pub async fn list_products(&self, query: &str) -> Response {
        let path = if query.is_empty() {
            "/api/products".to_owned()
        } else {
            format!("/api/products?{query}")
        };
        send(self.request(Method::GET, &path)).await
    }

    /// `GET /api/products/{id}`.
    pub async fn get_product(&self, id: impl Display) -> Response {
        send(self.request(Method::GET, &format!("/api/products/{id}"))).await
    }

    /// `GET /api/products/{id}` with `If-None-Match`.
    pub async fn get_product_if_none_match(&self, id: impl Display, etag: &str) -> Response {
        send(
            self.request(Method::GET, &format!("/api/products/{id}"))
                .header(IF_NONE_MATCH, etag),
        )
        .await
    }

    /// `POST /api/products` with the token.
    pub async fn post_product(&self, body: &Value) -> Response {
        send(self.authed(Method::POST, "/api/products").json(body)).await
    }

    /// `PUT /api/products/{id}` with the token.
    pub async fn put_product(
        &self,
        id: impl Display,
        body: &Value,
        if_match: Option<&str>,
    ) -> Response {
        self.write_product(Method::PUT, id, body, if_match).await
    }

    /// `PATCH /api/products/{id}` with the token.
    pub async fn patch_product(
        &self,
        id: impl Display,
        body: &Value,
        if_match: Option<&str>,
    ) -> Response {
        self.write_product(Method::PATCH, id, body, if_match).await
    }

    async fn write_product(
        &self,
        method: Method,
        id: impl Display,
        body: &Value,
        if_match: Option<&str>,
    ) -> Response {
        let request = self
            .authed(method, &format!("/api/products/{id}"))
            .json(body);
        send(with_if_match(request, if_match)).await
    }

    /// `DELETE /api/products/{id}` with the token.
    pub async fn delete_product(&self, id: impl Display, if_match: Option<&str>) -> Response {
        let request = self.authed(Method::DELETE, &format!("/api/products/{id}"));
        send(with_if_match(request, if_match)).await
    }

    /// `GET /health`.
    pub async fn health(&self) -> Response {
        send(self.request(Method::GET, "/health")).await
    }

    /// `GET /metrics`, as text (asserting 200).
    pub async fn metrics(&self) -> String {
        let response = send(self.request(Method::GET, "/metrics")).await;
        assert_eq!(response.status(), StatusCode::OK, "GET /metrics");
        response.text().await.expect("the metrics text")
    }

    /// `GET /openapi.json`, as JSON (asserting 200).
    pub async fn openapi(&self) -> Value {
        let response = send(self.request(Method::GET, "/openapi.json")).await;
        assert_eq!(response.status(), StatusCode::OK, "GET /openapi.json");
        response.json().await.expect("the OpenAPI document is JSON")
    }

    /// `GET {path}` (for `/docs`).
    pub async fn get(&self, path: &str) -> Response {
        send(self.request(Method::GET, path)).await
    }

    // --- conveniences ----------------------------------------------------------------------

    /// Creates a product (asserting 201) and returns it.
    pub async fn create(&self, body: &Value) -> Value {
        let response = self.post_product(body).await;
        json_with_status(response, StatusCode::CREATED, "POST /api/products").await
    }

    /// PATCHes product `id` with `body`, without `If-Match` (asserting 200), and returns
    /// the product.
    pub async fn patch(&self, id: impl Display, body: &Value) -> Value {
        let response = self.patch_product(&id, body, None).await;
        json_with_status(
            response,
            StatusCode::OK,
            &format!("PATCH /api/products/{id}"),
        )
        .await
    }

    /// PUTs `body` as product `id`, without `If-Match` (asserting 200), and returns the
    /// product.
    pub async fn replace(&self, id: impl Display, body: &Value) -> Value {
        let response = self.put_product(&id, body, None).await;
        json_with_status(response, StatusCode::OK, &format!("PUT /api/products/{id}")).await
    }

    /// Creates `n` products `{sku_stem}-{i}` in category `category` and returns them.
    pub async fn create_many(&self, sku_stem: &str, n: usize, category: &str) -> Vec<Value> {
        let mut created = Vec::with_capacity(n);
        for i in 0..n {
            let mut body = new_product(&format!("{sku_stem}-{i}"));
            body["category"] = json!(category);
            created.push(self.create(&body).await);
        }
        created
    }

    /// The product with `id` (asserting 200).
    pub async fn fetch(&self, id: impl Display) -> Value {
        let response = self.get_product(&id).await;
        json_with_status(response, StatusCode::OK, &format!("GET /api/products/{id}")).await
    }

    /// One list page (asserting 200).
    pub async fn fetch_page(&self, query: &str) -> Value {
        let response = self.list_products(query).await;
        json_with_status(
            response,
            StatusCode::OK,
            &format!("GET /api/products?{query}"),
        )
        .await
    }

    /// The Redis keys of this server's cache that start with `{prefix}:{namespace}:`.
    pub async fn redis_keys(&self, namespace: &str) -> Vec<String> {
        use fred::interfaces::ClientLike;
        let url = self.redis_url.as_deref().expect("a server with Redis");
        let client = redis_client(url).await.expect("a Redis client");
        let keys: Vec<String> = client
            .custom(
                fred::cmd!("KEYS"),
                vec![format!("{}:{namespace}:*", self.prefix)],
            )
            .await
            .expect("KEYS");
        let _ = client.quit().await;
        keys
    }

    /// Runs SQL on the server's database behind its back (and its cache's).
    pub async fn execute_sql(&self, sql: &str) {
        use sea_orm::ConnectionTrait;
        let db = sea_orm::Database::connect(&self.database_url)
            .await
            .expect("a second connection to the test database");
        db.execute_unprepared(sql).await.expect("the SQL runs");
        let _ = db.close().await;
    }
}

/// The JSON body of `response`, asserting its status is `expected` (`request` and the
/// body text name a failure).
async fn json_with_status(response: Response, expected: StatusCode, request: &str) -> Value {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, expected, "{request}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{request}: not JSON ({e}): {text}"))
}

fn with_if_match(request: RequestBuilder, if_match: Option<&str>) -> RequestBuilder {
    match if_match {
        Some(tag) => request.header(IF_MATCH, tag),
        None => request,
    }
}

/// Sends a request, failing the test on a transport error.
pub async fn send(request: RequestBuilder) -> Response {
    request
        .send()
        .await
        .expect("the request reaches the server")
}

/// A valid product body with the given sku.
pub fn new_product(sku: &str) -> Value {
    json!({
        "sku": sku,
        "name": format!("Product {sku}"),
        "description": format!("About {sku}"),
        "price_cents": 1999,
        "stock": 7,
        "category": "things",
    })
}

/// The id of a product.
pub fn id_of(product: &Value) -> i64 {
    product["id"]
        .as_i64()
        .expect("the product has an integer id")
}

/// The ids of a page's items, in order.
pub fn ids_of(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .expect("the page has items")
        .iter()
        .map(id_of)
        .collect()
}

/// The value of a header (panics if absent or not text).
pub fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("a {name} header"))
        .to_str()
        .expect("a text header")
        .to_owned()
}

/// The value of header `name` in `response`, or `""` if absent or not text.
pub fn header_or_empty(response: &Response, name: impl reqwest::header::AsHeaderName) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Asserts that `response` is an RFC 9457 problem with `status`, returns its body.
pub async fn assert_problem(response: Response, status: u16, context: &str) -> Value {
    let actual = response.status().as_u16();
    let content_type = header_or_empty(&response, CONTENT_TYPE);
    let text = response.text().await.unwrap_or_default();
    assert_eq!(actual, status, "{context}: status (body: {text})");
    assert!(
        content_type.starts_with("application/problem+json"),
        "{context}: content type is {content_type:?}, not application/problem+json (body: {text})"
    );
    let problem: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{context}: the problem is not JSON ({e}): {text}"));
    assert!(
        problem["type"].is_string(),
        "{context}: `type` in {problem}"
    );
    assert!(
        problem["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{context}: `title` in {problem}"
    );
    assert_eq!(
        problem["status"].as_u64(),
        Some(u64::from(status)),
        "{context}: `status` in {problem}"
    );
    assert!(
        problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{context}: `detail` in {problem}"
    );
    problem
}

/// Asserts a problem with `status` whose detail starts with `{field}:`.
pub async fn assert_field_problem(response: Response, status: u16, field: &str, context: &str) {
    let problem = assert_problem(response, status, context).await;
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with(&format!("{field}:")),
        "{context}: detail {detail:?} should start with {field:?}"
    );
}

/// The sum of the samples of `name` whose labels include every pair of `labels`
/// (0 when there is none). Metrics are process-wide: compare before and after.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}
