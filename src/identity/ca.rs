//! Signing certificates: Trailmark's own CA (rcgen) and the checks every user certificate passes (x509-parser).
//!
//! Trailmark either runs its own small CA ([`create_ca`], [`Ca`]) or trusts an enterprise CA
//! that signs the requests made by [`user_csr_pem`]. Either way, every user certificate is
//! vetted by [`check_user_certificate`] before its Ed25519 key may sign ledger records.
//! The user ID travels in the subject's `UID` attribute (OID 0.9.2342.19200300.100.1.1).

use std::fmt;

use crate::ledger::UserId;
use chrono::{DateTime, Utc};
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa};
use rcgen::{Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PKCS_ED25519, PublicKeyData};
use rcgen::{SerialNumber, SignatureAlgorithm};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use x509_parser::asn1_rs::{Oid, Tag};
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::extensions::ParsedExtension;
use x509_parser::oid_registry::OID_X509_EXT_SUBJECT_KEY_IDENTIFIER as OID_SKI;
use x509_parser::oid_registry::OID_X509_ORGANIZATION_NAME as OID_O;
use x509_parser::oid_registry::{OID_SIG_ED25519, OID_USERID, OID_X509_COMMON_NAME};
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

/// The `UID` (userId) attribute type, RFC 4519.
const UID_OID: &[u64] = &[0, 9, 2342, 19200300, 100, 1, 1];
/// What a user whose certificate is unusable should do.
const REISSUE: &str = "issue a new one with `trailmark user reissue-key`";

/// Everything that can go wrong while creating, issuing or checking certificates.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Key or certificate generation failed, or its inputs were unusable.
    #[error("could not generate certificate material: {0}; correct the input and retry")]
    Generate(String),
    /// Input was not a well-formed certificate, key or PEM document.
    #[error("could not parse certificate data: {0}; supply an X.509 certificate (DER or PEM)")]
    Parse(String),
    /// The CA private key does not belong to the CA certificate.
    #[error("the CA key does not match the CA certificate; supply the key created with it")]
    KeyMismatch,
    /// The certified key is not Ed25519 (the OID of the key type found).
    #[error("the certificate holds a {0} key, not Ed25519; certify the user's Ed25519 key")]
    NotEd25519(String),
    /// The time of use lies outside the validity of the certificate or of its CA.
    #[error("{}", validity_message(.subject, *.ca, .at, .not_before, .not_after))]
    NotValidAt {
        /// Subject DN of the certificate concerned.
        subject: String,
        /// Whether that certificate is the issuing CA's.
        ca: bool,
        /// The time of use.
        at: DateTime<Utc>,
        /// Start of validity.
        not_before: DateTime<Utc>,
        /// End of validity.
        not_after: DateTime<Utc>,
    },
    /// keyUsage is missing or allows neither digitalSignature nor nonRepudiation.
    #[error("the certificate's keyUsage {0}, so it may not sign records; {REISSUE}")]
    KeyUsage(&'static str),
    /// A CA certificate (its subject DN) was presented as a user certificate.
    #[error("{0} is a CA certificate and may not sign records; use the user's own certificate")]
    IsCaCertificate(String),
    /// No trusted CA has the certificate's issuer DN.
    #[error("the issuer {0} is not a trusted CA; trust that CA's certificate or {REISSUE}")]
    UntrustedIssuer(String),
    /// The signature does not verify with the key of any trusted CA of that name.
    #[error(
        "the signature does not verify with trusted CA {0} (altered, or a look-alike CA); {REISSUE}"
    )]
    BadSignature(String),
    /// The signature algorithm (its OID) cannot be verified.
    #[error("signature algorithm {0} is unsupported; have the CA sign with Ed25519, ECDSA or RSA")]
    UnsupportedAlgorithm(String),
    /// A certificate used as a CA may not issue certificates (subject DN, reason).
    #[error("{0} is not a CA certificate ({1}); use the CA's own certificate instead")]
    NotACa(String, &'static str),
    /// A root CA certificate was expected, but this one (subject DN) is not self-signed.
    #[error("the CA certificate {0} is not self-signed; import the root certificate of its CA")]
    NotSelfSigned(String),
}

