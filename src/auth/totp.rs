//! Checking a one-time code: pure logic, no I/O.
//!
//! A code is parsed into a [`TotpCode`] first, so malformed input is told apart from a wrong code. A
//! [`Verifier`] then compares it, in constant time, with the codes of every time step in the skew window,
//! and refuses a code whose step is not newer than the last accepted one (RFC 6238, section 5.2): an
//! accepted code, or any older code, is never accepted again.

use std::fmt;

use subtle::{ConditionallySelectable, ConstantTimeEq};
use totp_rs::{Algorithm, Secret, Totp};

pub use crate::config::TotpSettings;

/// A code as typed by the user: exactly `digits` ASCII digits, spaces removed.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpCode(String);

/// Why input is not a code at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the code must be {digits} digits")]
pub struct MalformedCode {
    pub digits: u8,
}

impl TotpCode {
    /// Accepts "123456" and "123 456"; anything that is not `digits` digits once spaces are removed is
    /// malformed. The input is bounded by the caller's request limits.
    pub fn parse(input: &str, digits: u8) -> Result<Self, MalformedCode> {
        let code: String = input.chars().filter(|c| !c.is_whitespace()).collect();
        if code.len() == usize::from(digits) && code.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(code))
        } else {
            Err(MalformedCode { digits })
        }
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The digits (also what a code sent by mail is compared as).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TotpCode {
    /// Codes never reach logs, not even through `Debug`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpCode(<redacted>)")
    }
}

/// What checking a code found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The code belongs to `step`, which is newer than any accepted before.
    Accepted { step: u64 },
    /// The code matches no step in the window.
    Wrong,
    /// The code matches a step at or before the last accepted one.
    Replayed,
}

/// Checks codes against one secret.
#[derive(Clone)]
pub struct Verifier {
    totp: Totp,
    settings: TotpSettings,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("digits", &self.settings.digits)
            .field("period", &self.settings.period)
            .field("skew", &self.settings.skew)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// `secret` is the raw key; its length and the settings were validated with the configuration.
    pub fn new(secret: Vec<u8>, settings: TotpSettings) -> Self {
        let totp = totp_rs::Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(settings.digits)
            .with_skew(u16::from(settings.skew))
            .with_step_duration(settings.period)
            .with_secret(Secret::from(secret))
            .with_issuer(Some(settings.issuer.as_str()))
            .with_account_name(settings.account.as_str())
            .build_noncompliant();
        Self { totp, settings }
    }

    pub fn settings(&self) -> &TotpSettings {
        &self.settings
    }

    /// The time step that `unix_seconds` falls in.
    pub fn step_at(&self, unix_seconds: u64) -> u64 {
        unix_seconds / self.settings.period
    }

    /// The code an authenticator app shows at `unix_seconds`.
    pub fn code_at(&self, unix_seconds: u64) -> String {
        self.totp.generate(unix_seconds).to_string()
    }

    /// Checks `code` at `unix_seconds`. Every step of the window is compared, whether or not an earlier
    /// one matched, so the time taken does not depend on the code.
    pub fn verify(&self, code: &TotpCode, unix_seconds: u64, last_accepted: Option<u64>) -> Verdict {
        let origin = self.step_at(unix_seconds);
        let skew = u64::from(self.settings.skew);
        let mut matched = 0u64;
        let mut found = subtle::Choice::from(0);
        for step in origin.saturating_sub(skew)..=origin.saturating_add(skew) {
            let expected = self.code_at(step.saturating_mul(self.settings.period));
            let hit = expected.as_bytes().ct_eq(code.as_bytes());
            matched.conditional_assign(&step, hit);
            found |= hit;
        }
        if !bool::from(found) {
            Verdict::Wrong
        } else if last_accepted.is_some_and(|last| matched <= last) {
            Verdict::Replayed
        } else {
            Verdict::Accepted { step: matched }
        }
    }

