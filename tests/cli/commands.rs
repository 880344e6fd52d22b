//! The commands that print something and exit: `--help`, `secret`, `example-config`, `check-config`, `qr`.

use std::path::Path;

use crate::support::{DEPLOY_SCRIPT, Finished, SECRET, Workspace, authrun, run, serve_refused};

const SUBCOMMANDS: [&str; 5] = ["serve", "qr", "secret", "check-config", "example-config"];

#[test]
fn help_lists_every_command_and_says_what_authrun_does() {
    let workspace = Workspace::new();
    let out = run(authrun(workspace.path()).arg("--help"));
    assert_eq!(out.code(), 0, "{out:#?}");
    for name in SUBCOMMANDS {
        let listed = out
            .stdout
            .lines()
            .any(|line| line.split_whitespace().next() == Some(name));
        assert!(listed, "`{name}` is not listed:\n{}", out.stdout);
    }
    let text = out.stdout.to_lowercase();
    assert!(
        text.contains("script") && (text.contains("totp") || text.contains("authenticator")),
        "the help does not say what authrun does:\n{}",
        out.stdout
    );
}

#[test]
fn secret_prints_a_new_160_bit_base32_secret_each_time() {
    let workspace = Workspace::new();
    let print_secret = || {
        let out = run(authrun(workspace.path()).arg("secret"));
        assert_eq!(out.code(), 0, "{out:#?}");
        assert_eq!(out.stdout.lines().count(), 1, "{out:#?}");
        let secret = out.stdout.trim_end().to_string();
        assert!(
            !secret.is_empty()
                && secret
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c)),
            "not base32: {secret:?}"
        );
        let bytes = authrun::model::secret::decode_secret(&secret).expect("the secret decodes");
        assert_eq!(bytes.len() * 8, 160, "{secret}");
        secret
    };
    let first = print_secret();
    let second = print_secret();
    assert_ne!(first, second, "two calls printed the same secret");
}

#[test]
fn example_config_prints_the_example_which_checks_as_valid() {
    let workspace = Workspace::with_example_script();
    let out = run(authrun(workspace.path()).arg("example-config"));
    assert_eq!(out.code(), 0, "{out:#?}");
    assert_eq!(out.stdout, include_str!("../../config.example.toml"));

    let config = workspace.write("authrun.toml", &out.stdout);
    // Run from elsewhere: relative paths in the file start at the file's directory.
    let elsewhere = Workspace::new();
    let check = run(authrun(elsewhere.path())
        .args(["check-config", "--config"])
        .arg(&config));
    assert_eq!(check.code(), 0, "{check:#?}");
    assert!(check.stdout.contains("valid"), "{check:#?}");
}

/// A configuration error as the user sees it: exit code 2, and on stderr the file (or variable), the key
/// and a fix, never the secret.
fn assert_config_error(out: &Finished, origin: &Path, key: &str, secret: &str) {
    assert_eq!(out.code(), 2, "{out:#?}");
    let shown = origin.display().to_string();
    assert!(out.stderr.contains(&shown), "no `{shown}`: {out:#?}");
    assert!(out.stderr.contains(key), "no `{key}`: {out:#?}");
    assert!(out.stderr.contains("fix:"), "no fix: {out:#?}");
    assert!(
        !out.stderr.contains(secret) && !out.stdout.contains(secret),
        "the secret is shown: {out:#?}"
    );
}

fn check_config(workspace: &Workspace, config: &Path) -> Finished {
    run(authrun(workspace.path())
        .args(["check-config", "--config"])
        .arg(config))
}

#[test]
fn check_config_names_an_unknown_top_level_key() {
    let workspace = Workspace::configured(DEPLOY_SCRIPT, "");
    let config = workspace.config();
    let text = format!("colldown = 5\n{}", workspace.read("authrun.toml"));
    workspace.write("authrun.toml", &text);
    let out = check_config(&workspace, &config);
    assert_config_error(&out, &config, "colldown", SECRET);
}

