//! `kind = "mtls"`: admits a request whose connection presented a client certificate
//! that rustls already verified (chain to `server.tls.client_auth.ca`, validity period,
//! clientAuth usage, CRLs) *and* that matches the authenticator's allow-list.
//!
//! Place in the request path: the certificate was parsed once per connection
//! (`conn::ClientCert`); this file only compares its fields against rules compiled at
//! load time. No certificate is `Absent` (401, so an any-of can try other methods); a
//! verified certificate that is not on the list is `Forbidden` (403).
//!
//! Invariants: an empty `allow` list is a config error, never "admit every certificate";
//! admitting any verified certificate takes an explicit `allow = ["*"]`. Unknown entry
//! prefixes and misplaced wildcards are config errors. Wildcards never match an empty
//! label or segment, and a URI wildcard never matches a remainder with dot segments,
//! empty segments, percent-encoding, a query or a fragment.
//!
//! Allow-list entries (prefixes are case-insensitive):
//!
//! | entry | matches |
//! |-------|---------|
//! | `*` | any certificate the TLS layer verified |
//! | `CN=billing` | subject common name, exact and case-sensitive |
//! | `DNS:reports.internal` | a DNS SAN, ASCII case-insensitive, one trailing dot ignored |
//! | `DNS:*.internal` | a DNS SAN with exactly one more label (`a.internal`, not `a.b.internal`) |
//! | `URI:spiffe://example.org/billing` | a URI SAN, exact |
//! | `URI:spiffe://example.org/ns/*` | a URI SAN under that path (`/ns/a`, `/ns/a/sa/b`) |
//! | `EMAIL:ops@example.org` | an email SAN; local part exact, domain case-insensitive |
//! | `SHA256:ab:cd:...` | the SHA-256 fingerprint of the DER certificate (hex, any case, colons allowed) |

use std::sync::Arc;

use super::{AuthMethod, Identity, Outcome, RequestView};
use crate::conn::ClientCert;

/// `[authenticators.NAME]` of kind `mtls`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    /// Always `"mtls"`.
    pub kind: String,
    /// Who is admitted.
    pub allow: Option<Vec<String>>,
}

/// One compiled `allow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// `*`: any verified certificate.
    Any,
    /// `CN=...`, exact.
    Cn(String),
    /// `DNS:name`, lower-cased, without trailing dot.
    Dns(String),
    /// `DNS:*.suffix`: the lower-cased suffix, starting with `.`.
    DnsWildcard(String),
    /// `URI:...`, exact.
    Uri(String),
    /// `URI:prefix/*`: the prefix, ending with `/`.
    UriPrefix(String),
    /// `EMAIL:local@domain`: the local part and the lower-cased domain.
    Email(String, String),
    /// `SHA256:...`: the lower-case hex fingerprint.
    Sha256(String),
}

/// `kind = "mtls"`, checked: the compiled allow-list.
#[derive(Debug, Clone)]
pub struct Settings {
    rules: Vec<Rule>,
}

impl Settings {
    /// Compiles `allow`, recording one problem per bad entry under `base.allow[i]`.
    /// `None` if any entry is bad, the list is empty, or the listener asks for no
    /// client certificates.
    pub fn read(
        name: &str,
        r: Raw,
        base: &str,
        ctx: &super::BuildContext,
        problems: &mut crate::config::Problems,
    ) -> Option<Settings> {
        let before = problems.len();
        if ctx.client_auth.is_none() {
            problems.push(
                format!("{base}.kind"),
                format!(
                    "kind \"mtls\" needs client certificates: add [server.tls.client_auth] \
                     with the client CA, or remove \"{name}\""
                ),
            );
        }
        let Some(allow) = r.allow.filter(|a| !a.is_empty()) else {
            problems.push(
                format!("{base}.allow"),
                "an mtls authenticator needs a non-empty `allow` list, e.g. \
                 [\"URI:spiffe://example.org/billing\", \"CN=billing\"]; \
                 use [\"*\"] to admit every certificate the CA verifies",
            );
            return None;
        };
        let mut rules = Vec::with_capacity(allow.len());
        for (i, entry) in allow.iter().enumerate() {
            match parse_rule(entry) {
                Ok(r) => rules.push(r),
                Err(e) => problems.push(format!("{base}.allow[{i}]"), e.to_string()),
            }
        }
        (problems.len() == before).then_some(Settings { rules })
    }

