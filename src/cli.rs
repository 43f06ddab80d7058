//! The command line (clap derive), one function per subcommand. Exit codes: 0 ok,
//! 1 invalid config or files (or a failed run), 2 usage error (clap's own).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// portcullis: an authenticating TLS reverse proxy.
#[derive(Parser, Debug)]
#[command(name = "portcullis", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve.
    Run {
        /// Config file.
        #[arg(long, short, default_value = "config/portcullis.toml")]
        config: PathBuf,
    },
    /// Validate the config and every file it names; print `ok` or every problem.
    Check(CheckArgs),
    /// Self-contained tour on loopback with every implemented authenticator kind.
    Demo {
        /// Public port (0 = any free port).
        #[arg(long, default_value_t = 8443)]
        port: u16,
    },
    /// Read a password from stdin and print an argon2id PHC string.
    HashPassword {
        /// argon2 memory cost in KiB.
        #[arg(long, default_value_t = 19456)]
        m_cost: u32,
        /// argon2 iterations.
        #[arg(long, default_value_t = 2)]
        t_cost: u32,
        /// argon2 parallelism.
        #[arg(long, default_value_t = 1)]
        p_cost: u32,
    },
    /// Print a new API key and its `sha256:` hash.
    GenApiKey {
        /// Key prefix.
        #[arg(long, default_value = "pk")]
        prefix: String,
    },
    /// Write a development CA (valid 5 years), a server certificate (valid 1 year) and a
    /// client certificate (valid 30 days). An existing CA in --out is reused, so the
    /// certificates it issued keep verifying; --force makes a new one.
    Certs(CertsArgs),
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(config),
        Command::Check(args) => check(&args),
        Command::Demo { port } => crate::devkit::demo::run(port),
        Command::HashPassword {
            m_cost,
            t_cost,
            p_cost,
        } => hash_password(m_cost, t_cost, p_cost),
        Command::GenApiKey { prefix } => gen_api_key(&prefix),
        Command::Certs(args) => certs(args),
    }
}

/// `portcullis check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Config file.
    #[arg(long, short, default_value = "config/portcullis.toml")]
    config: PathBuf,
    /// Also print the route table, in match order (the first match wins).
    #[arg(long)]
    routes: bool,
    /// Refuse the config on warnings too (e.g. a route needing weaker credentials in
    /// front of one it takes requests from), exit 1.
    #[arg(long)]
    strict: bool,
    /// Print the route a request for PATH would take and what it needs (or 404/400)
    /// instead of `ok`.
    #[arg(long, value_name = "PATH")]
    explain: Option<String>,
    /// The request's method, with --explain.
    #[arg(long, default_value = "GET", requires = "explain")]
    method: String,
    /// The request's Host, with --explain (default: none, which only host-less routes match).
    #[arg(long, requires = "explain")]
    host: Option<String>,
}

/// Loads the config and builds the snapshot it describes (without serving), so `check`
/// refuses exactly what a start or a reload would.
fn check(args: &CheckArgs) -> i32 {
    let Ok(method) = http::Method::from_bytes(args.method.to_ascii_uppercase().as_bytes()) else {
        eprintln!("error: invalid method {:?}", args.method);
        return 2;
    };
    let built = crate::config::load(&args.config)
        .map_err(|e| e.to_string())
        .and_then(|config| {
            let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
            crate::snapshot::Snapshot::build(config, &metrics).map_err(|e| e.to_string())
        });
    let snapshot = match built {
        Ok(s) => s,
        Err(e) => {
            println!("{e}");
            return 1;
        }
    };
    let config = &snapshot.config;
    let warnings = config.warning_lines();
    for w in &warnings {
        println!("warning: {w}");
    }
    if args.strict && !warnings.is_empty() {
        return 1;
    }
    if args.routes {
        print!("{}", config.route_table());
    }
    match &args.explain {
        Some(target) => print!("{}", config.explain(target, &method, args.host.as_deref())),
        None => println!("ok"),
    }
    0
}

/// Builds the runtime with `workers` threads. One worker gets a current-thread runtime:
/// the same single thread serving every connection, without the work-stealing scheduler's
/// cross-thread wake-ups (blocking work such as password hashing still goes to the
/// blocking pool via `spawn_blocking`).
pub fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder.max_blocking_threads(64).enable_all().build()
}

