//! The command line: exit codes, messages, `map` and `check-config`.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_mparticle-forwarder");

fn run(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn bad_configuration_exits_64_naming_every_problem_without_the_secret() {
    let out = run(
        &["run"],
        &[
            ("MPARTICLE_API_SECRET", "hunter2-very-secret"),
            ("RETRY_MAX_ATTEMPTS", "lots"),
            (
                "FIELD_ASSIGNMENTS_FILE",
                "/nonexistent/field-assignments.toml",
            ),
            // Would connect if it got that far: it must not.
            ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1"),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stderr.contains("3 problem(s)"), "{stderr}");
    assert!(stderr.contains("MPARTICLE_API_KEY is not set"), "{stderr}");
    assert!(
        stderr.contains("RETRY_MAX_ATTEMPTS is \"lots\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("FIELD_ASSIGNMENTS_FILE /nonexistent/field-assignments.toml"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2") && !stdout.contains("hunter2"));
}

#[test]
fn map_prints_the_expected_batch_for_each_sample_event() {
    for name in ["point_add", "reward_claim"] {
        let input = std::fs::read(format!("tests/data/events/{name}.json")).unwrap();
        let out = run(
            &[
                "map",
                "--field-assignments",
                "tests/data/field-assignments.toml",
            ],
            &[],
            &input,
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let expected: serde_json::Value = serde_json::from_slice(
            &std::fs::read(format!("tests/data/events/{name}.expected-batch.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(printed, expected, "{name}");
    }
}

#[test]
fn map_says_why_an_event_cannot_be_mapped() {
    let out = run(
        &["map"],
        &[(
            "FIELD_ASSIGNMENTS_FILE",
            "tests/data/field-assignments.toml",
        )],
        br#"{"id":"e1","action":"point_add","customer":{"id":"c1"}}"#,
    );
    assert_eq!(out.status.code(), Some(65));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mapping: required field antavo_points has no value at data.points"),
        "{stderr}"
    );
}

#[test]
fn check_config_shows_the_plan_with_secrets_masked() {
    let out = run(
        &["check-config"],
        &[
            ("MPARTICLE_API_KEY", "key-abc"),
            ("MPARTICLE_API_SECRET", "hunter2-very-secret"),
            ("KAFKA_SASL_PASSWORD", "kafka-pw-123"),
            (
                "FIELD_ASSIGNMENTS_FILE",
                "tests/data/field-assignments.toml",
            ),
        ],
        b"",
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("API key / secret:    **** / ****"),
        "{stdout}"
    );
    assert!(stdout.contains("sasl.password = ****"), "{stdout}");
    assert!(
        stdout.contains("event point_add: custom_event \"point_add\" (other)"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("hunter2")
            && !stdout.contains("kafka-pw-123")
            && !stdout.contains("key-abc")
    );
}

#[test]
fn check_config_reports_field_assignment_problems_with_their_lines() {
    let dir = std::env::temp_dir().join(format!("mpf-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "[identities]\ncustomer_id = \"customer.id\"\nloyalty_card = \"customer.card\"\n\n[user_attributes]\ntier = \"customer.tier\"\n\n[events.x]\ncustom_event_type = \"fun\"\n",
    )
    .unwrap();
    let out = run(
        &["check-config"],
        &[
            ("MPARTICLE_API_KEY", "k"),
            ("MPARTICLE_API_SECRET", "s"),
            ("FIELD_ASSIGNMENTS_FILE", file.to_str().unwrap()),
        ],
        b"",
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 3: identities: \"loyalty_card\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 9: events.x: custom_event_type \"fun\""),
        "{stderr}"
    );
}

#[test]
fn check_config_warns_when_the_credentials_would_cross_the_network_in_clear() {
    let check = |url: &str| {
        let out = run(
            &["check-config"],
            &[
                ("MPARTICLE_API_URL", url),
                ("MPARTICLE_API_KEY", "key-abc"),
                ("MPARTICLE_API_SECRET", "hunter2-very-secret"),
                (
                    "FIELD_ASSIGNMENTS_FILE",
                    "tests/data/field-assignments.toml",
                ),
            ],
            b"",
        );
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8_lossy(&out.stdout).contains("sent in clear")
    };
    assert!(check("http://inbound.example.com/s2s/v2/events"));
    assert!(!check("https://inbound.mparticle.com/s2s/v2/events"));
    assert!(!check("http://127.0.0.1:8080/s2s/v2/events"), "loopback");
}

#[test]
fn check_config_shows_every_account_of_the_accounts_file_masked() {
    let dir = std::env::temp_dir().join(format!("mpf-cli-accounts-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("b")).unwrap();
    std::fs::write(dir.join("b/api-key"), "file-key-b\n").unwrap();
    std::fs::write(dir.join("b/api-secret"), "file-secret-b\n").unwrap();
    let example = std::fs::read_to_string("config/accounts.example.toml")
        .unwrap()
        .replace(
            "/var/run/secrets/mparticle/brand-b",
            &dir.join("b").display().to_string(),
        );
    let file = dir.join("accounts.toml");
    std::fs::write(&file, example).unwrap();
    let env = [
        ("MPARTICLE_ACCOUNTS_FILE", file.to_str().unwrap()),
        ("BRAND_A_MPARTICLE_API_KEY", "env-key-a"),
        ("BRAND_A_MPARTICLE_API_SECRET", "env-secret-a"),
        (
            "FIELD_ASSIGNMENTS_FILE",
            "tests/data/field-assignments.toml",
        ),
    ];
    let out = run(&["check-config"], &env, b"");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "mParticle accounts (",
        "routing:             header mparticle-account, then event field data.brand, else dead-lettered (unknown_account)",
        "account brand-a",
        "account brand-b",
        "https://s2s.us2.mparticle.com/v2/bulkevents",
        "environment:         development",
        "API key / secret:    **** / ****",
    ] {
        assert!(stdout.contains(expected), "{expected:?} in\n{stdout}");
    }
    for secret in ["env-key-a", "env-secret-a", "file-key-b", "file-secret-b"] {
        assert!(!stdout.contains(secret), "{secret}");
    }
    // A missing variable is named, its account too, and the process exits 64.
    let out = run(&["check-config"], &env[..1], b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr.contains(
            "account brand-a: api_key_env names BRAND_A_MPARTICLE_API_KEY, which is not set"
        ),
        "{stderr}"
    );
}