fn validity_message(
    subject: &str,
    ca: bool,
    at: &DateTime<Utc>,
    not_before: &DateTime<Utc>,
    not_after: &DateTime<Utc>,
) -> String {
    let (what, advice) = match ca {
        true => ("CA certificate", "renew or replace that CA certificate"),
        false => ("certificate", REISSUE),
    };
    let (fact, stamp) = match at < not_before {
        true => ("is not valid before", not_before),
        false => ("expired at", not_after),
    };
    let stamp = stamp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    format!("the {what} of {subject} {fact} {stamp} (checked at {at}); {advice}")
}

/// A freshly created CA: certificate and PKCS#8 private key, both PEM. `Debug` hides the key.
pub struct CaMaterial {
    /// The self-signed CA certificate (PEM).
    pub certificate_pem: String,
    /// The CA's private key (PKCS#8 PEM). Keep it secret.
    pub key_pem: String,
}

impl fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("CaMaterial");
        s.field("certificate_pem", &self.certificate_pem);
        s.field("key_pem", &"[secret key elided]").finish()
    }
}

/// Creates a self-signed Ed25519 CA (basicConstraints `cA:true, pathlen:0`, keyUsage
/// keyCertSign + cRLSign, random serial) valid from now for `validity_days` days.
///
/// # Errors
/// [`CaError::Generate`] if `validity_days` is 0, a name is empty or rcgen fails.
pub fn create_ca(
    common_name: &str,
    organisation: &str,
    validity_days: u32,
) -> Result<CaMaterial, CaError> {
    create_ca_with(&PKCS_ED25519, common_name, organisation, validity_days)
}

fn create_ca_with(
    alg: &'static SignatureAlgorithm,
    cn: &str,
    organisation: &str,
    days: u32,
) -> Result<CaMaterial, CaError> {
    if days == 0 || cn.is_empty() || organisation.is_empty() {
        return Err(gen_err("need a common name, an organisation and 1+ days"));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(&[
        (DnType::OrganizationName, organisation),
        (DnType::CommonName, cn),
    ]);
    let now = Utc::now();
    params.not_before = to_time(now)?;
    params.not_after = to_time(now + chrono::Duration::days(i64::from(days)))?;
    params.serial_number = Some(random_serial()?);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate_for(alg).map_err(gen_err)?;
    let certificate = params.self_signed(&key).map_err(gen_err)?;
    let (certificate_pem, key_pem) = (certificate.pem(), key.serialize_pem());
    Ok(CaMaterial {
        certificate_pem,
        key_pem,
    })
}

/// A loaded CA: its certificate and signing key, ready to issue user certificates.
pub struct Ca {
    der: Vec<u8>,
    key: KeyPair,
    /// The CA's subject DN (re-encoded for rcgen) and subject key identifier.
    issuer: CertificateParams,
    organisation: Option<String>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fingerprint = fingerprint(&self.der);
        f.debug_struct("Ca")
            .field("fingerprint", &fingerprint)
            .finish()
    }
}