    /// The authenticator.
    pub fn build(&self) -> Mtls {
        Mtls {
            rules: self.rules.clone(),
        }
    }
}

/// The mTLS authenticator: a compiled allow-list.
#[derive(Debug)]
pub struct Mtls {
    rules: Vec<Rule>,
}

impl Mtls {
    /// No certificate -> `Absent`; certificate on the list -> `Admit`; else `Forbidden`.
    pub fn authenticate(&self, req: &RequestView<'_>) -> Outcome {
        let Some(cert) = req.conn.client_cert.as_deref() else {
            return Outcome::Absent;
        };
        if self.allows(cert) {
            Outcome::Admit(Arc::new(Identity::new(AuthMethod::Mtls, subject(cert))))
        } else {
            Outcome::Forbidden
        }
    }

    /// Whether any rule matches `cert`.
    fn allows(&self, cert: &ClientCert) -> bool {
        self.rules.iter().any(|r| r.matches(cert))
    }
}

/// `X-Auth-Subject`: first URI SAN, else CN (SPEC); for a certificate with neither
/// (admitted by a DNS, email or fingerprint rule), the first DNS SAN, else the first
/// email SAN, else `sha256:<hex>`, so the upstream always learns who called.
fn subject(cert: &ClientCert) -> String {
    let id = cert.identity();
    if !id.is_empty() {
        return id.to_string();
    }
    cert.dns
        .first()
        .or(cert.emails.first())
        .cloned()
        .unwrap_or_else(|| format!("sha256:{}", cert.sha256_hex))
}

/// Why an `allow` entry is refused; every message quotes the entry and shows the form
/// expected.
#[derive(Debug, thiserror::Error)]
enum RuleError {
    /// Leading or trailing whitespace.
    #[error("\"{0}\" has leading or trailing whitespace; remove it")]
    Whitespace(String),
    /// Neither `*` nor a known prefix.
    #[error(
        "unknown allow entry \"{0}\": expected \"*\" or one of the prefixes \
         CN=, DNS:, URI:, EMAIL:, SHA256:"
    )]
    UnknownPrefix(String),
    /// Nothing after the prefix.
    #[error("\"{entry}\" has an empty value after `{prefix}`")]
    EmptyValue {
        /// The entry.
        entry: String,
        /// The canonical prefix, e.g. `DNS:`.
        prefix: &'static str,
    },
    /// A `*` in a CN.
    #[error("\"{0}\": wildcards are not supported for CN; use DNS:*.suffix or URI:prefix/*")]
    CnWildcard(String),
    /// An EMAIL value without a local part and a domain.
    #[error("\"{0}\": expected EMAIL:local@domain")]
    EmailShape(String),
    /// A `*` in an EMAIL.
    #[error("\"{0}\": wildcards are not supported for EMAIL")]
    EmailWildcard(String),
    /// `DNS:*.` followed by something that is not a DNS name.
    #[error("\"{0}\": after `*.` expected a DNS name such as `internal` or `svc.example.org`")]
    DnsSuffix(String),
    /// A `*` anywhere but as the whole first label.
    #[error("\"{0}\": a DNS wildcard must be the whole first label, as in DNS:*.internal")]
    DnsWildcard(String),
    /// Not a DNS name.
    #[error("\"{0}\" is not a valid DNS name")]
    DnsName(String),
    /// Whitespace or control characters in a URI.
    #[error("\"{0}\" contains whitespace")]
    UriWhitespace(String),
    /// Not an absolute URI.
    #[error("\"{0}\": expected an absolute URI such as URI:spiffe://example.org/billing")]
    UriNotAbsolute(String),
    /// A `*` anywhere but as a final `/*`.
    #[error("\"{0}\": a URI wildcard must be a final `/*`, as in URI:spiffe://example.org/ns/*")]
    UriWildcard(String),
    /// A URI wildcard without a trust domain.
    #[error(
        "\"{0}\": a URI wildcard needs a full trust domain before the path, as in URI:spiffe://example.org/ns/*"
    )]
    UriTrustDomain(String),
    /// Not 64 hex digits after `SHA256:`.
    #[error(
        "\"{0}\": expected SHA256: followed by 64 hex digits (colons allowed), \
         e.g. the output of `openssl x509 -noout -fingerprint -sha256`"
    )]
    Sha256(String),
}