fn run(path: PathBuf) -> i32 {
    let config = match crate::config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    crate::telemetry::init(&config.log);
    let rt = match runtime(config.server.workers) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return 1;
        }
    };
    let result = rt.block_on(async move {
        let signals = crate::reload::Signals::install()?;
        let running = crate::server::start(config).await?;
        running.serve_until_signal(signals).await
    });
    crate::telemetry::flush();
    match result {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "portcullis stopped");
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn hash_password(m: u32, t: u32, p: u32) -> i32 {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        match rpassword::prompt_password("password: ") {
            Ok(p) => p,
            Err(e) => {
                eprintln!("cannot read password: {e}");
                return 1;
            }
        }
    } else {
        let mut line = String::new();
        if let Err(e) = stdin.lock().read_line(&mut line) {
            eprintln!("cannot read password: {e}");
            return 1;
        }
        let trimmed = line.strip_suffix('\n').unwrap_or(&line);
        trimmed.strip_suffix('\r').unwrap_or(trimmed).to_string()
    };
    if password.is_empty() {
        eprintln!("empty password refused");
        return 1;
    }
    match crate::credentials::hash_password(&password, m, t, p) {
        Ok(h) => {
            println!("{h}");
            0
        }
        Err(e) => {
            eprintln!("{e}");
            2
        }
    }
}

fn gen_api_key(prefix: &str) -> i32 {
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        eprintln!("prefix must be letters, digits or _");
        return 2;
    }
    let (key, hash) = crate::credentials::new_api_key(prefix);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{key}");
    let _ = writeln!(out, "{hash}");
    0
}

/// `portcullis certs`.
#[derive(clap::Args, Debug)]
pub struct CertsArgs {
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Server host names / IPs (default: localhost, 127.0.0.1).
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Also issue a client certificate with this name (NAME.crt / NAME.key), reusing
    /// an existing ca.crt/ca.key in --out if present.
    #[arg(long)]
    client: Option<String>,
    /// URI SANs for the client certificate (e.g. spiffe://example.org/billing).
    #[arg(long = "uri")]
    uris: Vec<String>,
    /// Validity of the server and client certificates issued now, in days (default:
    /// 365 for the server certificate, 30 for client certificates; at most 1825, the
    /// CA's own validity).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1825))]
    days: Option<u16>,
    /// Replace an existing CA in --out with a new one. Every certificate the old CA
    /// issued (client certificates handed out, trust stores) stops verifying.
    #[arg(long)]
    force: bool,
}

fn certs(args: CertsArgs) -> i32 {
    match write_certs(&args) {
        Ok(said) => {
            println!("{said}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// Writes what `certs` was asked for; the line to print on success.
fn write_certs(args: &CertsArgs) -> Result<String, String> {
    use crate::devkit::certs::{CLIENT_VALIDITY, Ca, SERVER_VALIDITY, write_client_for};
    let out = &args.out;
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let (ca_crt, ca_key) = (out.join("ca.crt"), out.join("ca.key"));
    let existing = ca_crt.exists() || ca_key.exists();
    let (ca, reused) = if existing && !args.force {
        let c =
            std::fs::read_to_string(&ca_crt).map_err(|e| format!("{}: {e}", ca_crt.display()))?;
        let k =
            std::fs::read_to_string(&ca_key).map_err(|e| format!("{}: {e}", ca_key.display()))?;
        let ca = Ca::load(&c, &k).map_err(|e| {
            format!(
                "{e} (the CA in {} cannot be reused; --force replaces it)",
                out.display()
            )
        })?;
        (ca, true)
    } else {
        let ca = Ca::new("portcullis development CA").map_err(|e| e.to_string())?;
        ca.write(out).map_err(|e| e.to_string())?;
        (ca, false)
    };
    let days = args.days.map(|d| time::Duration::days(i64::from(d)));
    // A new CA comes with the server and default client certificate; `--client` alone
    // on an existing CA issues just that client's.
    if !reused || args.client.is_none() {
        let hosts = if args.hosts.is_empty() {
            vec!["localhost".to_string(), "127.0.0.1".to_string()]
        } else {
            args.hosts.clone()
        };
        let server = ca
            .server_for(&hosts, days.unwrap_or(SERVER_VALIDITY))
            .map_err(|e| e.to_string())?;
        server.write(out, "server").map_err(|e| e.to_string())?;
        let uris: &[String] = if args.client.is_none() {
            &args.uris
        } else {
            &[]
        };
        write_client_for(out, &ca, "client", uris, days.unwrap_or(CLIENT_VALIDITY))
            .map_err(|e| e.to_string())?;
    }
    if let Some(name) = &args.client {
        write_client_for(out, &ca, name, &args.uris, days.unwrap_or(CLIENT_VALIDITY))
            .map_err(|e| e.to_string())?;
    }
    Ok(if reused {
        format!(
            "wrote certificates to {} (reused the CA there; --force replaces it)",
            out.display()
        )
    } else {
        format!("wrote certificates to {}", out.display())
    })
}
