//! PAdES baseline B-B signatures for reports (REPORTS.md §6): the report-signing CA and
//! certificate, and the CMS SignedData that goes into a PDF `/Sig` dictionary's `/Contents`
//! (`/SubFilter /ETSI.CAdES.detached`).
//!
//! The CMS is SignedData v1, detached (`eContentType` id-data, no `eContent`), digest SHA-256,
//! signed with ECDSA P-256 / SHA-256 over the DER SET of three signed attributes:
//! content-type (id-data), message-digest (the SHA-256 of the PDF byte range) and
//! signing-certificate-v2 (one ESSCertIDv2 without `hashAlgorithm`, SHA-256 being its DER
//! DEFAULT). There is no signing-time attribute: in PAdES the time goes in the PDF's `/M`.
//! The certificate set carries the signing certificate and its CA.

use std::fmt;

use chrono::{DateTime, Utc};
use cms::builder::{SignedDataBuilder, SignerInfoBuilder};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::ContentInfo;
use cms::signed_data::{EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo};
use der::asn1::{OctetString, SetOfVec};
use der::oid::ObjectIdentifier;
use der::{Any, Decode, Encode, Sequence, Tagged};
use p256::ecdsa::signature::{Keypair, Signer, Verifier};
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SerialNumber,
};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::name::{GeneralName, GeneralNames};
use x509_cert::serial_number::SerialNumber as CertSerial;
use x509_cert::spki::{self, AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::x509::X509Name;

/// id-data (RFC 5652 §4).
const OID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
/// id-signedData (RFC 5652 §5.1).
const OID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
/// id-contentType signed attribute (RFC 5652 §11.1).
const OID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
/// id-messageDigest signed attribute (RFC 5652 §11.2).
const OID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
/// id-aa-signingCertificateV2 (RFC 5035 §3).
const OID_SIGNING_CERT_V2: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.47");
/// id-sha256 (RFC 5754 §2.2).
const OID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
/// ecdsa-with-SHA256 (RFC 5754 §3.3).
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
/// id-kp-documentSigning (RFC 9336) as rcgen wants it.
const EKU_DOCUMENT_SIGNING: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 3, 36];

/// Validity of the report CA in days (10 years).
const CA_VALIDITY_DAYS: i64 = 3650;
/// Default validity of the report-signing certificate in days (2 years).
const LEAF_VALIDITY_DAYS: i64 = 730;

/// What went wrong while creating keys, signing, or checking a CMS signature.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// Key or certificate generation failed.
    #[error("could not generate the report-signing keys: {0}")]
    Generate(String),
    /// The text is not exactly one PEM CERTIFICATE block.
    #[error("not a single PEM certificate: {0}")]
    Pem(String),
    /// A certificate could not be parsed or is unusable.
    #[error("unusable {what} certificate: {reason}")]
    Certificate {
        /// Which certificate ("signing", "CA", "signer (in the CMS)").
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The private key is not a PKCS#8 P-256 key.
    #[error("the signing key is not a PKCS#8 PEM P-256 private key")]
    Key,
    /// The private key does not belong to the signing certificate.
    #[error("the signing key does not match the signing certificate's public key")]
    KeyMismatch,
    /// The signing certificate was not issued by the given CA.
    #[error("the signing certificate was not issued by the report CA: {0}")]
    NotIssuedByCa(String),
    /// Building or encoding the CMS failed.
    #[error("could not build the CMS signature: {0}")]
    Build(String),
    /// The bytes are not a DER CMS ContentInfo holding SignedData.
    #[error("not a DER CMS SignedData: {0}")]
    CmsParse(String),
    /// The SignedData has no SignerInfo or more than one.
    #[error("expected exactly one SignerInfo, found {0}")]
    SignerCount(usize),
    /// The encapsulated content is not detached id-data.
    #[error("the encapsulated content is not detached id-data: {0}")]
    NotDetachedData(String),
    /// The digest algorithm is not SHA-256.
    #[error("digest algorithm is {0}, expected SHA-256 (2.16.840.1.101.3.4.2.1)")]
    DigestAlgorithm(String),
    /// The signature algorithm is not ecdsa-with-SHA256.
    #[error("signature algorithm is {0}, expected ecdsa-with-SHA256 (1.2.840.10045.4.3.2)")]
    SignatureAlgorithm(String),
    /// The SignerInfo has no signed attributes.
    #[error("the SignerInfo has no signed attributes")]
    NoSignedAttributes,
    /// A required signed attribute is absent.
    #[error("the signed attribute {0} is missing")]
    MissingAttribute(&'static str),
    /// A signed attribute occurs twice, has not exactly one value, or cannot be decoded.
    #[error("the signed attribute {name} is malformed: {reason}")]
    MalformedAttribute {
        /// The attribute's name.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The content-type signed attribute is not id-data.
    #[error("the content-type signed attribute is {0}, expected id-data (1.2.840.113549.1.7.1)")]
    ContentType(String),
    /// The message-digest signed attribute differs from the digest of the signed bytes.
    #[error(
        "the message-digest signed attribute ({found}) does not match the byte-range digest ({expected})"
    )]
    MessageDigest {
        /// The digest the caller computed (hex).
        expected: String,
        /// The digest in the CMS (hex).
        found: String,
    },
    /// The SignerInfo does not identify the signer by issuer and serial number.
    #[error(
        "the SignerInfo identifies its signer by subject key identifier; issuer and serial number expected"
    )]
    SignerIdentifier,
    /// No certificate in the certificate set matches the SignerInfo's issuer and serial.
    #[error(
        "the CMS certificate set holds no certificate with the signer's issuer and serial number"
    )]
    SignerCertificateNotFound,
    /// The signing-certificate-v2 attribute does not name the signer's certificate.
    #[error("the signing-certificate-v2 attribute does not match the signer certificate: {0}")]
    SigningCertificate(String),
    /// The ECDSA signature over the signed attributes does not verify.
    #[error(
        "the ECDSA P-256 signature over the signed attributes does not verify with the signer certificate's key"
    )]
    SignatureInvalid,
    /// The signer certificate's issuer name is not the CA's subject name.
    #[error("the signer certificate's issuer ({issuer}) is not the CA ({ca})")]
    ChainIssuer {
        /// Issuer name in the signer certificate.
        issuer: String,
        /// Subject name of the CA.
        ca: String,
    },
    /// The signer certificate's signature does not verify with the CA's key.
    #[error("the signer certificate's signature does not verify with the CA's key")]
    ChainSignature,
    /// The CA certificate is not a self-signed CA.
    #[error("the CA certificate is not a self-signed CA: {0}")]
    CaNotSelfSigned(String),
}