impl Ca {
    /// Loads a CA from its certificate PEM and PKCS#8 key PEM (Ed25519, ECDSA or RSA).
    ///
    /// # Errors
    /// [`CaError::Parse`] for unreadable input, [`CaError::NotACa`] if the certificate may not
    /// issue certificates, [`CaError::KeyMismatch`] if the key is not the certificate's.
    pub fn load(certificate_pem: &str, key_pem: &str) -> Result<Ca, CaError> {
        let [der]: [Vec<u8>; 1] = pem_to_der(certificate_pem)?
            .try_into()
            .map_err(|_| parse_err("expected exactly one CA certificate"))?;
        let cert = parse(&der)?;
        require_ca(&cert)?;
        // rcgen's error is not echoed: it could quote key material.
        let key = KeyPair::from_pem(key_pem).map_err(|_| parse_err("CA key is not PKCS#8 PEM"))?;
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(CaError::KeyMismatch);
        }
        let mut issuer = CertificateParams::default();
        issuer.distinguished_name = dn_from_name(cert.subject())?;
        let ski = cert.get_extension_unique(&OID_SKI).map_err(parse_err)?;
        if let Some(ParsedExtension::SubjectKeyIdentifier(id)) = ski.map(|e| e.parsed_extension()) {
            issuer.key_identifier_method = KeyIdMethod::PreSpecified(id.0.to_vec());
        }
        let organisation = first_str(cert.subject(), &OID_O);
        Ok(Ca {
            der,
            key,
            issuer,
            organisation,
        })
    }

    /// The CA certificate (DER).
    pub fn certificate_der(&self) -> &[u8] {
        &self.der
    }

    /// Issue an end-entity certificate for a user's Ed25519 public key (32 raw bytes).
    ///
    /// Subject: `O` = the CA's organisation (if it has one), `CN` = `printed_name`,
    /// `UID` (0.9.2342.19200300.100.1.1) = `user_id` — rcgen emits UID directly as a custom
    /// attribute type, so no serialNumber fallback is used. keyUsage digitalSignature +
    /// contentCommitment (critical), basicConstraints `cA:false`, authority key identifier,
    /// random positive 16-byte serial, validity `not_before..=not_after` (whole seconds).
    ///
    /// # Errors
    /// [`CaError::Generate`] if a name is empty, `not_after <= not_before`, or signing fails.
    pub fn issue_user_certificate(
        &self,
        user_id: &UserId,
        printed_name: &str,
        public_key: &[u8; 32],
        not_before: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> Result<Vec<u8>, CaError> {
        if not_after <= not_before {
            return Err(gen_err("not_after must lie after not_before"));
        }
        let mut params = user_params(self.organisation.as_deref(), user_id.as_str(), printed_name)?;
        params.not_before = to_time(not_before)?;
        params.not_after = to_time(not_after)?;
        self.sign(params, public_key)
    }

    fn sign(&self, mut params: CertificateParams, key: &[u8; 32]) -> Result<Vec<u8>, CaError> {
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_params(&self.issuer, &self.key);
        let cert = params.signed_by(&RawEd25519(key), &issuer);
        let der = cert.map_err(gen_err)?.der().to_vec();
        // The CA name was rebuilt from parsed attributes; it must encode exactly as before.
        if parse(&der)?.issuer().as_raw() != parse(&self.der)?.subject().as_raw() {
            return Err(gen_err("the CA name could not be re-encoded faithfully"));
        }
        Ok(der)
    }
}

/// A user's raw Ed25519 public key: lets rcgen certify a key whose private half it lacks.
struct RawEd25519<'a>(&'a [u8; 32]);

impl PublicKeyData for RawEd25519<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ED25519
    }
}

/// A certificate signing request for an enterprise CA, signed with the user's Ed25519 key
/// given as 32-byte seed. Subject `CN` = `printed_name`, `UID` = `user_id`; it requests
/// keyUsage digitalSignature + contentCommitment and `cA:false`.
///
/// # Errors
/// [`CaError::Generate`] if a name is empty or rcgen fails.
pub fn user_csr_pem(
    user_id: &UserId,
    printed_name: &str,
    secret_seed: &[u8; 32],
) -> Result<String, CaError> {
    // RFC 8410 PKCS#8 v1 of an Ed25519 seed: a fixed 16-byte header, then the seed.
    let mut pkcs8 = b"\x30\x2e\x02\x01\x00\x30\x05\x06\x03\x2b\x65\x70\x04\x22\x04\x20".to_vec();
    pkcs8.extend_from_slice(secret_seed);
    let key = KeyPair::try_from(pkcs8.as_slice()).map_err(|_| gen_err("unusable Ed25519 seed"));
    pkcs8.fill(0);
    let params = user_params(None, user_id.as_str(), printed_name)?;
    let csr = params.serialize_request(&key?).map_err(gen_err)?;
    csr.pem().map_err(gen_err)
}

