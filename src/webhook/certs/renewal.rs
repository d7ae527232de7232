//! The renewal decision: which certificates of the Secret must be replaced now. Pure
//! functions of the stored certificates, the settings and the time.

use jiff::Timestamp;

use super::{
    CertSettings,
    material::{
        self, CLOCK_SKEW_ALLOWANCE, ServingIssuer, StoredCerts, add, issue_serving, subtract,
    },
};

/// Changes that a check makes to the Secret. The default changes nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Renewal {
    /// Issue a new serving certificate, signed by the current CA, for this reason.
    pub serving: Option<ServingReason>,
    /// Remove `ca-previous.crt` from the bundle because it has expired.
    pub drop_previous_ca: bool,
    /// Start a CA rollover: generate a new CA and keep the current one as `ca-previous.crt`.
    pub roll_over_ca: bool,
}

impl Renewal {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Reason for re-issuing the serving certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServingReason {
    /// Less than `serving_renew_before` of its lifetime remains.
    Expiring,
    /// The configured DNS names or IP addresses differ from the certificate's.
    NamesChanged,
    /// It was signed by the previous CA, and the bundle with the new CA has been published
    /// for at least `bundle_propagation`.
    CaRolledOver,
}

/// Decides what to renew at `now`.
///
/// A CA rollover takes two steps, so that no client ever sees a certificate signed by a CA
/// it does not trust yet. First a new CA is generated and the bundle lists both CAs, while
/// the serving certificate stays signed by the old one. Once the new CA has been in the Secret
/// for `bundle_propagation`, long enough for every replica to publish the two-CA bundle, the
/// serving certificate is re-issued by the new CA. The old CA leaves the bundle when it
/// expires, and nothing it signed is still valid by then.
pub fn plan(stored: &StoredCerts, settings: &CertSettings, now: Timestamp) -> Renewal {
    let names = settings.subject_alt_names();
    let serving = &stored.serving;

    let expiring = now >= subtract(serving.not_after, settings.serving_renew_before);
    let expired = now >= serving.not_after;
    let names_changed = serving.subject_alt_names != names;
    let serving_reason = match stored.serving_issuer {
        ServingIssuer::Current if names_changed => Some(ServingReason::NamesChanged),
        ServingIssuer::Current if expiring => Some(ServingReason::Expiring),
        ServingIssuer::Current => None,
        ServingIssuer::Previous if bundle_published(stored, settings, now) => {
            Some(ServingReason::CaRolledOver)
        }
        // Issuing with the new CA now could reach clients that only trust the old bundle. An
        // expired certificate fails every handshake anyway, so it is replaced regardless.
        ServingIssuer::Previous if expired => Some(ServingReason::Expiring),
        ServingIssuer::Previous => None,
    };

    let drop_previous_ca = stored
        .previous_ca
        .as_ref()
        .is_some_and(|previous| now >= previous.not_after);

    // A rollover turns the current CA into the previous one and so drops the existing previous
    // CA. It waits while the serving certificate still depends on that previous CA.
    let still_signed_by_previous =
        stored.serving_issuer == ServingIssuer::Previous && serving_reason.is_none();
    let ca_due = now >= subtract(stored.ca.not_after, settings.ca_renew_before);
    let roll_over_ca = ca_due && !still_signed_by_previous;

    Renewal {
        serving: serving_reason,
        drop_previous_ca,
        roll_over_ca,
    }
}

/// Applies `renewal` to a copy of `stored`. The serving certificate is issued first, by the
/// CA that is current before any rollover in the same step, so a certificate renewed for its
/// age or names stays trusted by clients that have not yet seen the new bundle.
pub fn apply(
    stored: &StoredCerts,
    renewal: Renewal,
    settings: &CertSettings,
    now: Timestamp,
) -> Result<StoredCerts, rcgen::Error> {
    let mut next = stored.clone();

    if renewal.serving.is_some() {
        let (serving, serving_key) = issue_serving(
            &next.ca,
            &next.ca_key,
            &settings.subject_alt_names(),
            settings.serving_validity,
            now,
        )?;
        next.serving = serving;
        next.serving_key = serving_key;
        next.serving_issuer = ServingIssuer::Current;
    }

    if renewal.drop_previous_ca {
        next.previous_ca = None;
    }

    if renewal.roll_over_ca {
        let (ca, ca_key) = material::generate_ca(settings.ca_validity, now)?;
        next.previous_ca = Some(std::mem::replace(&mut next.ca, ca));
        next.ca_key = ca_key;
        next.serving_issuer = ServingIssuer::Previous;
    }

    Ok(next)
}

/// Returns whether the current CA has been in the Secret for `bundle_propagation`. Generated
/// CAs are backdated by [`CLOCK_SKEW_ALLOWANCE`], so their creation time is derived from
/// `notBefore`.
fn bundle_published(stored: &StoredCerts, settings: &CertSettings, now: Timestamp) -> bool {
    let created = add(stored.ca.not_before, CLOCK_SKEW_ALLOWANCE);
    now >= add(created, settings.bundle_propagation)
}