/// The report-signing CA and certificate with their PKCS#8 private keys, all PEM.
/// `Debug` hides the keys.
pub struct ReportKeys {
    /// The self-signed report CA certificate (`report-ca.pem`).
    pub ca_cert_pem: String,
    /// The report CA's private key, PKCS#8 PEM (`report-ca.key`, mode 0600). Keep it secret.
    pub ca_key_pem: String,
    /// The report-signing certificate issued by the CA (`report-signing.pem`).
    pub cert_pem: String,
    /// The report-signing private key, PKCS#8 PEM (`report-signing.key`, mode 0600).
    pub key_pem: String,
}

impl fmt::Debug for ReportKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReportKeys")
            .field("ca_cert_pem", &self.ca_cert_pem)
            .field("ca_key_pem", &"[secret key elided]")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[secret key elided]")
            .finish()
    }
}

/// Creates a P-256 self-signed CA "Trailmark report CA (`origin`)" (10 years, `cA:TRUE`
/// pathlen 0, keyCertSign + cRLSign) and a leaf "Trailmark report signing (`origin`)" it
/// issues (2 years, digitalSignature + nonRepudiation (contentCommitment), EKU
/// documentSigning 1.3.6.1.5.5.7.3.36, `cA:FALSE`). Both start at `now` (whole seconds) and
/// have random positive 16-byte serial numbers.
///
/// # Errors
/// [`SignError::Generate`] if `origin` is empty, randomness is unavailable or rcgen fails.
pub fn generate_report_keys(origin: &str, now: DateTime<Utc>) -> Result<ReportKeys, SignError> {
    generate_with(origin, now, LEAF_VALIDITY_DAYS)
}

fn generate_with(
    origin: &str,
    now: DateTime<Utc>,
    leaf_days: i64,
) -> Result<ReportKeys, SignError> {
    if origin.trim().is_empty() {
        return Err(SignError::Generate("the origin is empty".into()));
    }
    let gen_err = |e: rcgen::Error| SignError::Generate(e.to_string());
    let start = DateTime::from_timestamp(now.timestamp(), 0)
        .ok_or_else(|| SignError::Generate("the start time is out of range".into()))?;

    let mut ca = CertificateParams::default();
    ca.distinguished_name = common_name_dn(&format!("Trailmark report CA ({origin})"));
    set_validity(&mut ca, start, CA_VALIDITY_DAYS);
    ca.serial_number = Some(random_serial()?);
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = CertifiedIssuer::self_signed(ca, ca_key).map_err(gen_err)?;

    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = common_name_dn(&format!("Trailmark report signing ({origin})"));
    set_validity(&mut leaf, start, leaf_days);
    leaf.serial_number = Some(random_serial()?);
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::ContentCommitment,
    ];
    // NSS (pdfsig) checks a PDF signer as an e-mail signer: with an EKU extension that lacks
    // emailProtection it fails ("Certificate type not approved for application").
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::Other(EKU_DOCUMENT_SIGNING.to_vec()),
        ExtendedKeyUsagePurpose::EmailProtection,
    ];
    leaf.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(gen_err)?;

    Ok(ReportKeys {
        ca_cert_pem: issuer.pem(),
        ca_key_pem,
        cert_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    })
}

