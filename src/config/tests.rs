//! The configuration's tests: defaults, every problem at once, secrets, pass-through rules.

use super::*;

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn minimal() -> Vec<(String, String)> {
    vars(&[(MPARTICLE_API_KEY, "key"), (MPARTICLE_API_SECRET, "s3cr3t")])
}

#[test]
fn defaults_follow_the_interface() {
    let config = Config::from_vars(minimal()).unwrap();
    assert_eq!(config.mparticle.events_url, DEFAULT_API_URL);
    assert_eq!(
        config.mparticle.bulk_url,
        "https://inbound.mparticle.com/s2s/v2/bulkevents"
    );
    assert!(!config.mparticle.development);
    assert_eq!(config.mparticle.timeout, Duration::from_secs(10));
    assert_eq!(
        config.kafka.topics,
        ["loyalty.point-add", "loyalty.reward-claim"]
    );
    assert_eq!(config.retry.max_attempts, 5);
    assert_eq!(
        config.retry.backoff,
        [10, 30, 120, 600].map(Duration::from_secs)
    );
    assert_eq!(config.unmapped_action, UnmappedAction::Skip);
    assert_eq!(config.admin_addr.to_string(), "0.0.0.0:9090");
}

#[test]
fn a_static_member_id_is_read_and_checked() {
    let mut pairs = minimal();
    pairs.extend(vars(&[
        (KAFKA_GROUP_ID, "fwd"),
        (KAFKA_GROUP_INSTANCE_ID, "mparticle-forwarder-7d9f-x2k"),
    ]));
    let kafka = Config::from_vars(pairs).unwrap().kafka;
    assert_eq!(
        kafka.group_instance_id.as_deref(),
        Some("mparticle-forwarder-7d9f-x2k")
    );
    let unset = Config::from_vars(minimal()).unwrap().kafka;
    assert_eq!(unset.group_instance_id, None);
    let mut bad = minimal();
    bad.extend(vars(&[(KAFKA_GROUP_INSTANCE_ID, "pod one")]));
    let problems = Config::from_vars(bad).unwrap_err().to_string();
    assert!(problems.contains(KAFKA_GROUP_INSTANCE_ID), "{problems}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let problems = Config::from_vars(vars(&[
        (MPARTICLE_API_SECRET, "s3cr3t"),
        (RETRY_MAX_ATTEMPTS, "five"),
        (MPARTICLE_TIMEOUT, "soon"),
        (UNMAPPED_ACTION, "drop"),
    ]))
    .unwrap_err();
    assert_eq!(problems.0.len(), 4, "{problems}");
    let text = problems.to_string();
    for name in [
        MPARTICLE_API_KEY,
        RETRY_MAX_ATTEMPTS,
        MPARTICLE_TIMEOUT,
        UNMAPPED_ACTION,
    ] {
        assert!(text.contains(name), "{name} missing from {text}");
    }
    assert!(!text.contains("s3cr3t"));
}

#[test]
fn worker_threads_default_to_one_and_can_be_raised() {
    assert_eq!(Config::from_vars(minimal()).unwrap().worker_threads, 1);
    let mut pairs = minimal();
    pairs.extend(vars(&[(WORKER_THREADS, "4")]));
    assert_eq!(Config::from_vars(pairs).unwrap().worker_threads, 4);
    let mut pairs = minimal();
    pairs.extend(vars(&[(WORKER_THREADS, "0")]));
    let problems = Config::from_vars(pairs).unwrap_err();
    assert!(problems.0[0].contains(WORKER_THREADS), "{problems}");
}

#[test]
fn secrets_print_as_stars() {
    let config = Config::from_vars(minimal()).unwrap();
    let shown = format!("{config:?}");
    assert!(shown.contains("****"));
    assert!(!shown.contains("s3cr3t"));
}

#[test]
fn last_backoff_value_repeats() {
    let mut pairs = minimal();
    pairs.extend(vars(&[(RETRY_BACKOFF, "1s, 2s")]));
    let config = Config::from_vars(pairs).unwrap();
    assert_eq!(config.retry.backoff_before(2), Duration::from_secs(1));
    assert_eq!(config.retry.backoff_before(3), Duration::from_secs(2));
    assert_eq!(config.retry.backoff_before(5), Duration::from_secs(2));
}

#[test]
fn pass_through_properties_cannot_weaken_the_guarantee() {
    let mut pairs = minimal();
    pairs.extend(vars(&[
        ("KAFKA_PROPERTY_FETCH_MAX_BYTES", "1048576"),
        ("KAFKA_PROPERTY_ENABLE_AUTO_COMMIT", "false"),
    ]));
    let problems = Config::from_vars(pairs).unwrap_err();
    assert_eq!(problems.0.len(), 1);
    assert!(problems.0[0].contains("enable.auto.commit"));
}

