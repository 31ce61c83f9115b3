//! Who a node is on the wire: the cluster CA every node derives from the shared secret, the
//! per-node leaf certificates it signs, operator-supplied PEM files as the alternative, and
//! reading the authenticated node id back out of a peer's certificate.
//!
//! Trust model: whoever knows the cluster secret (and id) can derive the CA key and therefore
//! mint node certificates. That is the point (no PKI to distribute for a dev or small cluster);
//! operators who want more use [`generate_operator_pki`] and [`NodeIdentity::from_pem_files`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use ring::hkdf;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::error::IdentityError;

/// A well-known secret for local development. Anyone can read it here, so a node must refuse
/// it outside of an explicit dev mode; the transport only exports it.
pub const DEV_CLUSTER_SECRET: &str = "torua-development-cluster-secret-not-for-production";

/// DNS name present in every node certificate and used as the TLS server name when dialling:
/// peers are addressed by socket address, and the node id is checked from the subject instead.
pub const PEER_SERVER_NAME: &str = "torua-peer";

/// HKDF info label of the CA key seed. Distinct from the gossip key label so knowing one
/// derived key says nothing about the other.
pub(crate) const CA_SEED_INFO: &[u8] = b"torua/v1 cluster-ca ed25519 seed";

/// PKCS#8 v1 header of an Ed25519 private key; the 32-byte seed follows (RFC 8410).
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A certificate authority able to issue node certificates.
pub struct ClusterCa {
    params: CertificateParams,
    key: KeyPair,
    cert_der: CertificateDer<'static>,
}

/// A `Debug` that shows a type's name and one field, never the others (keys among them).
macro_rules! debug_one_field {
    ($name:ident, $field:literal, |$this:ident| $value:expr) => {
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let $this = self;
                f.debug_struct(stringify!($name))
                    .field($field, &$value)
                    .finish_non_exhaustive()
            }
        }
    };
}

debug_one_field!(ClusterCa, "subject", |ca| ca.params.distinguished_name);

impl ClusterCa {
    /// Derives the cluster CA from the shared secret. Every node calling this with the same
    /// secret and cluster id gets the same subject and key pair, hence trusts the same roots,
    /// without exchanging anything.
    pub fn derive(cluster_secret: &str, cluster_id: &str) -> Result<ClusterCa, IdentityError> {
        let mut seed = [0u8; 32];
        hkdf_expand(cluster_secret, cluster_id, CA_SEED_INFO, &mut seed)?;
        let mut pkcs8 = Vec::with_capacity(48);
        pkcs8.extend_from_slice(&ED25519_PKCS8_V1_PREFIX);
        pkcs8.extend_from_slice(&seed);
        let key = KeyPair::try_from(pkcs8.as_slice())?;
        // A serial derived from the key keeps the CA certificate byte-identical across nodes
        // (Ed25519 signatures and the fixed validity below are deterministic too).
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key_raw());
        let serial = &digest.as_ref()[..16];
        Self::build(
            &format!("torua cluster CA {cluster_id}"),
            key,
            SerialNumber::from_slice(serial),
        )
    }

    /// A CA with a fresh random key, for operator-managed PKI.
    fn generate(common_name: &str) -> Result<ClusterCa, IdentityError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let serial: [u8; 16] = rand::random();
        Self::build(common_name, key, SerialNumber::from_slice(&serial))
    }

    fn build(
        common_name: &str,
        key: KeyPair,
        serial: SerialNumber,
    ) -> Result<ClusterCa, IdentityError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "torua");
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        // Path length 0: this CA signs leaves only.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        // Fixed validity: the CA is as long-lived as the secret it comes from.
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2099, 12, 31);
        params.serial_number = Some(serial);
        let cert = params.self_signed(&key)?;
        Ok(ClusterCa {
            cert_der: cert.der().clone(),
            params,
            key,
        })
    }

    /// DER of the CA certificate (the trust anchor every node installs).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// PEM of the CA certificate.
    pub fn cert_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.cert_der)
    }

    /// PEM (PKCS#8) of the CA private key. Only operator PKI writes this out.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Issues a certificate for `node_id` with a fresh ECDSA P-256 key. The node id goes in
    /// the subject common name (read back by peers), and the SAN carries [`PEER_SERVER_NAME`]
    /// plus a DNS-safe form of the node id.
    pub fn issue_node_identity(&self, node_id: &str) -> Result<NodeIdentity, IdentityError> {
        validate_node_id(node_id)?;
        // Every node is both a TLS server and a TLS client: an EKU extension listing only one
        // purpose makes the other direction fail verification.
        let (cert_der, key_der) = self.issue_leaf(
            vec![PEER_SERVER_NAME.to_string(), node_dns_name(node_id)],
            node_id,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )?;
        Ok(NodeIdentity {
            inner: Arc::new(IdentityInner {
                node_id: node_id.to_string(),
                ca_der: self.cert_der.clone(),
                cert_der,
                key_der,
            }),
        })
    }

    /// Issues a TLS server certificate for the HTTP API, valid for `names` (IP addresses or DNS
    /// names; clients check the one they dialled), with a fresh ECDSA P-256 key. A client that
    /// knows the cluster secret derives the same CA and so trusts it.
    pub fn issue_server_cert(&self, names: &[String]) -> Result<ServerCert, IdentityError> {
        let (cert_der, key_der) = self.issue_leaf(
            names.to_vec(),
            names.first().map_or("torua", String::as_str),
            vec![ExtendedKeyUsagePurpose::ServerAuth],
        )?;
        Ok(ServerCert {
            chain: vec![cert_der],
            key_der,
        })
    }

    /// A leaf certificate signed by this CA, with a fresh ECDSA P-256 key and a random serial:
    /// SAN `names`, subject `O=torua, CN=common_name`, no CA, digital signatures for `usages`,
    /// valid from a day ago (slack for clock skew between nodes) for ten years.
    fn issue_leaf(
        &self,
        names: Vec<String>,
        common_name: &str,
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), IdentityError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(names)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "torua");
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(3650);
        let serial: [u8; 16] = rand::random();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        let key_der = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| IdentityError::Generate(e.to_string()))?;
        Ok((cert.der().clone(), key_der))
    }
}