/// Parses one `allow` entry.
fn parse_rule(entry: &str) -> Result<Rule, RuleError> {
    if entry == "*" {
        return Ok(Rule::Any);
    }
    if entry.trim() != entry {
        return Err(RuleError::Whitespace(entry.to_string()));
    }
    let (prefix, value) =
        split_prefix(entry).ok_or_else(|| RuleError::UnknownPrefix(entry.to_string()))?;
    if value.is_empty() {
        return Err(RuleError::EmptyValue {
            entry: entry.to_string(),
            prefix,
        });
    }
    match prefix {
        "CN=" => {
            if value.contains('*') {
                return Err(RuleError::CnWildcard(entry.to_string()));
            }
            Ok(Rule::Cn(value.to_string()))
        }
        "DNS:" => parse_dns(entry, value),
        "URI:" => parse_uri(entry, value),
        "EMAIL:" => {
            let (local, domain) = value
                .rsplit_once('@')
                .filter(|(l, d)| !l.is_empty() && !d.is_empty())
                .ok_or_else(|| RuleError::EmailShape(entry.to_string()))?;
            if value.contains('*') {
                return Err(RuleError::EmailWildcard(entry.to_string()));
            }
            Ok(Rule::Email(local.to_string(), domain.to_ascii_lowercase()))
        }
        _ => parse_sha256(entry, value),
    }
}

/// Splits a known prefix off `entry` (case-insensitively); returns the canonical prefix.
fn split_prefix(entry: &str) -> Option<(&'static str, &str)> {
    ["CN=", "DNS:", "URI:", "EMAIL:", "SHA256:"]
        .into_iter()
        .find_map(|p| {
            let head = entry.get(..p.len())?;
            head.eq_ignore_ascii_case(p)
                .then(|| (p, entry.get(p.len()..).unwrap_or("")))
        })
}

/// Parses the value of a `DNS:` entry.
fn parse_dns(entry: &str, value: &str) -> Result<Rule, RuleError> {
    let name = value
        .strip_suffix('.')
        .unwrap_or(value)
        .to_ascii_lowercase();
    let bad_label = |l: &str| {
        l.is_empty()
            || !l
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if let Some(suffix) = name.strip_prefix("*.") {
        if suffix.split('.').any(bad_label) {
            return Err(RuleError::DnsSuffix(entry.to_string()));
        }
        return Ok(Rule::DnsWildcard(format!(".{suffix}")));
    }
    if name.contains('*') {
        return Err(RuleError::DnsWildcard(entry.to_string()));
    }
    if name.split('.').any(bad_label) {
        return Err(RuleError::DnsName(entry.to_string()));
    }
    Ok(Rule::Dns(name))
}

/// Parses the value of a `URI:` entry.
fn parse_uri(entry: &str, value: &str) -> Result<Rule, RuleError> {
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(RuleError::UriWhitespace(entry.to_string()));
    }
    let Some((scheme, rest)) = value.split_once("://") else {
        return Err(RuleError::UriNotAbsolute(entry.to_string()));
    };
    if scheme.is_empty() || rest.is_empty() {
        return Err(RuleError::UriNotAbsolute(entry.to_string()));
    }
    if let Some(prefix) = value.strip_suffix('*') {
        if prefix.contains('*') || !prefix.ends_with('/') {
            return Err(RuleError::UriWildcard(entry.to_string()));
        }
        // The trust domain must be complete: `spiffe://*` or `spiffe:///*` would be too broad.
        let authority = prefix
            .split_once("://")
            .and_then(|(_, r)| r.split('/').next())
            .unwrap_or("");
        if authority.is_empty() {
            return Err(RuleError::UriTrustDomain(entry.to_string()));
        }
        return Ok(Rule::UriPrefix(prefix.to_string()));
    }
    if value.contains('*') {
        return Err(RuleError::UriWildcard(entry.to_string()));
    }
    Ok(Rule::Uri(value.to_string()))
}

/// Parses the value of a `SHA256:` entry (colons allowed).
fn parse_sha256(entry: &str, value: &str) -> Result<Rule, RuleError> {
    let hex: String = value.chars().filter(|&c| c != ':').collect();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RuleError::Sha256(entry.to_string()));
    }
    Ok(Rule::Sha256(hex.to_ascii_lowercase()))
}