fn user_params(org: Option<&str>, uid: &str, name: &str) -> Result<CertificateParams, CaError> {
    if uid.is_empty() || name.is_empty() {
        return Err(gen_err("user ID and printed name must not be empty"));
    }
    let mut params = CertificateParams::default();
    let org = org.map(|o| (DnType::OrganizationName, o));
    let names = [
        (DnType::CommonName, name),
        (DnType::CustomDnType(UID_OID.into()), uid),
    ];
    params.distinguished_name = dn(&org.into_iter().chain(names).collect::<Vec<_>>());
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::ContentCommitment,
    ];
    params.is_ca = IsCa::ExplicitNoCa;
    Ok(params)
}

fn dn(entries: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (ty, value) in entries {
        dn.push(ty.clone(), *value);
    }
    dn
}

/// What a parsed and checked certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Lowercase hex SHA-256 of the DER.
    pub fingerprint_sha256: String,
    /// Subject DN as displayed by x509-parser (RFC 4514-like).
    pub subject: String,
    /// Issuer DN, same format.
    pub issuer: String,
    /// The subject's `UID` attribute (no serialNumber fallback: see [`Ca::issue_user_certificate`]).
    pub user_id: Option<String>,
    /// The subject's `CN` attribute.
    pub printed_name: Option<String>,
    /// The raw Ed25519 public key.
    pub public_key: [u8; 32],
    /// Start of validity.
    pub not_before: DateTime<Utc>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
    /// Serial number, lowercase hex of its DER content bytes.
    pub serial_hex: String,
}

/// What a checked CA certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaInfo {
    /// Lowercase hex SHA-256 of the DER.
    pub fingerprint_sha256: String,
    /// Subject DN as displayed by x509-parser.
    pub subject: String,
    /// Start of validity.
    pub not_before: DateTime<Utc>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
}

/// Parses a DER certificate; error unless the key is Ed25519. Performs no trust checks.
///
/// # Errors
/// [`CaError::Parse`] for malformed DER, [`CaError::NotEd25519`] for any other key type.
pub fn parse_certificate(der: &[u8]) -> Result<CertificateInfo, CaError> {
    info(&parse(der)?, der)
}

/// Parse PEM (one or more `CERTIFICATE` blocks) into DER blobs.
///
/// # Errors
/// [`CaError::Parse`] if the PEM is malformed, holds a non-certificate block, or holds none.
pub fn pem_to_der(pem: &str) -> Result<Vec<Vec<u8>>, CaError> {
    let mut ders = Vec::new();
    for block in Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(parse_err)?;
        if block.label != "CERTIFICATE" {
            let label = block.label;
            return Err(parse_err(format!("PEM block {label:?} is no certificate")));
        }
        ders.push(block.contents);
    }
    match ders.is_empty() {
        true => Err(parse_err("no PEM certificate found")),
        false => Ok(ders),
    }
}