#[test]
fn pass_through_settings_that_break_a_guarantee_are_refused_with_why() {
    for (name, value, why) in [
        ("KAFKA_PROPERTY_AUTO_COMMIT_INTERVAL_MS", "0", "no offset"),
        ("KAFKA_PROPERTY_MESSAGE_TIMEOUT_MS", "0", "forever"),
        ("KAFKA_PROPERTY_DELIVERY_TIMEOUT_MS", "0", "forever"),
        (
            "KAFKA_PROPERTY_ENABLE_SSL_CERTIFICATE_VERIFICATION",
            "False",
            "unchecked",
        ),
        (
            "KAFKA_PROPERTY_METADATA_BROKER_LIST",
            "b:9092",
            KAFKA_BOOTSTRAP_SERVERS,
        ),
        ("KAFKA_PROPERTY_GROUP_INSTANCE_ID", "pod-1", "shared"),
    ] {
        let mut pairs = minimal();
        pairs.extend(vars(&[(name, value)]));
        let problems = Config::from_vars(pairs).unwrap_err();
        assert!(
            problems.0[0].contains(name) && problems.0[0].contains(why),
            "{problems:?}"
        );
    }
    let mut pairs = minimal();
    pairs.extend(vars(&[("KAFKA_PROPERTY_AUTO_COMMIT_INTERVAL_MS", "500")]));
    assert!(
        Config::from_vars(pairs).is_ok(),
        "other values are the operator's"
    );
}

#[test]
fn credentials_among_pass_through_properties_are_secrets() {
    let mut pairs = minimal();
    pairs.extend(vars(&[
        ("KAFKA_PROPERTY_SSL_KEY_PEM", "-----BEGIN PRIVATE KEY-----"),
        (
            "KAFKA_PROPERTY_SASL_OAUTHBEARER_CONFIG",
            "principal=x secret=y",
        ),
        ("KAFKA_PROPERTY_SASL_OAUTHBEARER_CLIENT_SECRET", "s3"),
        ("KAFKA_PROPERTY_FETCH_MAX_BYTES", "1048576"),
    ]));
    let config = Config::from_vars(pairs).unwrap();
    let secret = |name: &str| {
        let (_, value) = config
            .kafka
            .properties
            .iter()
            .find(|(n, _)| n == name)
            .unwrap();
        matches!(value, KafkaPropertyValue::Secret(_))
    };
    assert!(secret("ssl.key.pem"));
    assert!(secret("sasl.oauthbearer.config"));
    assert!(secret("sasl.oauthbearer.client.secret"));
    assert!(!secret("fetch.max.bytes"));
}

#[test]
fn pass_through_property_names_are_translated() {
    let mut pairs = minimal();
    pairs.extend(vars(&[("KAFKA_PROPERTY_FETCH_MAX_BYTES", "1048576")]));
    let config = Config::from_vars(pairs).unwrap();
    let (name, value) = &config.kafka.properties[0];
    assert_eq!(name, "fetch.max.bytes");
    assert_eq!(value.expose(), "1048576");
}

#[test]
fn a_password_in_the_api_url_is_never_shown() {
    assert_eq!(
        masked_url("https://user:pa55word@proxy.example.com/s2s/v2/events"),
        "https://user:****@proxy.example.com/s2s/v2/events"
    );
    assert_eq!(
        masked_url("https://inbound.mparticle.com/s2s/v2/events"),
        "https://inbound.mparticle.com/s2s/v2/events"
    );
    let mut pairs = minimal();
    pairs.extend(vars(&[(
        MPARTICLE_API_URL,
        "https://user:pa55word@proxy.example.com/v2",
    )]));
    let problems = Config::from_vars(pairs).unwrap_err();
    assert!(!problems.0[0].contains("pa55word"), "{problems:?}");
    assert!(problems.0[0].contains("****"), "{problems:?}");
}

#[test]
fn api_url_must_end_in_events() {
    let mut pairs = minimal();
    pairs.extend(vars(&[(MPARTICLE_API_URL, "https://s2s.mparticle.com/v2")]));
    let problems = Config::from_vars(pairs).unwrap_err();
    assert!(problems.0[0].contains("/events"));
}

#[test]
fn durations_parse_with_units() {
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
    assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
    assert_eq!(parse_duration("ten"), None);
    assert_eq!(parse_duration("5 parsecs"), None);
}

#[test]
fn unknown_variables_are_ignored() {
    let mut pairs = minimal();
    pairs.extend(vars(&[
        ("KAFKA_PORT", "tcp://10.0.0.1:9092"),
        ("KAFKA_SERVICE_HOST", "x"),
    ]));
    assert!(Config::from_vars(pairs).is_ok());
}
