//! The outbound allowlist as text, JSON, an nftables file and a PowerShell
//! script.
//!
//! Firewalls match addresses, the host and its modules need names (some of
//! them DNS wildcards). Each form deals with that in the way its reader can
//! act on:
//! - text and JSON list host patterns (`name:port`, `*.suffix:port`,
//!   `address:port`) for FQDN-aware firewalls and proxies, each with the parts
//!   that need it;
//! - nftables gets one named set (IPv4 and IPv6) per name, empty, for the
//!   admin or a cron job to fill from DNS (an address list resolved once
//!   would go stale silently, and resolving on the machine that writes the
//!   file may differ from the PC's view), and a chain `outpost_allow` that
//!   accepts exactly these connections; it changes no traffic until the
//!   admin's own output chain jumps to it. `--nft-table` puts both into the
//!   admin's table, since a jump cannot cross tables;
//! - PowerShell resolves each name when the script runs on the PC and
//!   replaces its earlier rules (group `outpost`) only once every name
//!   resolved, so running it again refreshes the addresses.
//!
//! A wildcard cannot be resolved: nftables gets its (empty) sets and a
//! comment, PowerShell a commented example, and both name the concrete names
//! below it that the config knows.

use super::inventory::{Allowlist, Need, path_for_comment};
use outpost_signing::manifest::HostPattern;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// Default nftables table (family `inet`).
pub const DEFAULT_NFT_TABLE: &str = "outpost";
/// nftables keeps at most this many bytes of a rule comment.
pub const NFT_COMMENT_MAX_BYTES: usize = 128;
/// Longest nftables table name accepted here.
pub const MAX_NFT_TABLE_NAME: usize = 64;
/// The Windows Firewall rule group of the PowerShell form.
pub const POWERSHELL_GROUP: &str = "outpost";

/// Whether `name` is an nftables identifier this module writes as a table
/// name: a letter, then letters, digits and `_`.
pub fn valid_nft_table(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_NFT_TABLE_NAME
}

fn header(out: &mut String, config: &Path, list: &Allowlist) {
    let _ = writeln!(
        out,
        "# outbound allowlist of outpost, from {} ({})",
        path_for_comment(config),
        list.uplink
    );
    out.push_str("# Every connection is HTTPS (TLS over TCP) from this PC; nothing comes in.\n");
    out.push_str(
        "# This PC also needs DNS (UDP and TCP port 53 to its DNS server) to find these names.\n",
    );
}

fn refused_comments(out: &mut String, list: &Allowlist) {
    for (module, reason) in &list.refused {
        let reason: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let _ = writeln!(
            out,
            "# NOT INCLUDED: module {module}, which the host would refuse ({reason}); its endpoints are unknown until it verifies"
        );
    }
}

fn wildcard_note(list: &Allowlist, need: &Need) -> Option<String> {
    let HostPattern::Wildcard(suffix) = &need.endpoint.host else {
        return None;
    };
    let known = list.known_names_under(&need.endpoint);
    Some(format!(
        "DNS wildcard: any name below {suffix}; names below it in this config: {}",
        if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        }
    ))
}

/// One line per endpoint: `pattern  tcp  needed by …`.
pub fn to_text(config: &Path, list: &Allowlist) -> String {
    let mut out = String::new();
    header(&mut out, config, list);
    let width = list
        .needs
        .iter()
        .map(|n| n.endpoint.to_string().len())
        .max()
        .unwrap_or(0);
    for need in &list.needs {
        let _ = write!(
            out,
            "{:<width$}  tcp  needed by {}",
            need.endpoint.to_string(),
            need.needed_by_text()
        );
        if let Some(note) = wildcard_note(list, need) {
            let _ = write!(out, " ({note})");
        }
        out.push('\n');
    }
    refused_comments(&mut out, list);
    out
}

/// The JSON form.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct JsonAllowlist<'a> {
    config: String,
    uplink: &'a str,
    rules: Vec<JsonRule>,
    not_included: Vec<JsonRefused<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct JsonRule {
    /// `name`, `*.suffix` or an address.
    host: String,
    port: u16,
    protocol: &'static str,
    /// `name`, `wildcard` or `address`.
    kind: &'static str,
    needed_by: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    names_known_below: Option<Vec<String>>,
}

#[derive(Serialize)]
struct JsonRefused<'a> {
    module: &'a str,
    reason: &'a str,
}

