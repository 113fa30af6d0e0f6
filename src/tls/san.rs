//! The DNS names of a certificate's subjectAltName extension, read with a
//! minimal DER walker.
//!
//! Only used on certificates from the operator's own files, when a
//! certificate is configured without explicit names. rustls parses the same
//! certificate with webpki before it is accepted (`certs.rs`), so this walker
//! reads a structure already known to be a well-formed X.509 certificate; it
//! still checks every length and answers "no names" on anything unexpected.

/// DER encoding of the subjectAltName OID, 2.5.29.17.
const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11];
const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
/// `[3] EXPLICIT Extensions` inside TBSCertificate.
const EXTENSIONS: u8 = 0xa3;
/// `dNSName [2] IMPLICIT IA5String` inside GeneralNames.
const DNS_NAME: u8 = 0x82;

/// The dNSName entries of the leaf's subjectAltName, in certificate order.
pub(crate) fn dns_names(cert_der: &[u8]) -> Vec<String> {
    san_value(cert_der).map(general_names).unwrap_or_default()
}

/// The content of the subjectAltName extension's OCTET STRING.
fn san_value(cert_der: &[u8]) -> Option<&[u8]> {
    let (cert, _) = expect(cert_der, SEQUENCE)?;
    let (mut tbs, _) = expect(cert, SEQUENCE)?;
    while let Some((tag, value, rest)) = tlv(tbs) {
        if tag == EXTENSIONS {
            let (mut extensions, _) = expect(value, SEQUENCE)?;
            while let Some((extension, rest)) = expect(extensions, SEQUENCE) {
                if let Some(value) = extension_value(extension, SAN_OID) {
                    return Some(value);
                }
                extensions = rest;
            }
            return None;
        }
        tbs = rest;
    }
    None
}

/// `Extension ::= SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE,
/// extnValue OCTET STRING }`: the value when the id is `oid`.
fn extension_value<'a>(extension: &'a [u8], oid: &[u8]) -> Option<&'a [u8]> {
    let (id, mut rest) = expect(extension, OID)?;
    if id != oid {
        return None;
    }
    if let Some((_, after)) = expect(rest, BOOLEAN) {
        rest = after;
    }
    expect(rest, OCTET_STRING).map(|(value, _)| value)
}

fn general_names(san: &[u8]) -> Vec<String> {
    let Some((mut names, _)) = expect(san, SEQUENCE) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while let Some((tag, value, rest)) = tlv(names) {
        if tag == DNS_NAME {
            if let Ok(name) = std::str::from_utf8(value) {
                out.push(name.to_owned());
            }
        }
        names = rest;
    }
    out
}

/// The value of a TLV with tag `tag` at the front of `input`, and what follows.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match tlv(input)? {
        (found, value, rest) if found == tag => Some((value, rest)),
        _ => None,
    }
}

/// Splits one DER tag-length-value off the front of `input` (single-byte
/// tags; definite lengths of up to four length bytes).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || input.len() < count {
            return None;
        }
        let (bytes, rest) = input.split_at(count);
        input = rest;
        bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b))
    };
    (input.len() >= len).then(|| (tag, &input[..len], &input[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dns_names_in_order() {
        let names = vec!["a.example.com".to_owned(), "*.b.example.com".to_owned()];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(names.clone())
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(dns_names(cert.der()), names);
    }

    #[test]
    fn skips_ip_addresses() {
        let params = vec!["127.0.0.1".to_owned(), "c.example.com".to_owned()];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(params)
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(dns_names(cert.der()), vec!["c.example.com".to_owned()]);
    }

    #[test]
    fn garbage_and_truncation_give_no_names() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["d.example.com".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().as_ref();
        for cut in 0..der.len() {
            // Must not panic; a cut certificate may only lose names.
            assert!(dns_names(&der[..cut]).len() <= 1);
        }
        assert!(dns_names(b"\x30\x84\xff\xff\xff\xff").is_empty());
    }
}