/// The full check of a user certificate at time `at`: it parses with an Ed25519 key;
/// `at` lies within its validity; keyUsage allows digitalSignature or nonRepudiation;
/// it is not a CA; its issuer DN equals the subject DN of a trusted CA whose key verifies
/// its signature (any algorithm x509-parser verifies); that CA is a CA and valid at `at`.
///
/// # Errors
/// The first failing check: [`CaError::Parse`], [`CaError::NotEd25519`],
/// [`CaError::NotValidAt`], [`CaError::KeyUsage`], [`CaError::IsCaCertificate`],
/// [`CaError::UntrustedIssuer`], [`CaError::BadSignature`], [`CaError::UnsupportedAlgorithm`]
/// or [`CaError::NotACa`].
pub fn check_user_certificate(
    der: &[u8],
    trusted_ca_ders: &[Vec<u8>],
    at: DateTime<Utc>,
) -> Result<CertificateInfo, CaError> {
    let cert = parse(der)?;
    let info = info(&cert, der)?;
    check_time(&info.subject, false, at, info.not_before, info.not_after)?;
    match cert.key_usage().map_err(parse_err)?.map(|ku| ku.value) {
        None => return Err(CaError::KeyUsage("extension is missing")),
        Some(ku) if !ku.digital_signature() && !ku.non_repudiation() => {
            return Err(CaError::KeyUsage(
                "has no digitalSignature or nonRepudiation",
            ));
        }
        Some(_) => {}
    }
    if ca_flag(&cert)? {
        return Err(CaError::IsCaCertificate(info.subject));
    }
    let cas: Vec<_> = trusted_ca_ders
        .iter()
        .map(|d| parse(d))
        .collect::<Result<_, _>>()?;
    let issuer = cert.issuer().as_raw();
    // Several trusted CAs may share a name (key rollover): one that verifies suffices.
    let mut found = Err(CaError::UntrustedIssuer(info.issuer.clone()));
    for ca in cas.iter().filter(|ca| ca.subject().as_raw() == issuer) {
        found = verify(&cert, ca).map(|()| ca);
        if found.is_ok() {
            break;
        }
    }
    let ca = found?;
    require_ca(ca)?;
    let (nb, na) = validity(ca)?;
    check_time(&ca.subject().to_string(), true, at, nb, na)?;
    Ok(info)
}

/// Checks a root CA certificate: `cA:true` (and keyCertSign if keyUsage is present),
/// self-issued, and its signature verifies with its own key, of any algorithm x509-parser
/// verifies. Validity is reported, not checked.
///
/// # Errors
/// [`CaError::Parse`], [`CaError::NotACa`], [`CaError::NotSelfSigned`],
/// [`CaError::BadSignature`] or [`CaError::UnsupportedAlgorithm`].
pub fn check_ca_certificate(der: &[u8]) -> Result<CaInfo, CaError> {
    let cert = parse(der)?;
    require_ca(&cert)?;
    if cert.subject().as_raw() != cert.issuer().as_raw() {
        return Err(CaError::NotSelfSigned(cert.subject().to_string()));
    }
    verify(&cert, &cert)?;
    let (not_before, not_after) = validity(&cert)?;
    let (fingerprint_sha256, subject) = (fingerprint(der), cert.subject().to_string());
    Ok(CaInfo {
        fingerprint_sha256,
        subject,
        not_before,
        not_after,
    })
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, CaError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(parse_err("trailing bytes after the certificate")),
        Err(e) => Err(parse_err(e)),
    }
}

fn info(cert: &X509Certificate<'_>, der: &[u8]) -> Result<CertificateInfo, CaError> {
    let spki = cert.public_key();
    let public_key = match <[u8; 32]>::try_from(spki.subject_public_key.data.as_ref()) {
        Ok(key) if spki.algorithm.algorithm == OID_SIG_ED25519 => key,
        _ => return Err(CaError::NotEd25519(spki.algorithm.algorithm.to_id_string())),
    };
    let (not_before, not_after) = validity(cert)?;
    Ok(CertificateInfo {
        fingerprint_sha256: fingerprint(der),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        user_id: first_str(cert.subject(), &OID_USERID),
        printed_name: first_str(cert.subject(), &OID_X509_COMMON_NAME),
        public_key,
        not_before,
        not_after,
        serial_hex: hex::encode(cert.raw_serial()),
    })
}

fn first_str(name: &X509Name<'_>, oid: &Oid<'_>) -> Option<String> {
    let value = name.iter_by_oid(oid).find_map(|a| a.as_str().ok());
    value.map(Into::into)
}

fn check_time(
    subject: &str,
    ca: bool,
    at: DateTime<Utc>,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
) -> Result<(), CaError> {
    if at < not_before || at > not_after {
        let subject = subject.to_string();
        return Err(CaError::NotValidAt {
            subject,
            ca,
            at,
            not_before,
            not_after,
        });
    }
    Ok(())
}