impl Rule {
    fn matches(&self, cert: &ClientCert) -> bool {
        match self {
            Rule::Any => true,
            Rule::Cn(cn) => cert.cn.as_deref() == Some(cn.as_str()),
            Rule::Dns(name) => cert.dns.iter().any(|d| dns_eq(d, name)),
            Rule::DnsWildcard(suffix) => cert.dns.iter().any(|d| dns_wildcard(d, suffix)),
            Rule::Uri(u) => cert.uris.iter().any(|c| c == u),
            Rule::UriPrefix(p) => cert.uris.iter().any(|c| uri_under(c, p)),
            Rule::Email(local, domain) => cert.emails.iter().any(|e| {
                e.rsplit_once('@')
                    .is_some_and(|(l, d)| l == local && d.eq_ignore_ascii_case(domain))
            }),
            Rule::Sha256(h) => cert.sha256_hex.eq_ignore_ascii_case(h),
        }
    }
}

fn dns_eq(candidate: &str, name: &str) -> bool {
    candidate
        .strip_suffix('.')
        .unwrap_or(candidate)
        .eq_ignore_ascii_case(name)
}

/// `a.internal` under `.internal`: exactly one extra, non-empty, non-wildcard label.
fn dns_wildcard(candidate: &str, suffix: &str) -> bool {
    let c = candidate.strip_suffix('.').unwrap_or(candidate);
    let Some(split) = c.len().checked_sub(suffix.len()) else {
        return false;
    };
    let (Some(label), Some(tail)) = (c.get(..split), c.get(split..)) else {
        return false;
    };
    tail.eq_ignore_ascii_case(suffix) && !label.is_empty() && !label.contains(['.', '*'])
}