/// A TLS server certificate chain and its key (the HTTP API's).
pub struct ServerCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key_der: PrivateKeyDer<'static>,
}

debug_one_field!(ServerCert, "chain", |cert| cert.chain.len());

impl ServerCert {
    /// Loads an operator's certificate chain and key (PEM).
    pub fn from_pem_files(
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<ServerCert, IdentityError> {
        let (cert_path, key_path) = (cert_path.as_ref(), key_path.as_ref());
        let bytes = read_file(cert_path)?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|_| not_pem(cert_path, "certificate"))?;
        if chain.is_empty() {
            return Err(not_pem(cert_path, "certificate"));
        }
        let key_der = read_key(key_path)?;
        Ok(ServerCert { chain, key_der })
    }
}

/// The credentials of one node: its certificate and key, and the CA it trusts. Cheap to clone.
#[derive(Clone)]
pub struct NodeIdentity {
    inner: Arc<IdentityInner>,
}

struct IdentityInner {
    node_id: String,
    ca_der: CertificateDer<'static>,
    cert_der: CertificateDer<'static>,
    key_der: PrivateKeyDer<'static>,
}

debug_one_field!(NodeIdentity, "node_id", |id| id.inner.node_id);

impl NodeIdentity {
    /// Loads operator-issued credentials. Checks that each file is PEM of the right kind, that
    /// the key matches the certificate, and that the certificate verifies against the CA for
    /// both client and server use, so a broken setup fails at start-up and not at first dial.
    pub fn from_pem_files(
        ca_path: impl AsRef<Path>,
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<NodeIdentity, IdentityError> {
        let (ca_path, cert_path, key_path) =
            (ca_path.as_ref(), cert_path.as_ref(), key_path.as_ref());
        let ca_der = read_cert(ca_path)?;
        let cert_der = read_cert(cert_path)?;
        let key_der = read_key(key_path)?;
        let key = KeyPair::try_from(&key_der).map_err(|e| IdentityError::BadKey {
            path: key_path.to_path_buf(),
            reason: format!("{e} (expected an unencrypted pkcs#8 ecdsa or ed25519 key)"),
        })?;
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).map_err(|e| {
            IdentityError::BadCertificate {
                path: cert_path.to_path_buf(),
                reason: e.to_string(),
            }
        })?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(IdentityError::KeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            });
        }
        let node_id =
            node_id_from_cert(&cert_der).ok_or_else(|| IdentityError::BadCertificate {
                path: cert_path.to_path_buf(),
                reason: "no subject common name holding the node id".into(),
            })?;
        verify_leaf(&ca_der, &cert_der).map_err(|reason| {
            tracing::debug!(%reason, "operator certificate does not verify");
            IdentityError::NotSignedByCa {
                cert: cert_path.to_path_buf(),
                ca: ca_path.to_path_buf(),
            }
        })?;
        Ok(NodeIdentity {
            inner: Arc::new(IdentityInner {
                node_id,
                ca_der,
                cert_der,
                key_der,
            }),
        })
    }

    /// The node id in this identity's certificate.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// DER of this node's certificate.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.inner.cert_der
    }

    /// DER of the CA this node trusts.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.inner.ca_der
    }

    pub(crate) fn key_der(&self) -> PrivateKeyDer<'static> {
        self.inner.key_der.clone_key()
    }

    /// Test hook: the same leaf trusting a different CA. Lets tests build a client whose
    /// certificate the server must reject while the client itself accepts the server.
    #[doc(hidden)]
    pub fn with_trusted_ca_for_tests(&self, ca_der: CertificateDer<'static>) -> NodeIdentity {
        NodeIdentity {
            inner: Arc::new(IdentityInner {
                node_id: self.inner.node_id.clone(),
                ca_der,
                cert_der: self.inner.cert_der.clone(),
                key_der: self.inner.key_der.clone_key(),
            }),
        }
    }
}