fn common_name_dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// Validity from `start` for `days` days (rcgen takes `time` types, reached via `SystemTime`).
fn set_validity(params: &mut CertificateParams, start: DateTime<Utc>, days: i64) {
    params.not_before = std::time::SystemTime::from(start).into();
    params.not_after = std::time::SystemTime::from(start + chrono::Duration::days(days)).into();
}

/// 16 random bytes, top bit clear (positive) and second bit set (no leading zero octet).
fn random_serial() -> Result<SerialNumber, SignError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| SignError::Generate(format!("no randomness for a serial number: {e}")))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// The report-signing key with its certificate and the CA that issued it, ready to sign.
/// `Debug` hides the key.
pub struct ReportSigner {
    key: SigningKey,
    cert_der: Vec<u8>,
    ca_der: Vec<u8>,
}

impl fmt::Debug for ReportSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReportSigner")
            .field("signer", &self.signer_name())
            .field("cert_sha256", &self.cert_sha256())
            .field("key", &"[secret key elided]")
            .finish()
    }
}

impl ReportSigner {
    /// The signer of a data directory, if its report keys are there.
    ///
    /// # Errors
    /// If the files exist but are unreadable or do not fit together.
    pub fn from_dir(
        dir: &crate::config::DataDir,
    ) -> Result<Option<ReportSigner>, crate::config::ConfigError> {
        let Some(files) = dir.report_key_files()? else {
            return Ok(None);
        };
        ReportSigner::from_pem(&files.cert_pem, &files.key_pem, &files.ca_pem)
            .map(Some)
            .map_err(|e| crate::config::ConfigError::Invalid {
                path: files.key_path,
                problem: e.to_string(),
            })
    }

    /// Loads the signer from PEM text: the signing certificate, its PKCS#8 P-256 private key
    /// and the CA certificate. Checks that the key matches the certificate and that the
    /// certificate is issued by the CA (issuer name and signature).
    ///
    /// # Errors
    /// [`SignError::Pem`], [`SignError::Certificate`] or [`SignError::Key`] for unreadable
    /// input, [`SignError::KeyMismatch`] if the key is not the certificate's,
    /// [`SignError::NotIssuedByCa`] if the CA did not issue the certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str, ca_cert_pem: &str) -> Result<Self, SignError> {
        let cert_der = cert_der_from_pem(cert_pem)?;
        let ca_der = cert_der_from_pem(ca_cert_pem)?;
        // The key parser's error is not echoed: it could quote key material.
        let key = SigningKey::from_pkcs8_pem(key_pem).map_err(|_| SignError::Key)?;
        let cert = parse_x509(&cert_der, "signing")?;
        let ca = parse_x509(&ca_der, "CA")?;
        let public = key.verifying_key().to_encoded_point(false);
        if public.as_bytes() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(SignError::KeyMismatch);
        }
        if cert.issuer().as_raw() != ca.subject().as_raw() {
            return Err(SignError::NotIssuedByCa(format!(
                "its issuer is {}, the CA is {}",
                cert.issuer(),
                ca.subject()
            )));
        }
        cert.verify_signature(Some(ca.public_key())).map_err(|_| {
            SignError::NotIssuedByCa("its signature does not verify with the CA's key".into())
        })?;
        // Both go into the CMS certificate set re-encoded by x509-cert: they must come out
        // byte for byte as they went in, or the signing-certificate-v2 hash would not match.
        reencodes(&cert_der, "signing")?;
        reencodes(&ca_der, "CA")?;
        Ok(ReportSigner {
            key,
            cert_der,
            ca_der,
        })
    }

    /// Subject common name of the signing certificate.
    pub fn signer_name(&self) -> String {
        parse_x509(&self.cert_der, "signing")
            .map(|c| common_name(c.subject()))
            .unwrap_or_default()
    }

    /// SHA-256 (lowercase hex) of the signing certificate DER.
    pub fn cert_sha256(&self) -> String {
        hex::encode(Sha256::digest(&self.cert_der))
    }

    /// Returns the DER CMS ContentInfo(SignedData), detached, over `digest`, the SHA-256 of
    /// the PDF byte range. Goes into the `/Contents` of the `/Sig` dictionary.
    ///
    /// # Errors
    /// [`SignError::Build`] if the CMS cannot be built or encoded.
    pub fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, SignError> {
        let build = |e: &dyn fmt::Display| SignError::Build(e.to_string());
        let cert = Certificate::from_der(&self.cert_der).map_err(|e| build(&e))?;
        let ca = Certificate::from_der(&self.ca_der).map_err(|e| build(&e))?;
        let sha256 = AlgorithmIdentifierOwned {
            oid: OID_SHA256,
            parameters: None,
        };
        let eci = EncapsulatedContentInfo {
            econtent_type: OID_DATA,
            econtent: None,
        };
        let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: cert.tbs_certificate.issuer.clone(),
            serial_number: cert.tbs_certificate.serial_number.clone(),
        });
        let ess = signing_certificate_v2(&cert, &self.cert_der).map_err(|e| build(&e))?;
        // The builder adds message-digest and content-type itself (adding content-type here
        // would make 0.2.3 fail); no signing-time in PAdES B-B.
        let cms_signer = CmsSigner(&self.key);
        let mut signer_info =
            SignerInfoBuilder::new(&cms_signer, sid, sha256.clone(), &eci, Some(&digest[..]))
                .map_err(|e| build(&e))?;
        signer_info
            .add_signed_attribute(ess)
            .map_err(|e| build(&e))?;
        let content_info = SignedDataBuilder::new(&eci)
            .add_digest_algorithm(sha256)
            .map_err(|e| build(&e))?
            .add_certificate(CertificateChoices::Certificate(cert))
            .map_err(|e| build(&e))?
            .add_certificate(CertificateChoices::Certificate(ca))
            .map_err(|e| build(&e))?
            .add_signer_info::<CmsSigner<'_>, DerSignature>(signer_info)
            .map_err(|e| build(&e))?
            .build()
            .map_err(|e| build(&e))?;
        content_info.to_der().map_err(|e| build(&e))
    }
}

