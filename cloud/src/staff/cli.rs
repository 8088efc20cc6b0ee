//! Command-line pieces of the staff API for `outpost-cloud`: the `serve`
//! options that turn it on, `staff-audit` and `device-region`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use outpost_protocol::DeviceId;

use super::newloc::MailConfig;
use super::oidc::ClaimNames;
use super::{DEFAULT_SESSION_TTL_SECS, StaffConfig, db};
use crate::store::Store;

/// `serve` options of the staff API (off unless --oidc-issuer is given).
#[derive(Debug, clap::Args)]
pub struct StaffArgs {
    /// The region of devices enrolling through this server; staff see only
    /// the devices of the regions their sign-in names.
    #[arg(long, default_value = db::DEFAULT_REGION)]
    pub region: String,
    /// Turn on the staff read-back API under /staff/, with sign-in through
    /// this OpenID provider (issuer URL; https, or http on loopback only).
    #[arg(long, value_name = "URL", requires_all = ["oidc_client_id", "oidc_client_secret_file", "staff_base_url"])]
    pub oidc_issuer: Option<String>,
    /// This server's client id at the provider.
    #[arg(long, value_name = "ID")]
    pub oidc_client_id: Option<String>,
    /// File holding the client secret (never on the command line).
    #[arg(long, value_name = "FILE")]
    pub oidc_client_secret_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) to trust for the provider.
    #[arg(long, value_name = "FILE")]
    pub oidc_ca_file: Option<PathBuf>,
    /// This server's URL as staff browsers reach it, e.g.
    /// https://cloud.example.com:8443 (the redirect URI is
    /// <URL>/staff/callback).
    #[arg(long, value_name = "URL")]
    pub staff_base_url: Option<String>,
    /// Claim naming the role.
    #[arg(long, default_value = "outpost_role")]
    pub oidc_role_claim: String,
    /// Role value that grants support access.
    #[arg(long, default_value = "support")]
    pub oidc_support_role: String,
    /// Claim naming the region(s).
    #[arg(long, default_value = "outpost_regions")]
    pub oidc_regions_claim: String,
    /// Claim that must be true: privacy training done.
    #[arg(long, default_value = "privacy_trained")]
    pub oidc_training_claim: String,
    /// Staff session lifetime in seconds.
    #[arg(long, default_value_t = DEFAULT_SESSION_TTL_SECS)]
    pub staff_session_secs: u64,
    /// Turn on the new-location check: a sign-in from a network or browser
    /// the account has not used is held until the link mailed through this
    /// SMTP server (STARTTLS required) is opened.
    #[arg(long, value_name = "HOST", requires = "smtp_from")]
    pub smtp_host: Option<String>,
    /// SMTP port.
    #[arg(long, default_value_t = 587)]
    pub smtp_port: u16,
    /// Sender address of the confirmation mail.
    #[arg(long, value_name = "ADDRESS")]
    pub smtp_from: Option<String>,
    /// Extra CA certificates (PEM) to trust for the SMTP server.
    #[arg(long, value_name = "FILE")]
    pub smtp_ca_file: Option<PathBuf>,
    /// SMTP user name (with --smtp-password-file).
    #[arg(long, requires = "smtp_password_file")]
    pub smtp_user: Option<String>,
    /// File holding the SMTP password (never on the command line).
    #[arg(long, value_name = "FILE")]
    pub smtp_password_file: Option<PathBuf>,
}

impl StaffArgs {
    /// The staff configuration, `None` when --oidc-issuer is not given.
    pub fn config(&self) -> anyhow::Result<Option<StaffConfig>> {
        let Some(issuer) = &self.oidc_issuer else {
            return Ok(None);
        };
        let (Some(id), Some(secret_file), Some(base)) = (
            &self.oidc_client_id,
            &self.oidc_client_secret_file,
            &self.staff_base_url,
        ) else {
            anyhow::bail!(
                "--oidc-issuer needs --oidc-client-id, --oidc-client-secret-file and --staff-base-url"
            );
        };
        let secret = zeroize::Zeroizing::new(
            std::fs::read_to_string(secret_file)
                .with_context(|| format!("reading {}", secret_file.display()))?,
        );
        let mut cfg = StaffConfig::new(issuer, id, secret.trim(), base);
        if let Some(ca) = &self.oidc_ca_file {
            cfg.provider_ca_pem = Some(
                std::fs::read_to_string(ca).with_context(|| format!("reading {}", ca.display()))?,
            );
        }
        cfg.claims = ClaimNames {
            role: self.oidc_role_claim.clone(),
            support_role: self.oidc_support_role.clone(),
            regions: self.oidc_regions_claim.clone(),
            privacy_trained: self.oidc_training_claim.clone(),
        };
        cfg.session_ttl = Duration::from_secs(self.staff_session_secs);
        cfg.new_location = match (&self.smtp_host, &self.smtp_from) {
            (Some(host), Some(from)) => Some(MailConfig {
                smtp_host: host.clone(),
                smtp_port: self.smtp_port,
                from: from.clone(),
                smtp_ca_pem: self
                    .smtp_ca_file
                    .as_ref()
                    .map(|f| {
                        std::fs::read_to_string(f)
                            .with_context(|| format!("reading {}", f.display()))
                    })
                    .transpose()?,
                credentials: match (&self.smtp_user, &self.smtp_password_file) {
                    (Some(u), Some(f)) => Some((
                        u.clone(),
                        zeroize::Zeroizing::new(
                            std::fs::read_to_string(f)
                                .with_context(|| format!("reading {}", f.display()))?
                                .trim()
                                .to_owned(),
                        ),
                    )),
                    _ => None,
                },
            }),
            _ => {
                tracing::warn!(
                    "the new-location check is off (no --smtp-host): a valid sign-in from \
                     any network or browser gets a session at once"
                );
                None
            }
        };
        Ok(Some(cfg))
    }
}

/// `outpost-cloud staff-audit`: print the staff audit.
pub fn print_audit(store: &Store, json: bool) -> anyhow::Result<()> {
    let rows = db::audit_entries(store)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:>6}  {:>11}  {:<15}  {:<10}  {:<13}  {:<32}  {:<9}  {:<40}  route / detail",
        "id", "at", "peer", "subject", "action", "device", "outcome", "issuer"
    );
    for r in rows {
        println!(
            "{:>6}  {:>11}  {:<15}  {:<10}  {:<13}  {:<32}  {:<9}  {:<40}  {}{}",
            r.id,
            r.at,
            r.peer,
            r.subject.as_deref().unwrap_or("-"),
            r.action,
            r.device.as_deref().unwrap_or("-"),
            r.outcome,
            r.issuer.as_deref().unwrap_or("-"),
            r.route,
            r.detail.map(|d| format!(" ({d})")).unwrap_or_default()
        );
    }
    Ok(())
}

/// `outpost-cloud device-region`: set the region of an enrolled device.
pub fn set_device_region(
    store: &Store,
    data: &Path,
    device: &DeviceId,
    region: &str,
) -> anyhow::Result<()> {
    if store.device_key(device)?.is_none() {
        anyhow::bail!("no device {device} is enrolled in {}", data.display());
    }
    db::set_region(store, device, region)
}