#[test]
fn check_config_names_an_unknown_key_in_a_section() {
    let workspace = Workspace::configured(DEPLOY_SCRIPT, "colldown = 5");
    let config = workspace.config();
    let out = check_config(&workspace, &config);
    assert_config_error(&out, &config, "colldown", SECRET);
}

#[test]
fn check_config_names_a_missing_script() {
    let workspace = Workspace::new();
    let config = workspace.write(
        "authrun.toml",
        &format!("[script]\npath = \"nope.sh\"\n\n[totp]\nsecret = \"{SECRET}\"\n"),
    );
    let out = check_config(&workspace, &config);
    assert_config_error(&out, &config, "script.path", SECRET);
    assert!(out.stderr.contains("nope.sh"), "{out:#?}");
}

/// Two actions, `deploy` and `restart-cache`, whose scripts are `deploy.sh` and `cache`.
fn two_actions(cache: &str) -> String {
    format!(
        "[totp]\nsecret = \"{SECRET}\"\n\n[[actions]]\nid = \"deploy\"\nname = \"Deploy production\"\n\
         path = \"deploy.sh\"\n\n[[actions]]\nid = \"restart-cache\"\npath = \"{cache}\"\ncooldown_seconds = 30\n"
    )
}

#[test]
fn check_config_lists_each_action() {
    let workspace = Workspace::new();
    workspace.script("deploy.sh", DEPLOY_SCRIPT);
    workspace.script("cache.sh", DEPLOY_SCRIPT);
    let config = workspace.write("authrun.toml", &two_actions("cache.sh"));
    let out = check_config(&workspace, &config);
    assert_eq!(out.code(), 0, "{out:#?}");
    let deploy = out.stdout.find("deploy (Deploy production)");
    let cache = out.stdout.find("restart-cache (restart-cache)");
    assert!(deploy.is_some() && cache.is_some() && deploy < cache, "{out:#?}");
    assert!(out.stdout.contains("cooldown 30 s"), "{out:#?}");
}

#[test]
fn check_config_names_the_action_whose_script_is_missing_and_a_duplicate_id() {
    let workspace = Workspace::new();
    workspace.script("deploy.sh", DEPLOY_SCRIPT);
    let config = workspace.write("authrun.toml", &two_actions("nope.sh"));
    let out = check_config(&workspace, &config);
    assert_config_error(&out, &config, "actions[2].path", SECRET);
    assert!(out.stderr.contains("action `restart-cache`"), "{out:#?}");
    assert!(out.stderr.contains("nope.sh"), "{out:#?}");

    let duplicate = two_actions("deploy.sh").replace("restart-cache", "deploy");
    let config = workspace.write("authrun.toml", &duplicate);
    let out = check_config(&workspace, &config);
    assert_config_error(&out, &config, "actions[2].id", SECRET);
    assert!(
        out.stderr.contains("`deploy` is also the id of action 1"),
        "{out:#?}"
    );

    // Both forms at once: the error names both.
    let mixed = format!("[script]\npath = \"deploy.sh\"\n\n{}", two_actions("deploy.sh"));
    let config = workspace.write("authrun.toml", &mixed);
    let out = check_config(&workspace, &config);
    assert_config_error(&out, &config, "script.path", SECRET);
    assert!(out.stderr.contains("[[actions]]"), "{out:#?}");
}

#[test]
fn check_config_refuses_a_short_secret_without_showing_it() {
    let short = "JBSWY3DPEHPK3PXP";
    let workspace = Workspace::new();
    workspace.script("deploy.sh", DEPLOY_SCRIPT);
    let config = workspace.write(
        "authrun.toml",
        &format!("[script]\npath = \"deploy.sh\"\n\n[totp]\nsecret = \"{short}\"\n"),
    );
    let out = check_config(&workspace, &config);
    assert_config_error(&out, &config, "totp.secret", short);
    assert!(out.stderr.contains("80 bits"), "{out:#?}");
}