/// The report key as the cms builder wants its signer. It names its algorithm
/// (ecdsa-with-SHA256, no parameters, RFC 5758) itself: `SigningKey<NistP256>` only does so
/// when sha2 0.10's optional `oid` feature happens to be enabled somewhere in the build.
struct CmsSigner<'a>(&'a SigningKey);

impl Keypair for CmsSigner<'_> {
    type VerifyingKey = VerifyingKey;

    fn verifying_key(&self) -> VerifyingKey {
        *self.0.verifying_key()
    }
}

impl DynSignatureAlgorithmIdentifier for CmsSigner<'_> {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        Ok(AlgorithmIdentifierOwned {
            oid: OID_ECDSA_SHA256,
            parameters: None,
        })
    }
}

impl Signer<DerSignature> for CmsSigner<'_> {
    /// ECDSA P-256 over SHA-256 of `msg` (the DER SET of signed attributes), DER-encoded.
    fn try_sign(&self, msg: &[u8]) -> Result<DerSignature, p256::ecdsa::Error> {
        let signature: Signature = self.0.try_sign(msg)?;
        Ok(signature.to_der())
    }
}

/// `SigningCertificateV2 ::= SEQUENCE { certs SEQUENCE OF ESSCertIDv2, policies ... OPTIONAL }`
/// (RFC 5035 §3).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct SigningCertificateV2 {
    certs: Vec<EssCertIdV2>,
    #[asn1(optional = "true")]
    policies: Option<Vec<Any>>,
}

/// `ESSCertIDv2 ::= SEQUENCE { hashAlgorithm DEFAULT id-sha256, certHash OCTET STRING,
/// issuerSerial IssuerSerial OPTIONAL }`. We write no `hashAlgorithm` (DER leaves out a
/// DEFAULT value) and accept one on reading only if it is SHA-256.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct EssCertIdV2 {
    #[asn1(optional = "true")]
    hash_algorithm: Option<AlgorithmIdentifierOwned>,
    cert_hash: OctetString,
    #[asn1(optional = "true")]
    issuer_serial: Option<IssuerSerial>,
}

/// `IssuerSerial ::= SEQUENCE { issuer GeneralNames, serialNumber CertificateSerialNumber }`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct IssuerSerial {
    issuer: GeneralNames,
    serial: CertSerial,
}

fn signing_certificate_v2(cert: &Certificate, cert_der: &[u8]) -> der::Result<Attribute> {
    let value = SigningCertificateV2 {
        certs: vec![EssCertIdV2 {
            hash_algorithm: None,
            cert_hash: OctetString::new(Sha256::digest(cert_der).to_vec())?,
            issuer_serial: Some(IssuerSerial {
                issuer: vec![GeneralName::DirectoryName(
                    cert.tbs_certificate.issuer.clone(),
                )],
                serial: cert.tbs_certificate.serial_number.clone(),
            }),
        }],
        policies: None,
    };
    let mut values = SetOfVec::new();
    values.insert(Any::encode_from(&value)?)?;
    Ok(Attribute {
        oid: OID_SIGNING_CERT_V2,
        values,
    })
}

/// What [`verify_cms`] found in a valid signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CmsCheck {
    /// Subject common name of the signer certificate.
    pub signer_name: String,
    /// SHA-256 (lowercase hex) of the signer certificate DER.
    pub cert_sha256: String,
    /// Issuer common name of the signer certificate (the full DN if it has no CN).
    pub issuer_name: String,
    /// The CA's subject common name, when a CA was given and the chain checked.
    pub chained_to: Option<String>,
}