fn require_ca(cert: &X509Certificate<'_>) -> Result<(), CaError> {
    let not_ca = |reason| Err(CaError::NotACa(cert.subject().to_string(), reason));
    if !ca_flag(cert)? {
        return not_ca("basicConstraints cA is not true");
    }
    let key_usage = cert.key_usage().map_err(parse_err)?;
    if key_usage.is_some_and(|ku| !ku.value.key_cert_sign()) {
        return not_ca("keyUsage lacks keyCertSign");
    }
    Ok(())
}

fn ca_flag(cert: &X509Certificate<'_>) -> Result<bool, CaError> {
    let constraints = cert.basic_constraints().map_err(parse_err)?;
    Ok(constraints.is_some_and(|bc| bc.value.ca))
}

fn validity(cert: &X509Certificate<'_>) -> Result<(DateTime<Utc>, DateTime<Utc>), CaError> {
    let validity = cert.validity();
    Ok((
        to_chrono(validity.not_before)?,
        to_chrono(validity.not_after)?,
    ))
}

fn verify(cert: &X509Certificate<'_>, ca: &X509Certificate<'_>) -> Result<(), CaError> {
    match cert.verify_signature(Some(ca.public_key())) {
        Ok(()) => Ok(()),
        Err(X509Error::SignatureUnsupportedAlgorithm) => Err(CaError::UnsupportedAlgorithm(
            cert.signature_algorithm.algorithm.to_id_string(),
        )),
        Err(_) => Err(CaError::BadSignature(cert.issuer().to_string())),
    }
}

/// Rebuilds a parsed name for rcgen, keeping each value's string type so it encodes identically.
fn dn_from_name(name: &X509Name<'_>) -> Result<DistinguishedName, CaError> {
    let mut dn = DistinguishedName::new();
    for attr in name.iter_attributes() {
        let oid = attr
            .attr_type()
            .iter()
            .ok_or_else(|| parse_err("huge OID"))?;
        let text = attr.as_str().map_err(parse_err)?;
        let value = match attr.attr_value().tag() {
            Tag::Utf8String => DnValue::Utf8String(text.into()),
            Tag::PrintableString => DnValue::PrintableString(text.try_into().map_err(parse_err)?),
            Tag::Ia5String => DnValue::Ia5String(text.try_into().map_err(parse_err)?),
            tag => return Err(parse_err(format!("CA name has a {tag} value"))),
        };
        dn.push(DnType::from_oid(&oid.collect::<Vec<_>>()), value);
    }
    Ok(dn)
}

fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    let rng = SystemRandom::new();
    rng.fill(&mut bytes).map_err(|_| gen_err("no randomness"))?;
    bytes[0] = (bytes[0] & 0x7f).max(1); // positive, and exactly 16 bytes once DER-encoded
    Ok(SerialNumber::from_slice(&bytes))
}

fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn to_time(t: DateTime<Utc>) -> Result<time::OffsetDateTime, CaError> {
    time::OffsetDateTime::from_unix_timestamp(t.timestamp()).map_err(gen_err)
}

fn to_chrono(t: x509_parser::time::ASN1Time) -> Result<DateTime<Utc>, CaError> {
    DateTime::from_timestamp(t.timestamp(), 0).ok_or_else(|| parse_err("time out of range"))
}

fn gen_err(e: impl fmt::Display) -> CaError {
    CaError::Generate(e.to_string())
}

fn parse_err(e: impl fmt::Display) -> CaError {
    CaError::Parse(e.to_string())
}

#[cfg(test)]
mod tests {
    fn uid(id: &str) -> crate::ledger::UserId {
        crate::ledger::UserId::parse(id).unwrap()
    }

    use super::*;
    use chrono::Duration;
    use ring::signature::{Ed25519KeyPair, KeyPair as _};
    use x509_parser::certification_request::X509CertificationRequest;

