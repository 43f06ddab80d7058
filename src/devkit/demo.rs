//! `portcullis demo`: a self-contained tour on loopback. Generates a throw-away CA and
//! certificates, starts the built-in echo upstream and the gateway, prints curl commands.

use std::io::Write;

mod idp;

/// Runs the demo until Ctrl-C; returns the exit code.
pub fn run(port: u16) -> i32 {
    crate::telemetry::init_default();
    let rt = match crate::cli::runtime(2) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(tour(port)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            1
        }
    }
}

async fn tour(port: u16) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("portcullis-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    crate::devkit::certs::write_dev_set(
        &dir,
        &["localhost".into(), "127.0.0.1".into()],
        "demo-client",
        &["spiffe://demo.local/client".into()],
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let echo = crate::devkit::echo::spawn(([127, 0, 0, 1], 0).into(), None).await?;
    // Throw-away credentials for the basic and api_key routes.
    let mut pw = [0u8; 12];
    rand::fill(&mut pw);
    let demo_password = hex::encode(pw);
    // What curl's `-u demo:PASSWORD` sends, for the app token bound to it.
    let demo_basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("demo:{demo_password}")
        )
    );
    let idp = idp::spawn(&demo_basic).await?;
    let d = dir.display();
    let demo_hash = crate::credentials::hash_password(&demo_password, 19_456, 2, 1)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (demo_key, demo_key_hash) = crate::credentials::new_api_key("demo");
    let toml = format!(
        r#"[server]
listen = ["127.0.0.1:{port}"]
shutdown_grace = "2s"

[server.tls]
cert = "{d}/server.crt"
key = "{d}/server.key"

[server.tls.client_auth]
ca = "{d}/ca.crt"
mode = "optional"

[admin]
listen = "127.0.0.1:0"

[log]
format = "text"

[upstreams.echo]
targets = ["http://{echo}"]

[authenticators.public]
kind = "none"

[authenticators.services]
kind = "mtls"
allow = ["URI:spiffe://demo.local/client"]

[authenticators.staff]
kind = "basic"
realm = "demo"
users = {{ demo = "{demo_hash}" }}

[authenticators.partners]
kind = "api_key"
header = "X-API-Key"
keys = [{{ id = "demo-partner", hash = "{demo_key_hash}", scopes = ["orders:read"] }}]

[[routes]]
name = "public"
match = {{ path_prefix = "/public" }}
upstream = "echo"
auth = "public"

[[routes]]
name = "services"
match = {{ path_prefix = "/services" }}
upstream = "echo"
auth = "services"

[[routes]]
name = "staff"
match = {{ path_prefix = "/staff" }}
upstream = "echo"
auth = "staff"

[[routes]]
name = "partners"
match = {{ path_prefix = "/partners" }}
upstream = "echo"
auth = "partners"
require = {{ scopes = ["orders:read"] }}

[authenticators.idp]
kind = "jwt"
jwks_url = "http://{idp_addr}/jwks"
issuer = "{issuer}"
audiences = ["{audience}"]
algorithms = ["ES256"]
forward_claims = {{ tenant = "X-Tenant" }}

[authenticators.opaque]
kind = "introspection"
endpoint = "http://{idp_addr}/introspect"
client_id = "{client_id}"
client_secret = "{client_secret}"

[[routes]]
name = "jwt"
match = {{ path_prefix = "/jwt" }}
upstream = "echo"
auth = "idp"
require = {{ scopes = ["orders:read"] }}

[[routes]]
name = "introspection"
match = {{ path_prefix = "/opaque" }}
upstream = "echo"
auth = "opaque"

[authenticators.app]
kind = "jwt"
jwks_url = "http://{idp_addr}/jwks"
issuer = "{issuer}"
audiences = ["{audience}"]
algorithms = ["ES256"]
token_header = "X-App-Token"
bind = "authorization"

[[routes]]
name = "app"
match = {{ path_prefix = "/app" }}
upstream = "echo"
auth = {{ all = ["app", "staff"] }}
"#,
        echo = echo.addr,
        idp_addr = idp.addr,
        issuer = idp::ISSUER,
        audience = idp::AUDIENCE,
        client_id = idp::CLIENT_ID,
        client_secret = idp.client_secret,
    );
    let path = dir.join("portcullis.toml");
    std::fs::write(&path, toml)?;
    let config = crate::config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let signals = crate::reload::Signals::install()?;
    let running = crate::server::start(config).await?;
    let addr = running
        .addrs
        .first()
        .copied()
        .ok_or_else(|| anyhow::anyhow!("no listener"))?;
    let admin = running
        .admin_addr
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\nportcullis demo is running (Ctrl-C to stop). Certificates and config: {d}\n"
    )?;
    writeln!(
        out,
        "# public route (kind = none): the echo upstream shows what it received"
    )?;
    writeln!(
        out,
        "curl --cacert {d}/ca.crt https://localhost:{}/public/hello\n",
        addr.port()
    )?;
    let port = addr.port();
    writeln!(
        out,
        "# basic (kind = basic): argon2id-hashed password, user name forwarded as X-Auth-Subject"
    )?;
    writeln!(
        out,
        "curl --cacert {d}/ca.crt -u demo:{demo_password} https://localhost:{port}/staff/hello"
    )?;
    writeln!(
        out,
        "curl --cacert {d}/ca.crt -i -u demo:wrong https://localhost:{port}/staff/hello   # 401\n"
    )?;
    writeln!(
        out,
        "# api_key (kind = api_key): the key is stripped, its id and scopes are forwarded"
    )?;
    writeln!(
        out,
        "curl --cacert {d}/ca.crt -H \"X-API-Key: {demo_key}\" https://localhost:{port}/partners/orders\n"
    )?;
    writeln!(
        out,
        "# mTLS route (kind = mtls): the client certificate's SPIFFE ID is on the allow-list;\n\
         # without --cert/--key the answer is 401. The upstream sees X-Auth-Subject and\n\
         # X-Forwarded-Client-Cert"
    )?;
    writeln!(
        out,
        "curl --cacert {d}/ca.crt --cert {d}/client.crt --key {d}/client.key https://localhost:{}/services/hello\n",
        addr.port()
    )?;
    writeln!(
        out,
        "# an unknown path is refused with 404; an ambiguous one with 400"
    )?;
    writeln!(
        out,
        "curl --cacert {d}/ca.crt https://localhost:{}/nowhere",
        addr.port()
    )?;
    writeln!(
        out,
        "curl --cacert {d}/ca.crt --path-as-is https://localhost:{}/public/../admin\n",
        addr.port()
    )?;
    writeln!(
        out,
        "# jwt route: an ES256 token from the built-in demo issuer (JWKS at http://{}/jwks)",
        idp.addr
    )?;
    writeln!(
        out,
        "curl --cacert {d}/ca.crt -H 'Authorization: Bearer {}' https://localhost:{}/jwt/orders",
        idp.jwt,
        addr.port()
    )?;
    writeln!(
        out,
        "curl --cacert {d}/ca.crt -H 'Authorization: Bearer not.a.token' https://localhost:{}/jwt/orders\n",
        addr.port()
    )?;
    writeln!(
        out,
        "# introspection route (RFC 7662): an opaque token the demo issuer knows"
    )?;
    writeln!(
        out,
        "curl --cacert {d}/ca.crt -H 'Authorization: Bearer {}' https://localhost:{}/opaque/orders\n",
        idp.opaque,
        addr.port()
    )?;
    writeln!(
        out,
        "# app + user ({{ all = [\"app\", \"staff\"] }}): an app token in X-App-Token whose `pay` claim\n\
         # binds it to this user's Authorization; with another password the answer is 401"
    )?;
    writeln!(
        out,
        "curl --cacert {d}/ca.crt -u demo:{demo_password} -H 'X-App-Token: {}' https://localhost:{port}/app/orders\n",
        idp.app_jwt
    )?;
    writeln!(out, "# admin: health, readiness and metrics")?;
    writeln!(out, "curl http://{admin}/readyz")?;
    writeln!(out, "curl http://{admin}/metrics\n")?;
    drop(out);
    let r = running.serve_until_signal(signals).await;
    drop(echo);
    drop(idp);
    let _ = std::fs::remove_dir_all(&dir);
    r
}