/// Checks a PAdES CMS signature `cms_der` against `digest`, the SHA-256 of the PDF byte range.
///
/// Checks: a ContentInfo holding SignedData with detached id-data; exactly one SignerInfo,
/// identified by issuer and serial number; digest algorithm SHA-256; the content-type signed
/// attribute is id-data; the message-digest signed attribute equals `digest`; the signer
/// certificate is in the certificate set; signing-certificate-v2 is present and its first
/// ESSCertIDv2 hash is the SHA-256 of that certificate (and its issuerSerial, if any, names
/// it); the ECDSA P-256 / SHA-256 signature over the DER SET of signed attributes verifies
/// with the certificate's key. With `ca_cert_der`, also: the signer certificate's issuer is
/// the CA, its signature verifies with the CA's key, and the CA is a self-signed CA.
///
/// # Errors
/// A distinct [`SignError`] variant for each check that fails, in the order above.
pub fn verify_cms(
    cms_der: &[u8],
    digest: &[u8; 32],
    ca_cert_der: Option<&[u8]>,
) -> Result<CmsCheck, SignError> {
    let parse = |e: der::Error| SignError::CmsParse(e.to_string());
    let content_info = ContentInfo::from_der(cms_der).map_err(parse)?;
    if content_info.content_type != OID_SIGNED_DATA {
        return Err(SignError::CmsParse(format!(
            "content type is {}, not signedData",
            content_info.content_type
        )));
    }
    let signed_data: SignedData = content_info.content.decode_as().map_err(parse)?;
    let eci = &signed_data.encap_content_info;
    if eci.econtent_type != OID_DATA {
        return Err(SignError::NotDetachedData(format!(
            "eContentType is {}",
            eci.econtent_type
        )));
    }
    if eci.econtent.is_some() {
        return Err(SignError::NotDetachedData("eContent is present".into()));
    }
    let signers = signed_data.signer_infos.0.as_slice();
    let [signer]: &[SignerInfo; 1] = signers
        .try_into()
        .map_err(|_| SignError::SignerCount(signers.len()))?;
    check_sha256(&signer.digest_alg)?;
    let attrs = signer
        .signed_attrs
        .as_ref()
        .ok_or(SignError::NoSignedAttributes)?;

    let content_type = single_attribute(attrs, OID_CONTENT_TYPE, "content-type")?;
    let content_type: ObjectIdentifier = content_type
        .decode_as()
        .map_err(|e| malformed("content-type", e))?;
    if content_type != OID_DATA {
        return Err(SignError::ContentType(content_type.to_string()));
    }
    let message_digest = single_attribute(attrs, OID_MESSAGE_DIGEST, "message-digest")?;
    let message_digest: OctetString = message_digest
        .decode_as()
        .map_err(|e| malformed("message-digest", e))?;
    if message_digest.as_bytes() != digest {
        return Err(SignError::MessageDigest {
            expected: hex::encode(digest),
            found: hex::encode(message_digest.as_bytes()),
        });
    }

    let SignerIdentifier::IssuerAndSerialNumber(sid) = &signer.sid else {
        return Err(SignError::SignerIdentifier);
    };
    let cert = signer_certificate(&signed_data, sid)?;
    let cert_der = cert.to_der().map_err(parse)?;
    let cert_hash = Sha256::digest(&cert_der);

    check_signing_certificate(attrs, cert, &cert_hash)?;

    if signer.signature_algorithm.oid != OID_ECDSA_SHA256 {
        return Err(SignError::SignatureAlgorithm(
            signer.signature_algorithm.oid.to_string(),
        ));
    }
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(parse)?;
    let key = VerifyingKey::from_public_key_der(&spki).map_err(|e| SignError::Certificate {
        what: "signer (in the CMS)",
        reason: format!("its key is not a P-256 public key ({e})"),
    })?;
    let signed_attrs_der = attrs.to_der().map_err(parse)?;
    let signature = Signature::from_der(signer.signature.as_bytes())
        .map_err(|_| SignError::SignatureInvalid)?;
    key.verify(&signed_attrs_der, &signature)
        .map_err(|_| SignError::SignatureInvalid)?;

    let x509 = parse_x509(&cert_der, "signer (in the CMS)")?;
    let chained_to = match ca_cert_der {
        None => None,
        Some(ca_der) => Some(check_chain(&x509, ca_der)?),
    };
    Ok(CmsCheck {
        signer_name: common_name(x509.subject()),
        cert_sha256: hex::encode(cert_hash),
        issuer_name: common_name(x509.issuer()),
        chained_to,
    })
}

/// The certificate in the set that has the SignerInfo's issuer and serial number.
fn signer_certificate<'a>(
    signed_data: &'a SignedData,
    sid: &IssuerAndSerialNumber,
) -> Result<&'a Certificate, SignError> {
    signed_data
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .find_map(|choice| match choice {
            CertificateChoices::Certificate(c)
                if c.tbs_certificate.issuer == sid.issuer
                    && c.tbs_certificate.serial_number == sid.serial_number =>
            {
                Some(c)
            }
            _ => None,
        })
        .ok_or(SignError::SignerCertificateNotFound)
}

