//! A throw-away PKI for tests and the demo: a CA and one server leaf.

use std::path::Path;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A freshly generated CA and a server certificate it signed (PEM).
#[derive(Clone)]
pub struct TestPki {
    /// The CA certificate: what clients trust.
    pub ca_cert_pem: String,
    /// The server's leaf certificate.
    pub server_cert_pem: String,
    /// The server's private key (PKCS#8).
    pub server_key_pem: String,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki").finish_non_exhaustive()
    }
}

impl TestPki {
    /// Generate a CA and a leaf whose subject alternative names are `names`
    /// (an IP literal becomes an IP SAN, anything else a DNS name), e.g.
    /// `&["localhost", "127.0.0.1"]`.
    pub fn generate(names: &[&str]) -> anyhow::Result<TestPki> {
        let ca_key = KeyPair::generate().context("CA key")?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "outpost test CA");
        ca.distinguished_name = dn;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).context("CA certificate")?;
        let issuer = Issuer::new(ca, ca_key);

        let leaf_key = KeyPair::generate().context("server key")?;
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let mut leaf = CertificateParams::new(names).context("server names")?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "outpost test server");
        leaf.distinguished_name = dn;
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_cert = leaf
            .signed_by(&leaf_key, &issuer)
            .context("server certificate")?;
        Ok(TestPki {
            ca_cert_pem: ca_cert.pem(),
            server_cert_pem: leaf_cert.pem(),
            server_key_pem: leaf_key.serialize_pem(),
        })
    }

    /// Write `ca.pem`, `server.pem` and `server.key.pem` (0600 on Unix) into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("ca.pem"), &self.ca_cert_pem)?;
        std::fs::write(dir.join("server.pem"), &self.server_cert_pem)?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(dir.join("server.key.pem"))?;
        std::io::Write::write_all(&mut f, self.server_key_pem.as_bytes())?;
        Ok(())
    }
}