    /// The `otpauth://` URI an authenticator app reads from the QR code. It holds the secret. totp-rs
    /// writes the parameters that differ from the apps' defaults (6 digits, SHA-1, 30 s); it refuses only
    /// an account name with `:`, which the configuration already refuses.
    pub fn provisioning_uri(&self) -> Result<String, totp_rs::TotpError> {
        self.totp.to_url()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SHA-1 key of RFC 6238 appendix B.
    const RFC_KEY: &[u8] = b"12345678901234567890";

    fn verifier(digits: u8, skew: u8) -> Verifier {
        Verifier::new(
            RFC_KEY.to_vec(),
            TotpSettings {
                digits,
                period: 30,
                skew,
                issuer: "authrun".into(),
                account: "deploy".into(),
            },
        )
    }

    fn code(text: &str, digits: u8) -> TotpCode {
        TotpCode::parse(text, digits).unwrap()
    }

    #[test]
    fn matches_the_rfc_6238_test_vectors() {
        let v = verifier(8, 0);
        for (time, expected) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(v.code_at(time), expected, "at {time}");
            assert_eq!(
                v.verify(&code(expected, 8), time, None),
                Verdict::Accepted { step: time / 30 }
            );
        }
    }

    #[test]
    fn accepts_one_step_of_skew_either_way_and_no_more() {
        let v = verifier(6, 1);
        let now = 1_000_000_020;
        let step = now / 30;
        for offset in [-1i64, 0, 1] {
            let at = (now as i64 + offset * 30) as u64;
            let verdict = v.verify(&code(&v.code_at(at), 6), now, None);
            assert_eq!(verdict, Verdict::Accepted { step: at / 30 });
        }
        for offset in [-2i64, 2] {
            let at = (now as i64 + offset * 30) as u64;
            assert_eq!(v.verify(&code(&v.code_at(at), 6), now, None), Verdict::Wrong);
        }
        assert_eq!(
            v.verify(&code(&v.code_at(now), 6), now, Some(step - 1)),
            Verdict::Accepted { step }
        );
    }

    #[test]
    fn refuses_the_accepted_step_and_any_older_one() {
        let v = verifier(6, 1);
        let now = 1_000_000_020;
        let step = now / 30;
        let current = code(&v.code_at(now), 6);
        let previous = code(&v.code_at(now - 30), 6);
        assert_eq!(v.verify(&current, now, Some(step)), Verdict::Replayed);
        assert_eq!(v.verify(&previous, now, Some(step)), Verdict::Replayed);
        assert_eq!(v.verify(&previous, now, Some(step - 1)), Verdict::Replayed);
    }

    #[test]
    fn parses_spaces_away_and_rejects_anything_else() {
        assert_eq!(code("123 456", 6), code("123456", 6));
        assert_eq!(code(" 123456\n", 6), code("123456", 6));
        for bad in [
            "",
            "12345",
            "1234567",
            "12345a",
            "+12345",
            "１２３４５６",
            "12-456",
        ] {
            assert_eq!(
                TotpCode::parse(bad, 6),
                Err(MalformedCode { digits: 6 }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn debug_output_never_shows_the_code_or_the_secret() {
        let shown = format!("{:?} {:?}", code("123456", 6), verifier(6, 1));
        assert!(!shown.contains("123456"), "{shown}");
        assert!(!shown.contains("GEZDGNBV"), "{shown}");
    }

    #[test]
    fn provisioning_uri_names_issuer_account_and_parameters() {
        let uri = verifier(6, 1).provisioning_uri().unwrap();
        assert_eq!(
            uri,
            "otpauth://totp/authrun:deploy?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=authrun"
        );
        let mut settings = verifier(8, 1).settings().clone();
        settings.period = 60;
        let uri = Verifier::new(RFC_KEY.to_vec(), settings)
            .provisioning_uri()
            .unwrap();
        assert!(uri.contains("digits=8") && uri.contains("period=60"), "{uri}");
    }
}