/// The signing-certificate-v2 attribute names `cert`, whose DER hashes to `cert_hash`.
fn check_signing_certificate(
    attrs: &SetOfVec<Attribute>,
    cert: &Certificate,
    cert_hash: &[u8],
) -> Result<(), SignError> {
    let ess = single_attribute(attrs, OID_SIGNING_CERT_V2, "signing-certificate-v2")?;
    let ess: SigningCertificateV2 = ess
        .decode_as()
        .map_err(|e| malformed("signing-certificate-v2", e))?;
    let first = ess
        .certs
        .first()
        .ok_or_else(|| SignError::SigningCertificate("it lists no certificate".into()))?;
    if let Some(alg) = &first.hash_algorithm {
        check_sha256(alg).map_err(|_| {
            SignError::SigningCertificate(format!("its hash algorithm is {}, not SHA-256", alg.oid))
        })?;
    }
    if first.cert_hash.as_bytes() != cert_hash {
        return Err(SignError::SigningCertificate(format!(
            "it names certificate hash {}, the signer certificate's is {}",
            hex::encode(first.cert_hash.as_bytes()),
            hex::encode(cert_hash)
        )));
    }
    if let Some(is) = &first.issuer_serial {
        let names_issuer = is.issuer.iter().any(|n| {
            matches!(n, GeneralName::DirectoryName(name) if *name == cert.tbs_certificate.issuer)
        });
        if !names_issuer || is.serial != cert.tbs_certificate.serial_number {
            return Err(SignError::SigningCertificate(
                "its issuerSerial does not name the signer certificate".into(),
            ));
        }
    }

    Ok(())
}

/// The signer certificate is issued by the CA, which is a self-signed CA. Returns the CA's CN.
fn check_chain(cert: &X509Certificate<'_>, ca_der: &[u8]) -> Result<String, SignError> {
    let ca = parse_x509(ca_der, "CA")?;
    if cert.issuer().as_raw() != ca.subject().as_raw() {
        return Err(SignError::ChainIssuer {
            issuer: cert.issuer().to_string(),
            ca: ca.subject().to_string(),
        });
    }
    cert.verify_signature(Some(ca.public_key()))
        .map_err(|_| SignError::ChainSignature)?;
    let is_ca = ca
        .extensions()
        .iter()
        .any(|e| matches!(e.parsed_extension(), ParsedExtension::BasicConstraints(bc) if bc.ca));
    if !is_ca {
        return Err(SignError::CaNotSelfSigned(
            "its basicConstraints do not say cA:TRUE".into(),
        ));
    }
    if ca.issuer().as_raw() != ca.subject().as_raw() {
        return Err(SignError::CaNotSelfSigned(
            "its issuer is not its subject".into(),
        ));
    }
    ca.verify_signature(None).map_err(|_| {
        SignError::CaNotSelfSigned("its signature does not verify with its own key".into())
    })?;
    Ok(common_name(ca.subject()))
}

fn check_sha256(alg: &AlgorithmIdentifierOwned) -> Result<(), SignError> {
    // RFC 5754 §2: parameters absent (preferred) or NULL.
    let null_or_absent = match &alg.parameters {
        None => true,
        Some(p) => p.tag() == der::Tag::Null && p.value().is_empty(),
    };
    if alg.oid != OID_SHA256 || !null_or_absent {
        return Err(SignError::DigestAlgorithm(alg.oid.to_string()));
    }
    Ok(())
}

/// The single value of the attribute `oid`, which must occur exactly once.
fn single_attribute<'a>(
    attrs: &'a SetOfVec<Attribute>,
    oid: ObjectIdentifier,
    name: &'static str,
) -> Result<&'a Any, SignError> {
    let mut found = attrs.iter().filter(|a| a.oid == oid);
    let attr = found.next().ok_or(SignError::MissingAttribute(name))?;
    if found.next().is_some() {
        return Err(malformed(name, "it occurs more than once"));
    }
    match attr.values.as_slice() {
        [value] => Ok(value),
        values => Err(malformed(
            name,
            format!("it has {} values, not one", values.len()),
        )),
    }
}

fn malformed(name: &'static str, reason: impl fmt::Display) -> SignError {
    SignError::MalformedAttribute {
        name,
        reason: reason.to_string(),
    }
}

/// PEM -> DER for text holding exactly one `CERTIFICATE` block.
///
/// # Errors
/// [`SignError::Pem`] if there is no block, more than one, another label, or bad base64.
pub fn cert_der_from_pem(pem: &str) -> Result<Vec<u8>, SignError> {
    let mut blocks = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        blocks.push(block.map_err(|e| SignError::Pem(e.to_string()))?);
    }
    match blocks.as_slice() {
        [block] if block.label == "CERTIFICATE" => Ok(block.contents.clone()),
        [block] => Err(SignError::Pem(format!(
            "the block is {}, not CERTIFICATE",
            block.label
        ))),
        [] => Err(SignError::Pem("no PEM block found".into())),
        more => Err(SignError::Pem(format!(
            "{} PEM blocks, expected one",
            more.len()
        ))),
    }
}