    fn ca(cn: &str) -> (CaMaterial, Ca) {
        let m = create_ca(cn, "Acme Pharma", 365).unwrap();
        let ca = Ca::load(&m.certificate_pem, &m.key_pem).unwrap();
        (m, ca)
    }

    fn user_key(seed: u8) -> [u8; 32] {
        let kp = Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap();
        kp.public_key().as_ref().try_into().unwrap()
    }

    fn issue(ca: &Ca, from_days: i64, to_days: i64) -> Vec<u8> {
        let (nb, na) = (
            Utc::now() + Duration::days(from_days),
            Utc::now() + Duration::days(to_days),
        );
        ca.issue_user_certificate(&uid("u-42"), "Ada Lovelace", &user_key(7), nb, na)
            .unwrap()
    }

    fn check(der: &[u8], ca: &Ca) -> Result<CertificateInfo, CaError> {
        check_user_certificate(der, &[ca.certificate_der().to_vec()], Utc::now())
    }

    #[test]
    fn issue_and_check_round_trip() {
        let (_, ca) = ca("Trailmark CA");
        let der = issue(&ca, -1, 30);
        let info = check(&der, &ca).unwrap();
        assert_eq!(info.user_id.as_deref(), Some("u-42"));
        assert_eq!(info.printed_name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(info.public_key, user_key(7));
        assert_eq!(info.fingerprint_sha256, hex::encode(Sha256::digest(&der)));
        assert_eq!(
            (info.serial_hex.len(), info.issuer.as_str()),
            (32, "O=Acme Pharma, CN=Trailmark CA")
        );
        assert_eq!(info.subject, "O=Acme Pharma, CN=Ada Lovelace, uid=u-42");
        assert_eq!(info, parse_certificate(&der).unwrap());
        assert!(check_ca_certificate(ca.certificate_der()).is_ok());
        assert!(matches!(
            check_ca_certificate(&der),
            Err(CaError::NotACa(..))
        ));
    }

    #[test]
    fn outside_validity_is_rejected() {
        let (_, ca) = ca("Trailmark CA");
        for der in [issue(&ca, -10, -1), issue(&ca, 1, 10)] {
            let err = check(&der, &ca).unwrap_err();
            assert!(
                matches!(err, CaError::NotValidAt { ca: false, .. }),
                "{err}"
            );
        }
        let trusted = [ca.certificate_der().to_vec()];
        let later = Utc::now() + Duration::days(400); // user cert still valid, CA expired
        let err = check_user_certificate(&issue(&ca, -1, 900), &trusted, later).unwrap_err();
        assert!(matches!(err, CaError::NotValidAt { ca: true, .. }), "{err}");
    }

    #[test]
    fn foreign_issuer_is_rejected() {
        let (_, trusted) = ca("Trailmark CA");
        let (_, other) = ca("Other CA");
        let err = check(&issue(&other, -1, 1), &trusted);
        assert!(matches!(err, Err(CaError::UntrustedIssuer(_))), "{err:?}");
        let (_, look_alike) = ca("Trailmark CA");
        let err = check(&issue(&look_alike, -1, 1), &trusted);
        assert!(matches!(err, Err(CaError::BadSignature(_))), "{err:?}");
    }

    #[test]
    fn tampered_certificate_is_rejected() {
        let (_, ca) = ca("Trailmark CA");
        let mut der = issue(&ca, -1, 1);
        let at = der.windows(12).position(|w| w == b"Ada Lovelace").unwrap();
        der[at] = b'E';
        let printed_name = parse_certificate(&der).unwrap().printed_name;
        assert_eq!(printed_name.as_deref(), Some("Eda Lovelace")); // still parses
        assert!(matches!(check(&der, &ca), Err(CaError::BadSignature(_))));
    }

    #[test]
    fn usage_and_ca_flag_are_enforced() {
        let (_, ca) = ca("Trailmark CA");
        let now = Utc::now();
        let forge = |edit: fn(&mut CertificateParams)| {
            let mut params = user_params(None, "u-42", "Ada").unwrap();
            params.not_before = to_time(now - Duration::hours(1)).unwrap();
            edit(&mut params);
            ca.sign(params, &user_key(7)).unwrap()
        };
        let der = forge(|p| p.key_usages.clear());
        assert!(matches!(check(&der, &ca), Err(CaError::KeyUsage(_))));
        let der = forge(|p| p.key_usages = vec![KeyUsagePurpose::KeyEncipherment]);
        assert!(matches!(check(&der, &ca), Err(CaError::KeyUsage(_))));
        let der = forge(|p| p.key_usages = vec![KeyUsagePurpose::ContentCommitment]);
        assert!(check(&der, &ca).is_ok(), "nonRepudiation alone suffices");
        let der = forge(|p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained));
        assert!(matches!(check(&der, &ca), Err(CaError::IsCaCertificate(_))));
        // A trusted "CA" that is no CA: an end-entity certificate with a key we hold.
        let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let fake = user_params(None, "ca", "Fake CA").unwrap();
        let der = fake.self_signed(&key).unwrap().der().to_vec();
        let fake = Ca {
            issuer: fake,
            organisation: None,
            key,
            der,
        };
        let err = check(&issue(&fake, -1, 1), &fake);
        assert!(matches!(err, Err(CaError::NotACa(..))), "{err:?}");
    }

