//! `KAFKA_PROPERTY_*`, librdkafka settings passed through: which the delivery guarantee
//! forbids, which are refused with a reason, and which print as secrets.

/// Properties the delivery guarantee depends on; `KAFKA_PROPERTY_*` cannot set them.
pub const GUARANTEE_PROPERTIES: &[&str] = &[
    "enable.auto.commit",
    "enable.auto.offset.store",
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "group.id",
    "bootstrap.servers",
];

/// Pass-through settings that would silently break a guarantee, refused with the reason:
/// the property, the value refused (`None`: any value), and why.
const REFUSED_PASS_THROUGH: &[(&str, Option<&str>, &str)] = &[
    (
        "metadata.broker.list",
        None,
        "an alias of bootstrap.servers; set KAFKA_BOOTSTRAP_SERVERS",
    ),
    (
        "group.instance.id",
        None,
        "one static member id would be shared by both consumers and every replica; set \
         KAFKA_GROUP_INSTANCE_ID (the pod's name) instead",
    ),
    (
        "auto.commit.interval.ms",
        Some("0"),
        "0 turns the automatic commit off, and no offset would ever be committed",
    ),
    (
        "message.timeout.ms",
        Some("0"),
        "0 lets a retry or dead-letter write wait forever instead of failing",
    ),
    (
        "delivery.timeout.ms",
        Some("0"),
        "0 lets a retry or dead-letter write wait forever instead of failing",
    ),
    (
        "enable.ssl.certificate.verification",
        Some("false"),
        "the broker's certificate would go unchecked",
    ),
];

/// Why a pass-through setting is refused, if it is.
pub(super) fn refused_pass_through(property: &str, value: &str) -> Option<&'static str> {
    REFUSED_PASS_THROUGH
        .iter()
        .find(|(name, refused, _)| {
            *name == property && refused.is_none_or(|v| v.eq_ignore_ascii_case(value.trim()))
        })
        .map(|(_, _, why)| *why)
}

/// True for a librdkafka property whose value is a credential (a password, a key, a
/// token, a certificate's private part, a SASL configuration): it prints as `****`.
pub(super) fn is_secret_property(property: &str) -> bool {
    [
        "password",
        "secret",
        "key",
        "token",
        "pem",
        "jaas",
        "credential",
        "sasl.oauthbearer.config",
    ]
    .iter()
    .any(|word| property.contains(word))
}

pub(super) const PASS_THROUGH_PREFIX: &str = "KAFKA_PROPERTY_";
