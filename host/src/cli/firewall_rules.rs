//! `outpost firewall-rules --config FILE --format text|json|nftables|powershell`:
//! the outbound allowlist of the configured region and modules. Exit status
//! 1 when a configured module would be refused (its endpoints are unknown,
//! so the list may be short); the list is printed all the same.

use crate::config::Config;
use crate::diagnose::{firewall, inventory};
use anyhow::Context;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Output forms.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Format {
    /// One line per host pattern and port, with what needs it.
    Text,
    /// The same as JSON.
    Json,
    /// An nftables file (`nft -f`): sets to fill with addresses, and a chain.
    Nftables,
    /// A PowerShell script of `New-NetFirewallRule` calls.
    Powershell,
}

/// Arguments of `outpost firewall-rules`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The host config file.
    #[arg(long)]
    config: PathBuf,
    /// Output form.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// nftables only: the table (family inet) to put the sets and the chain
    /// in; use the table of your own output chain so that it can jump to it.
    #[arg(long, default_value = firewall::DEFAULT_NFT_TABLE)]
    nft_table: String,
}

pub fn exec(a: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        firewall::valid_nft_table(&a.nft_table),
        "--nft-table {:?} is not a table name (a letter, then letters, digits or '_', at most {} characters)",
        a.nft_table,
        firewall::MAX_NFT_TABLE_NAME
    );
    let config = Config::load(&a.config)?;
    let modules = inventory::modules(&config);
    let list = inventory::Allowlist::new(&config, &modules)
        .with_context(|| format!("reading the uplink settings of {}", config.path.display()))?;
    let text = match a.format {
        Format::Text => firewall::to_text(&config.path, &list),
        Format::Json => firewall::to_json(&config.path, &list),
        Format::Nftables => firewall::to_nftables(&config.path, &list, &a.nft_table),
        Format::Powershell => firewall::to_powershell(&config.path, &list),
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    for (module, reason) in &list.refused {
        eprintln!(
            "outpost: module {module} is left out of the allowlist: the host would refuse it ({reason})"
        );
    }
    Ok(if list.refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