    #[test]
    fn csr_signed_by_enterprise_p256_ca() {
        let pem = user_csr_pem(&uid("u-42"), "Ada Lovelace", &[7; 32]).unwrap();
        let block = Pem::iter_from_buffer(pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(block.label, "CERTIFICATE REQUEST");
        let (_, csr) = X509CertificationRequest::from_der(&block.contents).unwrap();
        csr.verify_signature().unwrap();
        let req = &csr.certification_request_info;
        let key = req
            .subject_pki
            .subject_public_key
            .data
            .as_ref()
            .try_into()
            .unwrap();
        assert_eq!(key, &user_key(7));
        let uid = first_str(&req.subject, &OID_USERID).unwrap();
        let cn = req
            .subject
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap();

        let m = create_ca_with(&rcgen::PKCS_ECDSA_P256_SHA256, "Corp CA", "Acme", 30).unwrap();
        let enterprise = Ca::load(&m.certificate_pem, &m.key_pem).unwrap();
        assert!(check_ca_certificate(enterprise.certificate_der()).is_ok());
        let now = Utc::now();
        let (nb, na) = (now - Duration::hours(1), now + Duration::days(1));
        let der = enterprise
            .issue_user_certificate(
                &crate::ledger::UserId::parse(&uid).unwrap(),
                cn,
                key,
                nb,
                na,
            )
            .unwrap();
        assert_eq!(
            parse(&der)
                .unwrap()
                .signature_algorithm
                .algorithm
                .to_id_string(),
            "1.2.840.10045.4.3.2"
        );
        let info = check(&der, &enterprise).unwrap();
        assert_eq!(
            (info.user_id.as_deref(), info.public_key),
            (Some("u-42"), user_key(7))
        );
        let err = parse_certificate(enterprise.certificate_der());
        assert!(matches!(err, Err(CaError::NotEd25519(_))), "{err:?}");
    }

    #[test]
    fn mismatched_key_is_rejected() {
        let (a, _) = ca("A");
        let (b, _) = ca("B");
        assert!(matches!(
            Ca::load(&a.certificate_pem, &b.key_pem),
            Err(CaError::KeyMismatch)
        ));
    }

    #[test]
    fn debug_hides_key_and_pem_splits() {
        let (a, _) = ca("A");
        let secret = a.key_pem.lines().nth(1).unwrap();
        assert!(!format!("{a:?}").contains(secret) && format!("{a:?}").contains("elided"));
        let (b, _) = ca("B");
        let both = format!("{}{}", a.certificate_pem, b.certificate_pem);
        assert_eq!(pem_to_der(&both).unwrap().len(), 2);
        assert!(pem_to_der(&a.key_pem).is_err());
    }
}
