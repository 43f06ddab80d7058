//! Proxying on a public route: what the upstream sees, what the caller sees.

use http::Method;

use crate::support::{Gateway, gateway};

const PUBLIC: &str = r#"
[authenticators.public]
kind = "none"

[[routes]]
name = "public"
match = { path_prefix = "/public" }
upstream = "echo"
auth = "public"

[[routes]]
name = "orders"
match = { path_prefix = "/orders", methods = ["GET"] }
upstream = "echo"
auth = "public"
"#;

async fn start() -> Gateway {
    gateway(PUBLIC).start().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_public_route_to_upstream() {
    let gw = start().await;
    let r = gw.client().get("/public/hello?x=1").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["uri"], "/public/hello?x=1");
    assert_eq!(r.upstream_header("x-auth-method").as_deref(), Some("none"));
    assert_eq!(
        r.upstream_header("x-forwarded-proto").as_deref(),
        Some("https")
    );
    assert_eq!(
        r.upstream_header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    let host = format!("localhost:{}", gw.addr.port());
    assert_eq!(r.upstream_header("host").as_deref(), Some(host.as_str()));
    assert_eq!(
        r.upstream_header("x-forwarded-host").as_deref(),
        Some(host.as_str())
    );
    assert!(r.upstream_header("x-request-id").is_some());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_404_for_unrouted_paths_and_methods() {
    let gw = start().await;
    let c = gw.client();
    let r = c.get("/nowhere").await;
    assert_eq!(r.status, 404);
    assert!(
        r.json()["request_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert_eq!(c.get("/publicx").await.status, 404);
    assert_eq!(
        c.send(Method::POST, "/orders/1", &[], "x").await.status,
        404
    );
    assert_eq!(c.get("/orders/1").await.status, 200);
}