/// Writes a fresh operator CA and one certificate per node into `out_dir`:
/// `ca.pem`, `ca.key`, `<node>.pem`, `<node>.key`. Keys are written with mode 0600 on Unix.
pub fn generate_operator_pki(out_dir: &Path, node_ids: &[String]) -> Result<(), IdentityError> {
    for id in node_ids {
        validate_node_id(id)?;
    }
    std::fs::create_dir_all(out_dir).map_err(|source| IdentityError::Write {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let ca = ClusterCa::generate("torua operator CA")?;
    write_file(&out_dir.join("ca.pem"), ca.cert_pem().as_bytes(), false)?;
    write_file(&out_dir.join("ca.key"), ca.key_pem().as_bytes(), true)?;
    for id in node_ids {
        let identity = ca.issue_node_identity(id)?;
        let cert_pem = pem_encode("CERTIFICATE", identity.cert_der());
        let key_pem = match &identity.inner.key_der {
            PrivateKeyDer::Pkcs8(k) => pem_encode("PRIVATE KEY", k.secret_pkcs8_der()),
            _ => return Err(IdentityError::Generate("unexpected key format".into())),
        };
        write_file(
            &out_dir.join(format!("{id}.pem")),
            cert_pem.as_bytes(),
            false,
        )?;
        write_file(&out_dir.join(format!("{id}.key")), key_pem.as_bytes(), true)?;
    }
    Ok(())
}

/// The node id (subject common name) of a certificate, if it has one.
pub fn node_id_from_cert(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// Node ids end up in file names and certificate subjects: keep them boring.
fn validate_node_id(node_id: &str) -> Result<(), IdentityError> {
    let ok = !node_id.is_empty()
        && node_id.len() <= 64
        && node_id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && node_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadNodeId(node_id.to_string()))
    }
}

/// A DNS label form of the node id for the SAN (informational; not used for verification).
fn node_dns_name(node_id: &str) -> String {
    let label: String = node_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let label = label.trim_matches('-');
    let label = if label.is_empty() { "node" } else { label };
    format!("{label}.node.torua")
}

/// HKDF-SHA256(ikm = secret, salt = cluster id, info) into `out`.
pub(crate) fn hkdf_expand(
    secret: &str,
    cluster_id: &str,
    info: &[u8],
    out: &mut [u8],
) -> Result<(), IdentityError> {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, cluster_id.as_bytes()).extract(secret.as_bytes());
    let info = [info];
    prk.expand(&info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| IdentityError::Generate("hkdf output too long".into()))
}