#[test]
fn check_config_names_an_environment_variable_with_a_bad_value() {
    let workspace = Workspace::configured(DEPLOY_SCRIPT, "");
    let config = workspace.config();
    let out = run(authrun(workspace.path())
        .args(["check-config", "--config"])
        .arg(&config)
        .env("AUTHRUN_SCRIPT_COOLDOWN_SECONDS", "soon"));
    assert_eq!(out.code(), 2, "{out:#?}");
    assert!(out.stderr.contains("AUTHRUN_SCRIPT_COOLDOWN_SECONDS"), "{out:#?}");
    // The refused value is not repeated: it could be a secret set in the wrong variable.
    assert!(!out.stderr.contains("soon"), "{out:#?}");
    assert!(out.stderr.contains("fix:"), "{out:#?}");
    assert!(!out.stderr.contains(SECRET), "{out:#?}");
}

#[test]
fn check_config_blames_a_bad_variable_and_not_the_file() {
    let workspace = Workspace::configured(DEPLOY_SCRIPT, "");
    let config = workspace.config();
    let out = run(authrun(workspace.path())
        .args(["check-config", "--config"])
        .arg(&config)
        .env("AUTHRUN_SCRIPT_PATH", "nope.sh"));
    assert_config_error(
        &out,
        Path::new("environment variable AUTHRUN_SCRIPT_PATH"),
        "script.path",
        SECRET,
    );
    assert!(!out.stderr.contains(&config.display().to_string()), "{out:#?}");
}

#[test]
fn check_config_refuses_a_misspelled_variable() {
    let workspace = Workspace::configured(DEPLOY_SCRIPT, "");
    let config = workspace.config();
    let out = run(authrun(workspace.path())
        .args(["check-config", "--config"])
        .arg(&config)
        .env("AUTHRUN_SCRIPT_TIMEOUT", "60"));
    assert_config_error(
        &out,
        Path::new("environment variable AUTHRUN_SCRIPT_TIMEOUT"),
        "",
        SECRET,
    );
    assert!(out.stderr.contains("[script] has no such key"), "{out:#?}");
}

#[test]
fn serve_with_a_bad_config_exits_2_and_says_why() {
    let workspace = Workspace::configured(DEPLOY_SCRIPT, "colldown = 5");
    let config = workspace.config();
    let out = serve_refused(&workspace);
    assert_config_error(&out, &config, "colldown", SECRET);
    assert!(!out.stdout.contains("authrun is serving"), "{out:#?}");
}

#[test]
fn qr_prints_the_uri_draws_the_code_and_writes_a_png() {
    let workspace = Workspace::configured(DEPLOY_SCRIPT, "");
    let out = run(authrun(workspace.path())
        .args(["qr", "--png", "out.png", "--config"])
        .arg(workspace.config()));
    assert_eq!(out.code(), 0, "{out:#?}");
    let uri = out
        .stdout
        .lines()
        .find(|line| line.starts_with("otpauth://totp/"))
        .unwrap_or_else(|| panic!("no otpauth://totp/ URI: {out:#?}"));
    assert!(uri.contains(&format!("secret={SECRET}")), "{uri}");
    assert!(uri.contains("issuer="), "{uri}");
    assert!(out.stdout.contains(['█', '▀', '▄']), "no QR code drawn: {out:#?}");

    let bytes = std::fs::read(workspace.join("out.png")).expect("out.png was written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG signature");
    let image = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .expect("out.png decodes")
        .to_rgba8();
    assert!(
        image.width() >= 200 && image.height() >= 200,
        "{}x{}",
        image.width(),
        image.height()
    );
    let (mut black, mut white) = (0usize, 0usize);
    for pixel in image.pixels() {
        match pixel.0 {
            [0, 0, 0, 255] => black += 1,
            [255, 255, 255, 255] => white += 1,
            other => panic!("a pixel is neither black nor white: {other:?}"),
        }
    }
    assert!(black > 0 && white > 0, "{black} black, {white} white pixels");
}
