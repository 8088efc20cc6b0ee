//! The new-location check (#18): a sign-in from a network (IPv4 /24, IPv6
//! /64) or a user agent the account has not used before is held until the
//! staff member opens a one-time link sent to the e-mail address of their
//! ID token (SMTP with STARTTLS required, `lettre` over rustls/ring). The
//! link works once, within [`HOLD_TTL_SECS`], in the browser that signed
//! in (a cookie binds it). Known networks and user agents are kept per
//! account (issuer + subject) in the table `staff_known_location`, the user
//! agent as a SHA-256 digest.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::oidc::Identity;
use crate::db::args;
use crate::store::Store;

/// How long a held sign-in waits for its link.
pub const HOLD_TTL_SECS: u64 = 900;
/// Deadline of the whole SMTP exchange.
pub const SMTP_TIMEOUT_MS: u64 = 15_000;

/// Where and how the confirmation mail is sent.
#[derive(Clone)]
pub struct MailConfig {
    /// SMTP server host name (or IP) — also the name its certificate must
    /// carry.
    pub smtp_host: String,
    /// SMTP port (submission: 587); STARTTLS is required.
    pub smtp_port: u16,
    /// Sender address.
    pub from: String,
    /// Extra CA certificates (PEM) for the SMTP server.
    pub smtp_ca_pem: Option<String>,
    /// SMTP user and password, if the server wants them.
    pub credentials: Option<(String, Zeroizing<String>)>,
}

impl std::fmt::Debug for MailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailConfig")
            .field("smtp_host", &self.smtp_host)
            .field("smtp_port", &self.smtp_port)
            .finish_non_exhaustive()
    }
}

/// The network a peer address belongs to: IPv4 /24, IPv6 /64 (an
/// IPv4-mapped IPv6 address counts as IPv4).
pub fn network_of(ip: IpAddr) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// The stored form of a user agent: SHA-256, hex.
pub fn agent_digest(user_agent: &str) -> String {
    hex::encode(Sha256::digest(user_agent.as_bytes()))
}

/// The table of known locations (created by [`Store::open_with`]).
pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS staff_known_location(
         issuer TEXT NOT NULL,
         subject TEXT NOT NULL,
         kind TEXT NOT NULL CHECK (kind IN ('network', 'agent')),
         value TEXT NOT NULL,
         first_seen INTEGER NOT NULL,
         PRIMARY KEY (issuer, subject, kind, value));";

/// Whether the account used both this network and this user agent before.
pub(crate) fn is_known(
    store: &Store,
    who: &Identity,
    network: &str,
    agent: &str,
) -> anyhow::Result<bool> {
    let n = store
        .db()
        .read(|sql| {
            sql.query_one(
                "SELECT COUNT(*) FROM staff_known_location
                 WHERE issuer = ?1 AND subject = ?2
                   AND ((kind = 'network' AND value = ?3) OR (kind = 'agent' AND value = ?4))",
                args![who.issuer.as_str(), who.subject.as_str(), network, agent],
            )
        })?
        .int(0)?;
    Ok(n == 2)
}

/// Remember this network and user agent for the account.
pub(crate) fn remember(
    store: &Store,
    who: &Identity,
    network: &str,
    agent: &str,
) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    store.db().write(|sql| {
        for (kind, value) in [("network", network), ("agent", agent)] {
            sql.execute(
                "INSERT INTO staff_known_location(issuer, subject, kind, value, first_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                args![who.issuer.as_str(), who.subject.as_str(), kind, value, now],
            )?;
        }
        Ok(())
    })
}

/// Send the confirmation link to `to`. The address and the link are never
/// logged.
pub(crate) async fn send_link(
    cfg: &MailConfig,
    to: &str,
    link: &str,
    network: &str,
) -> anyhow::Result<()> {
    let mut tls = TlsParameters::builder(cfg.smtp_host.clone());
    if let Some(pem) = &cfg.smtp_ca_pem {
        tls = tls.add_root_certificate(
            Certificate::from_pem(pem.as_bytes()).context("the SMTP CA certificate")?,
        );
    }
    let tls = tls.build_rustls().context("SMTP TLS parameters")?;
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.smtp_host)
        .port(cfg.smtp_port)
        .tls(Tls::Required(tls))
        .timeout(Some(Duration::from_millis(SMTP_TIMEOUT_MS)));
    if let Some((user, pass)) = &cfg.credentials {
        transport = transport.credentials(Credentials::new(user.clone(), pass.to_string()));
    }
    let msg = Message::builder()
        .from(cfg.from.parse().context("the sender address")?)
        .to(to
            .parse()
            .context("the staff e-mail address is not valid")?)
        .subject("Confirm your outpost staff sign-in")
        .header(ContentType::TEXT_PLAIN)
        .body(format!(
            "A sign-in to the outpost staff console came from a network or browser\n\
             this account has not used before (network {network}).\n\n\
             If it was you, open this link in the same browser within {} minutes:\n\n\
             {link}\n\n\
             If it was not you, do not open it, and tell your security team.\n",
            HOLD_TTL_SECS / 60
        ))
        .context("building the confirmation mail")?;
    tokio::time::timeout(
        Duration::from_millis(SMTP_TIMEOUT_MS),
        transport.build().send(msg),
    )
    .await
    .context("the SMTP server did not answer in time")?
    .map_err(|e| {
        anyhow::anyhow!(
            "sending the confirmation mail failed: {}",
            smtp_error_kind(&e)
        )
    })?;
    Ok(())
}

/// What went wrong, without the server's text (it may quote the address).
fn smtp_error_kind(e: &lettre::transport::smtp::Error) -> String {
    let code = e.status().map(|c| format!(" ({c})")).unwrap_or_default();
    if e.is_permanent() {
        format!("the SMTP server refused it{code}")
    } else if e.is_transient() {
        format!("the SMTP server deferred it{code}")
    } else if e.is_timeout() {
        "the SMTP server timed out".into()
    } else if e.is_tls() {
        "TLS with the SMTP server failed (STARTTLS is required)".into()
    } else {
        "connection or protocol error with the SMTP server".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_ipv4_slash_24_and_ipv6_slash_64() {
        for (ip, net) in [
            ("192.0.2.77", "192.0.2.0/24"),
            ("192.0.2.1", "192.0.2.0/24"),
            ("198.51.100.1", "198.51.100.0/24"),
            ("::ffff:192.0.2.9", "192.0.2.0/24"),
            ("2001:db8:aa:bb:1:2:3:4", "2001:db8:aa:bb::/64"),
            ("2001:db8:aa:bb::ffff", "2001:db8:aa:bb::/64"),
            ("2001:db8:aa:bc::1", "2001:db8:aa:bc::/64"),
        ] {
            assert_eq!(network_of(ip.parse().unwrap()), net, "{ip}");
        }
    }
}