/// Checks `leaf` against `ca` exactly as the TLS stack will: as a client certificate and as a
/// server certificate for [`PEER_SERVER_NAME`].
pub(crate) fn verify_leaf(
    ca: &CertificateDer<'static>,
    leaf: &CertificateDer<'_>,
) -> Result<(), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| e.to_string())?;
    let roots = Arc::new(roots);
    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let now = UnixTime::now();
    client_verifier
        .verify_client_cert(leaf, &[], now)
        .map_err(|e| format!("as client: {e}"))?;
    let server_verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(PEER_SERVER_NAME).map_err(|e| e.to_string())?;
    server_verifier
        .verify_server_cert(leaf, &[], &name, &[], now)
        .map_err(|e| format!("as server: {e}"))?;
    Ok(())
}

fn read_file(path: &Path) -> Result<Vec<u8>, IdentityError> {
    std::fs::read(path).map_err(|source| IdentityError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_cert(path: &Path) -> Result<CertificateDer<'static>, IdentityError> {
    CertificateDer::from_pem_slice(&read_file(path)?).map_err(|_| not_pem(path, "certificate"))
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, IdentityError> {
    PrivateKeyDer::from_pem_slice(&read_file(path)?).map_err(|_| not_pem(path, "private key"))
}

fn not_pem(path: &Path, expected: &'static str) -> IdentityError {
    IdentityError::NotPem {
        path: path.to_path_buf(),
        expected,
    }
}

fn write_file(path: &PathBuf, contents: &[u8], secret: bool) -> Result<(), IdentityError> {
    let err = |source| IdentityError::Write {
        path: path.clone(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(err)?;
    std::io::Write::write_all(&mut file, contents).map_err(err)
}

fn pem_encode(tag: &str, der: &[u8]) -> String {
    // RFC 7468: base64 in 64-character lines.
    let b64 = base64_encode(der);
    let mut out = format!("-----BEGIN {tag}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {tag}-----\n"));
    out
}

fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(ALPHABET[(n >> 18) as usize & 63] as char);
        out.push(ALPHABET[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            ALPHABET[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            ALPHABET[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ca_is_deterministic_and_secret_dependent() {
        let a = ClusterCa::derive("s3cret", "c1").unwrap();
        let b = ClusterCa::derive("s3cret", "c1").unwrap();
        let c = ClusterCa::derive("other", "c1").unwrap();
        let d = ClusterCa::derive("s3cret", "c2").unwrap();
        assert_eq!(a.key.public_key_raw(), b.key.public_key_raw());
        assert_ne!(a.key.public_key_raw(), c.key.public_key_raw());
        assert_ne!(a.key.public_key_raw(), d.key.public_key_raw());
    }

    #[test]
    fn independently_derived_cas_trust_each_others_leaves() {
        let a = ClusterCa::derive("s3cret", "c1").unwrap();
        let b = ClusterCa::derive("s3cret", "c1").unwrap();
        let leaf_a = a.issue_node_identity("node-a").unwrap();
        let leaf_b = b.issue_node_identity("node-b").unwrap();
        verify_leaf(b.cert_der(), leaf_a.cert_der()).unwrap();
        verify_leaf(a.cert_der(), leaf_b.cert_der()).unwrap();
        let other = ClusterCa::derive("wrong", "c1").unwrap();
        assert!(verify_leaf(other.cert_der(), leaf_a.cert_der()).is_err());
    }

    #[test]
    fn node_id_round_trips_through_certificate() {
        let ca = ClusterCa::derive("s3cret", "c1").unwrap();
        let id = ca.issue_node_identity("Node_7.eu").unwrap();
        assert_eq!(
            node_id_from_cert(id.cert_der()).as_deref(),
            Some("Node_7.eu")
        );
        assert_eq!(id.node_id(), "Node_7.eu");
        assert!(ca.issue_node_identity("../etc").is_err());
        assert!(ca.issue_node_identity("").is_err());
        assert!(node_id_from_cert(b"junk").is_none());
    }

    #[test]
    fn pem_encoding_matches_parser() {
        let ca = ClusterCa::derive("s3cret", "c1").unwrap();
        let parsed = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap();
        assert_eq!(parsed.as_ref(), ca.cert_der().as_ref());
        for len in 0..10 {
            let data: Vec<u8> = (0..len).map(|i| i as u8 * 37).collect();
            let pem = pem_encode("CERTIFICATE", &data);
            if len > 0 {
                let back = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
                assert_eq!(back.as_ref(), &data[..]);
            }
        }
    }
}