fn parse_x509<'a>(der: &'a [u8], what: &'static str) -> Result<X509Certificate<'a>, SignError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(SignError::Certificate {
            what,
            reason: "trailing bytes after the certificate".into(),
        }),
        Err(e) => Err(SignError::Certificate {
            what,
            reason: e.to_string(),
        }),
    }
}

fn reencodes(der: &[u8], what: &'static str) -> Result<(), SignError> {
    let unusable = |reason: String| SignError::Certificate { what, reason };
    let cert = Certificate::from_der(der).map_err(|e| unusable(e.to_string()))?;
    if cert.to_der().map_err(|e| unusable(e.to_string()))? != der {
        return Err(unusable("it does not re-encode to the same DER".into()));
    }
    Ok(())
}

/// The first common name in `name`, else the whole name as text.
fn common_name(name: &X509Name<'_>) -> String {
    name.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map_or_else(|| name.to_string(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ReportKeys {
        generate_report_keys("test.example", Utc::now()).unwrap()
    }

    fn signer(k: &ReportKeys) -> ReportSigner {
        ReportSigner::from_pem(&k.cert_pem, &k.key_pem, &k.ca_cert_pem).unwrap()
    }

    #[test]
    fn sign_then_verify_round_trips_with_and_without_ca() {
        let k = keys();
        let s = signer(&k);
        let digest: [u8; 32] = Sha256::digest(b"some pdf bytes").into();
        let cms = s.sign_digest(&digest).unwrap();
        let check = verify_cms(&cms, &digest, None).unwrap();
        assert_eq!(check.signer_name, "Trailmark report signing (test.example)");
        assert_eq!(check.signer_name, s.signer_name());
        assert_eq!(check.cert_sha256, s.cert_sha256());
        assert_eq!(check.issuer_name, "Trailmark report CA (test.example)");
        assert_eq!(check.chained_to, None);
        let ca = cert_der_from_pem(&k.ca_cert_pem).unwrap();
        let check = verify_cms(&cms, &digest, Some(&ca)).unwrap();
        assert_eq!(
            check.chained_to.as_deref(),
            Some("Trailmark report CA (test.example)")
        );
    }

    #[test]
    fn cms_has_the_pades_shape() {
        let k = keys();
        let digest = [7u8; 32];
        let cms = signer(&k).sign_digest(&digest).unwrap();
        let ci = ContentInfo::from_der(&cms).unwrap();
        let sd: SignedData = ci.content.decode_as().unwrap();
        assert_eq!(sd.version, cms::content_info::CmsVersion::V1);
        assert_eq!(sd.certificates.as_ref().unwrap().0.len(), 2);
        let si = &sd.signer_infos.0.as_slice()[0];
        let attrs = si.signed_attrs.as_ref().unwrap();
        let mut oids: Vec<String> = attrs.iter().map(|a| a.oid.to_string()).collect();
        oids.sort();
        assert_eq!(
            oids,
            [
                "1.2.840.113549.1.9.16.2.47",
                "1.2.840.113549.1.9.3",
                "1.2.840.113549.1.9.4"
            ]
        );
        // ESSCertIDv2 without hashAlgorithm: SEQUENCE { SEQUENCE OF { SEQUENCE { OCTET STRING ...
        let ess = attrs.iter().find(|a| a.oid == OID_SIGNING_CERT_V2).unwrap();
        let value = ess.values.get(0).unwrap().to_der().unwrap();
        let inner = &value[2..];
        assert_eq!(inner[0], 0x30);
        assert_eq!(inner[2], 0x30);
        assert_eq!(inner[4], 0x04, "certHash must come first: no hashAlgorithm");
    }

    #[test]
    fn a_different_digest_fails_with_message_digest() {
        let k = keys();
        let cms = signer(&k).sign_digest(&[1u8; 32]).unwrap();
        let err = verify_cms(&cms, &[2u8; 32], None).unwrap_err();
        assert!(matches!(err, SignError::MessageDigest { .. }), "{err}");
        assert!(err.to_string().contains("message-digest"));
    }

    #[test]
    fn a_flipped_signature_byte_fails() {
        let k = keys();
        let digest = [3u8; 32];
        let mut cms = signer(&k).sign_digest(&digest).unwrap();
        let ci = ContentInfo::from_der(&cms).unwrap();
        let sd: SignedData = ci.content.decode_as().unwrap();
        let sig = sd.signer_infos.0.as_slice()[0]
            .signature
            .as_bytes()
            .to_vec();
        let at = cms
            .windows(sig.len())
            .position(|w| w == sig.as_slice())
            .unwrap();
        // The last byte of s: the DER structure stays valid, the value changes.
        cms[at + sig.len() - 1] ^= 0x01;
        let err = verify_cms(&cms, &digest, None).unwrap_err();
        assert!(matches!(err, SignError::SignatureInvalid), "{err}");
    }

    #[test]
    fn a_foreign_ca_fails_the_chain_check() {
        let k = keys();
        let other = generate_report_keys("other.example", Utc::now()).unwrap();
        let digest = [4u8; 32];
        let cms = signer(&k).sign_digest(&digest).unwrap();
        let foreign = cert_der_from_pem(&other.ca_cert_pem).unwrap();
        let err = verify_cms(&cms, &digest, Some(&foreign)).unwrap_err();
        assert!(matches!(err, SignError::ChainIssuer { .. }), "{err}");

        // Same name, different key: the name matches but the signature does not.
        let twin = generate_report_keys("test.example", Utc::now()).unwrap();
        let twin_ca = cert_der_from_pem(&twin.ca_cert_pem).unwrap();
        let err = verify_cms(&cms, &digest, Some(&twin_ca)).unwrap_err();
        assert!(matches!(err, SignError::ChainSignature), "{err}");

        let err = ReportSigner::from_pem(&k.cert_pem, &k.key_pem, &twin.ca_cert_pem).unwrap_err();
        assert!(matches!(err, SignError::NotIssuedByCa(_)), "{err}");
    }

    #[test]
    fn from_pem_rejects_a_foreign_key_and_bad_pem() {
        let k = keys();
        let other = keys();
        let err = ReportSigner::from_pem(&k.cert_pem, &other.key_pem, &k.ca_cert_pem).unwrap_err();
        assert!(matches!(err, SignError::KeyMismatch), "{err}");
        let err = ReportSigner::from_pem(&k.cert_pem, "nonsense", &k.ca_cert_pem).unwrap_err();
        assert!(matches!(err, SignError::Key), "{err}");
        let two = format!("{}{}", k.cert_pem, k.ca_cert_pem);
        assert!(matches!(cert_der_from_pem(&two), Err(SignError::Pem(_))));
        assert!(matches!(
            cert_der_from_pem(&k.key_pem),
            Err(SignError::Pem(_))
        ));
        assert!(matches!(cert_der_from_pem(""), Err(SignError::Pem(_))));
        assert!(!format!("{k:?}").contains("PRIVATE"));
    }

    #[test]
    fn generated_certificates_carry_the_profile() {
        let now = DateTime::parse_from_rfc3339("2026-11-01T10:00:00.5Z")
            .unwrap()
            .to_utc();
        let k = generate_report_keys("lab.example", now).unwrap();
        let ca_der = cert_der_from_pem(&k.ca_cert_pem).unwrap();
        let leaf_der = cert_der_from_pem(&k.cert_pem).unwrap();
        let ca = parse_x509(&ca_der, "CA").unwrap();
        let leaf = parse_x509(&leaf_der, "signing").unwrap();

        assert_eq!(
            common_name(ca.subject()),
            "Trailmark report CA (lab.example)"
        );
        assert_eq!(
            common_name(leaf.subject()),
            "Trailmark report signing (lab.example)"
        );
        ca.verify_signature(None).unwrap();
        leaf.verify_signature(Some(ca.public_key())).unwrap();
        for c in [&ca, &leaf] {
            assert_eq!(
                c.signature_algorithm.algorithm.to_id_string(),
                "1.2.840.10045.4.3.2"
            );
            assert!(
                c.tbs_certificate.raw_serial()[0] & 0x80 == 0,
                "serial must be positive"
            );
            assert_eq!(c.validity().not_before.timestamp(), 1_793_527_200);
        }
        assert_ne!(
            ca.tbs_certificate.raw_serial(),
            leaf.tbs_certificate.raw_serial()
        );
        let days = |c: &X509Certificate<'_>| {
            (c.validity().not_after.timestamp() - c.validity().not_before.timestamp()) / 86_400
        };
        assert_eq!(days(&ca), 3650);
        assert_eq!(days(&leaf), 730);

        let bc = ca.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        let ku = ca.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());

        let bc = leaf.basic_constraints().unwrap().unwrap().value;
        assert!(!bc.ca);
        let ku = leaf.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.non_repudiation() && !ku.key_cert_sign());
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        let other: Vec<String> = eku.other.iter().map(|o| o.to_id_string()).collect();
        assert_eq!(other, ["1.3.6.1.5.5.7.3.36"]);
        assert!(
            eku.email_protection,
            "NSS wants emailProtection on a PDF signer"
        );
        assert!(!eku.any && !eku.server_auth && !eku.client_auth && !eku.code_signing);
        let has_aki = leaf.extensions().iter().any(|e| {
            matches!(
                e.parsed_extension(),
                ParsedExtension::AuthorityKeyIdentifier(_)
            )
        });
        assert!(has_aki, "the leaf names its CA's key");
    }
}