/// `candidate` starts with `prefix` (which ends in `/`) and the remainder is a plain,
/// non-empty path: no empty, `.` or `..` segments, no `%`, `?`, `#` or `*`.
fn uri_under(candidate: &str, prefix: &str) -> bool {
    let Some(rest) = candidate.strip_prefix(prefix) else {
        return false;
    };
    !rest.is_empty()
        && !rest.contains(['%', '?', '#', '*', '\\'])
        && rest
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Problems;

    fn cert(cn: Option<&str>, uris: &[&str], dns: &[&str], emails: &[&str]) -> ClientCert {
        ClientCert {
            sha256_hex: "ab".repeat(32),
            x5t_s256: String::new(),
            subject: String::new(),
            cn: cn.map(str::to_string),
            uris: uris.iter().map(|s| s.to_string()).collect(),
            dns: dns.iter().map(|s| s.to_string()).collect(),
            emails: emails.iter().map(|s| s.to_string()).collect(),
            xfcc: None,
        }
    }

    fn rule(s: &str) -> Rule {
        parse_rule(s).unwrap()
    }

    fn err(s: &str) -> String {
        parse_rule(s).unwrap_err().to_string()
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(rule("*"), Rule::Any);
        assert_eq!(rule("CN=billing"), Rule::Cn("billing".into()));
        assert_eq!(rule("cn=billing"), Rule::Cn("billing".into()));
        assert_eq!(
            rule("DNS:Reports.Internal."),
            Rule::Dns("reports.internal".into())
        );
        assert_eq!(
            rule("DNS:*.internal"),
            Rule::DnsWildcard(".internal".into())
        );
        assert_eq!(
            rule("URI:spiffe://example.org/billing"),
            Rule::Uri("spiffe://example.org/billing".into())
        );
        assert_eq!(
            rule("URI:spiffe://example.org/ns/*"),
            Rule::UriPrefix("spiffe://example.org/ns/".into())
        );
        assert_eq!(
            rule("EMAIL:Ops@Example.org"),
            Rule::Email("Ops".into(), "example.org".into())
        );
        let colons = ["AB"; 32].join(":");
        assert_eq!(
            rule(&format!("SHA256:{colons}")),
            Rule::Sha256("ab".repeat(32))
        );
        assert_eq!(
            rule(&format!("sha256:{}", "Cd".repeat(32))),
            Rule::Sha256("cd".repeat(32))
        );
    }

    #[test]
    fn refuses_bad_entries() {
        assert!(err("billing").contains("unknown allow entry"));
        assert!(err("SAN:billing").contains("unknown allow entry"));
        assert!(err("IP:10.0.0.1").contains("unknown allow entry"));
        assert!(err("CN=").contains("empty value"));
        assert!(err(" CN=billing").contains("whitespace"));
        assert!(err("CN=bill*").contains("wildcards are not supported"));
        assert!(err("DNS:a.*.internal").contains("whole first label"));
        assert!(err("DNS:*").contains("whole first label"));
        assert!(err("DNS:*.").contains("whole first label"));
        assert!(err("DNS:*.*.internal").contains("after `*.`"));
        assert!(err("DNS:foo..internal").contains("not a valid DNS name"));
        assert!(err("URI:billing").contains("absolute URI"));
        assert!(err("URI:spiffe://example.org/ns*").contains("final `/*`"));
        assert!(err("URI:spiffe://example.org/*/billing").contains("final `/*`"));
        assert!(err("URI:spiffe://*").contains("full trust domain"));
        assert!(err("URI:spiffe:///*").contains("full trust domain"));
        assert!(err("EMAIL:ops").contains("local@domain"));
        assert!(err("EMAIL:*@example.org").contains("wildcards"));
        assert!(err("SHA256:abcd").contains("64 hex digits"));
        assert!(err(&format!("SHA256:{}", "zz".repeat(32))).contains("64 hex digits"));
    }

    /// Reads `allow` as the config loader would, for a listener that asks for certificates.
    fn read(allow: Option<Vec<String>>, p: &mut Problems) -> Option<Settings> {
        let ctx = crate::auth::BuildContext {
            config_dir: ".".into(),
            client_auth: Some(crate::config::ClientAuthMode::Optional),
        };
        let raw = Raw {
            kind: "mtls".into(),
            allow,
        };
        Settings::read("svc", raw, "authenticators.svc", &ctx, p)
    }

    #[test]
    fn empty_allow_list_is_a_config_error() {
        let mut p = Problems::default();
        assert!(read(Some(vec![]), &mut p).is_none());
        assert!(read(None, &mut p).is_none());
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn reports_every_bad_entry_with_its_index() {
        let mut p = Problems::default();
        let allow = vec!["CN=ok".to_string(), "FOO:x".into(), "DNS:*".into()];
        assert!(read(Some(allow), &mut p).is_none());
        let text = format!("{p:?}");
        assert!(text.contains("authenticators.svc.allow[1]"), "{text}");
        assert!(text.contains("authenticators.svc.allow[2]"), "{text}");
        assert!(!text.contains("allow[0]"), "{text}");
    }

    #[test]
    fn matches_cn_exactly() {
        let c = cert(Some("billing"), &[], &[], &[]);
        assert!(rule("CN=billing").matches(&c));
        assert!(!rule("CN=Billing").matches(&c));
        assert!(!rule("CN=bill").matches(&c));
        assert!(!rule("CN=billing").matches(&cert(None, &[], &[], &[])));
    }

    #[test]
    fn matches_dns_exact_and_one_label_wildcard() {
        let c = cert(None, &[], &["Reports.internal."], &[]);
        assert!(rule("DNS:reports.internal").matches(&c));
        assert!(!rule("DNS:internal").matches(&c));
        let w = rule("DNS:*.internal");
        assert!(w.matches(&c));
        assert!(w.matches(&cert(None, &[], &["a.INTERNAL"], &[])));
        assert!(!w.matches(&cert(None, &[], &["a.b.internal"], &[])));
        assert!(!w.matches(&cert(None, &[], &["internal"], &[])));
        assert!(!w.matches(&cert(None, &[], &[".internal"], &[])));
        assert!(!w.matches(&cert(None, &[], &["*.internal"], &[])));
        assert!(!w.matches(&cert(None, &[], &["evilinternal"], &[])));
        assert!(!w.matches(&cert(None, &[], &["a.internal.evil"], &[])));
    }

    #[test]
    fn matches_uri_exact_and_path_wildcard() {
        let exact = rule("URI:spiffe://example.org/billing");
        assert!(exact.matches(&cert(None, &["spiffe://example.org/billing"], &[], &[])));
        assert!(!exact.matches(&cert(None, &["spiffe://example.org/billing/x"], &[], &[])));
        assert!(!exact.matches(&cert(None, &["spiffe://example.org/Billing"], &[], &[])));
        let w = rule("URI:spiffe://example.org/ns/*");
        let yes = |u: &str| w.matches(&cert(None, &[u], &[], &[]));
        assert!(yes("spiffe://example.org/ns/a"));
        assert!(yes("spiffe://example.org/ns/a/sa/b"));
        assert!(!yes("spiffe://example.org/ns/"));
        assert!(!yes("spiffe://example.org/ns"));
        assert!(!yes("spiffe://example.org/nsx/a"));
        assert!(!yes("spiffe://example.org/ns/../admin"));
        assert!(!yes("spiffe://example.org/ns/./a"));
        assert!(!yes("spiffe://example.org/ns//a"));
        assert!(!yes("spiffe://example.org/ns/a/"));
        assert!(!yes("spiffe://example.org/ns/%2e%2e/admin"));
        assert!(!yes("spiffe://example.org/ns/a?x"));
        assert!(!yes("spiffe://example.org/ns/a#x"));
        assert!(!yes("spiffe://example.org.evil/ns/a"));
        // Any one URI SAN may match.
        assert!(w.matches(&cert(
            None,
            &["https://x", "spiffe://example.org/ns/a"],
            &[],
            &[]
        )));
    }

    #[test]
    fn matches_email_and_fingerprint() {
        let c = cert(None, &[], &[], &["ops@EXAMPLE.org"]);
        assert!(rule("EMAIL:ops@example.org").matches(&c));
        assert!(!rule("EMAIL:Ops@example.org").matches(&c));
        assert!(!rule("EMAIL:ops@example.com").matches(&c));
        assert!(rule(&format!("SHA256:{}", "AB".repeat(32))).matches(&c));
        assert!(!rule(&format!("SHA256:{}", "ac".repeat(32))).matches(&c));
    }

    #[test]
    fn subject_is_uri_then_cn_then_fallbacks() {
        assert_eq!(
            subject(&cert(Some("cn"), &["spiffe://a/b"], &[], &[])),
            "spiffe://a/b"
        );
        assert_eq!(subject(&cert(Some("cn"), &[], &["d.internal"], &[])), "cn");
        assert_eq!(
            subject(&cert(None, &[], &["d.internal"], &[])),
            "d.internal"
        );
        assert_eq!(subject(&cert(None, &[], &[], &["e@x"])), "e@x");
        assert_eq!(
            subject(&cert(None, &[], &[], &[])),
            format!("sha256:{}", "ab".repeat(32))
        );
    }

    /// Each refusal's text, byte for byte: it is the config problem users read.
    #[test]
    fn refusals_keep_their_text() {
        let cases = [
            (
                " CN=a",
                "\" CN=a\" has leading or trailing whitespace; remove it",
            ),
            (
                "foo",
                "unknown allow entry \"foo\": expected \"*\" or one of the prefixes CN=, DNS:, URI:, EMAIL:, SHA256:",
            ),
            ("dns:", "\"dns:\" has an empty value after `DNS:`"),
            (
                "CN=a*",
                "\"CN=a*\": wildcards are not supported for CN; use DNS:*.suffix or URI:prefix/*",
            ),
            ("EMAIL:nope", "\"EMAIL:nope\": expected EMAIL:local@domain"),
            (
                "EMAIL:*@x",
                "\"EMAIL:*@x\": wildcards are not supported for EMAIL",
            ),
            (
                "DNS:*.a..b",
                "\"DNS:*.a..b\": after `*.` expected a DNS name such as `internal` or `svc.example.org`",
            ),
            (
                "DNS:a.*.b",
                "\"DNS:a.*.b\": a DNS wildcard must be the whole first label, as in DNS:*.internal",
            ),
            ("DNS:a b", "\"DNS:a b\" is not a valid DNS name"),
            ("URI:a b", "\"URI:a b\" contains whitespace"),
            (
                "URI:foo",
                "\"URI:foo\": expected an absolute URI such as URI:spiffe://example.org/billing",
            ),
            (
                "URI:spiffe://x/a*",
                "\"URI:spiffe://x/a*\": a URI wildcard must be a final `/*`, as in URI:spiffe://example.org/ns/*",
            ),
            (
                "URI:spiffe:///*",
                "\"URI:spiffe:///*\": a URI wildcard needs a full trust domain before the path, as in URI:spiffe://example.org/ns/*",
            ),
            (
                "SHA256:zz",
                "\"SHA256:zz\": expected SHA256: followed by 64 hex digits (colons allowed), e.g. the output of `openssl x509 -noout -fingerprint -sha256`",
            ),
        ];
        for (entry, want) in cases {
            assert_eq!(err(entry), want);
        }
    }
}