/// The JSON form (pretty, with a final newline).
pub fn to_json(config: &Path, list: &Allowlist) -> String {
    let rules = list
        .needs
        .iter()
        .map(|n| {
            let (host, kind, known) = match &n.endpoint.host {
                HostPattern::Exact(h) => (h.clone(), "name", None),
                HostPattern::Wildcard(s) => (
                    format!("*.{s}"),
                    "wildcard",
                    Some(list.known_names_under(&n.endpoint)),
                ),
                HostPattern::Ip(ip) => (ip.to_string(), "address", None),
            };
            JsonRule {
                host,
                port: n.endpoint.port,
                protocol: "tcp",
                kind,
                needed_by: n.needed_by.iter().map(ToString::to_string).collect(),
                names_known_below: known,
            }
        })
        .collect();
    let doc = JsonAllowlist {
        config: config.display().to_string(),
        uplink: &list.uplink,
        rules,
        not_included: list
            .refused
            .iter()
            .map(|(module, reason)| JsonRefused { module, reason })
            .collect(),
    };
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// `s` cut to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The nftables form, loadable with `nft -f` (checked with `nft -c -f`):
/// sets and the chain `outpost_allow` in table `inet {table}`. `table` must
/// pass [`valid_nft_table`].
pub fn to_nftables(config: &Path, list: &Allowlist, table: &str) -> String {
    let mut out = String::from("#!/usr/sbin/nft -f\n");
    header(&mut out, config, list);
    let first_name = list
        .needs
        .iter()
        .enumerate()
        .find_map(|(i, n)| match &n.endpoint.host {
            HostPattern::Exact(h) => Some((i + 1, h.clone())),
            _ => None,
        });
    out.push_str("#\n# nftables matches addresses, not names. Each name below has a set for its\n# IPv4 and one for its IPv6 addresses, empty as written here: fill them from\n# DNS after loading this file, and again regularly (addresses change).\n");
    if let Some((i, name)) = first_name {
        let _ = writeln!(
            out,
            "# For example, from cron (one transaction, so no connection is dropped meanwhile):\n#   {{ echo \"flush set inet {table} outpost_{i}_v4\"; getent ahostsv4 {name} | cut -d' ' -f1 | sort -u | sed 's/.*/add element inet {table} outpost_{i}_v4 {{ & }}/'; }} | nft -f -\n# and the same for outpost_{i}_v6 with `getent ahostsv6` (leaving out ::ffff: addresses)."
        );
    }
    out.push_str("# A wildcard (*.name) cannot be looked up: fill its sets with the addresses of\n# the names below it that you allow.\n#\n");
    let _ = writeln!(
        out,
        "# Loading this file changes no traffic: the chain outpost_allow accepts these\n# connections and nothing else, and nothing jumps to it yet. In the output\n# chain of your ruleset, before its final drop, add\n#   jump outpost_allow\n# A jump reaches only chains of its own table: write this file with\n# `outpost firewall-rules --format nftables --nft-table NAME` to add the sets\n# and the chain to your table inet NAME (here: inet {table})."
    );
    refused_comments(&mut out, list);
    let _ = writeln!(out, "table inet {table} {{");
    let mut rules = Vec::new();
    for (i, need) in list.needs.iter().enumerate() {
        let i = i + 1;
        let port = need.endpoint.port;
        let comment = format!("{} needed by {}", need.endpoint, need.needed_by_text());
        let comment = cut(&comment, NFT_COMMENT_MAX_BYTES);
        match &need.endpoint.host {
            HostPattern::Ip(ip) => {
                let family = if ip.is_ipv4() { "ip" } else { "ip6" };
                rules.push(format!(
                    "\t\t{family} daddr {ip} tcp dport {port} accept comment \"{comment}\""
                ));
            }
            HostPattern::Exact(_) | HostPattern::Wildcard(_) => {
                let _ = write!(
                    out,
                    "\t# {i}: {}, needed by {}",
                    need.endpoint,
                    need.needed_by_text()
                );
                if let Some(note) = wildcard_note(list, need) {
                    let _ = write!(out, " ({note})");
                }
                out.push('\n');
                for (suffix, ty) in [("v4", "ipv4_addr"), ("v6", "ipv6_addr")] {
                    let _ = writeln!(
                        out,
                        "\tset outpost_{i}_{suffix} {{\n\t\ttype {ty}\n\t\tflags interval\n\t}}"
                    );
                }
                rules.push(format!(
                    "\t\tip daddr @outpost_{i}_v4 tcp dport {port} accept comment \"{comment}\""
                ));
                rules.push(format!(
                    "\t\tip6 daddr @outpost_{i}_v6 tcp dport {port} accept comment \"{comment}\""
                ));
            }
        }
    }
    out.push_str("\tchain outpost_allow {\n");
    for r in rules {
        out.push_str(&r);
        out.push('\n');
    }
    out.push_str("\t}\n}\n");
    out
}

/// The PowerShell form: `New-NetFirewallRule` per endpoint, names resolved
/// when the script runs.
pub fn to_powershell(config: &Path, list: &Allowlist) -> String {
    let mut out = String::new();
    header(&mut out, config, list);
    let _ = writeln!(
        out,
        "#\n# Windows Defender Firewall matches addresses, not names: this script looks\n# each name up now (Resolve-DnsName) and allows the addresses it gets. They can\n# change: run the script again regularly (for example as a scheduled task). It\n# replaces the rules it made before (group '{POWERSHELL_GROUP}') only once every name\n# resolved. Outbound rules matter only where outbound traffic is blocked by\n# default. To allow these connections to the agent alone, add\n# -Program 'C:\\Program Files\\outpost\\outpost.exe' (its real path) to each rule."
    );
    refused_comments(&mut out, list);
    out.push_str("#Requires -RunAsAdministrator\n$ErrorActionPreference = 'Stop'\n\n");
    out.push_str("function Resolve-OutpostName([string]$Name) {\n    $addresses = @(Resolve-DnsName -Name $Name -Type A_AAAA -DnsOnly |\n        Where-Object { $_.IPAddress } | ForEach-Object { $_.IPAddress } | Sort-Object -Unique)\n    if ($addresses.Count -eq 0) { throw \"outpost: $Name does not resolve\" }\n    return $addresses\n}\n\n");
    let mut rules = Vec::new();
    let mut wildcards = Vec::new();
    for (i, need) in list.needs.iter().enumerate() {
        let i = i + 1;
        let port = need.endpoint.port;
        let display = format!("outpost: {} ({})", need.endpoint, need.needed_by_text());
        let rule = |remote: &str| {
            format!(
                "New-NetFirewallRule -Group '{POWERSHELL_GROUP}' -DisplayName '{display}' -Direction Outbound -Action Allow -Protocol TCP -RemotePort {port} -RemoteAddress {remote} | Out-Null"
            )
        };
        match &need.endpoint.host {
            HostPattern::Exact(name) => {
                let _ = writeln!(out, "$a{i} = Resolve-OutpostName '{name}'");
                rules.push(rule(&format!("$a{i}")));
            }
            HostPattern::Ip(ip) => rules.push(rule(&format!("'{ip}'"))),
            HostPattern::Wildcard(suffix) => {
                let note = wildcard_note(list, need).unwrap_or_default();
                wildcards.push(format!(
                    "# {} (needed by {}) is a DNS wildcard, which Windows Defender Firewall\n# cannot match ({note}). Add a rule for each name below {suffix}\n# that you allow, for example:\n#   New-NetFirewallRule -Group '{POWERSHELL_GROUP}' -DisplayName 'outpost: NAME.{suffix}:{port} ({})' -Direction Outbound -Action Allow -Protocol TCP -RemotePort {port} -RemoteAddress (Resolve-OutpostName 'NAME.{suffix}') | Out-Null",
                    need.endpoint,
                    need.needed_by_text(),
                    need.needed_by_text()
                ));
            }
        }
    }
    let _ = writeln!(
        out,
        "\nRemove-NetFirewallRule -Group '{POWERSHELL_GROUP}' -ErrorAction SilentlyContinue"
    );
    for r in &rules {
        out.push_str(r);
        out.push('\n');
    }
    for w in &wildcards {
        out.push('\n');
        out.push_str(w);
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "\nWrite-Output 'outpost: {} outbound rule(s) written (group {POWERSHELL_GROUP})'",
        rules.len()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_table_names_are_plain_identifiers() {
        for ok in ["outpost", "filter", "Filter_2"] {
            assert!(valid_nft_table(ok), "{ok}");
        }
        for bad in ["", "2x", "a b", "a;flush ruleset", "a\"", &"a".repeat(65)] {
            assert!(!valid_nft_table(bad), "{bad}");
        }
    }

    #[test]
    fn comments_are_cut_on_a_character_boundary() {
        assert_eq!(cut("abc", 5), "abc");
        assert_eq!(cut("abcdef", 3), "abc");
        assert_eq!(cut("aé", 2), "a");
    }
}
