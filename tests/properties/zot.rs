//! Properties of the Zot configuration of arbitrary valid specs. It is JSON with only the keys
//! Zot reads, and it contains none of the combinations Zot rejects. Its access control and
//! retention, evaluated the way Zot evaluates them, cover every tenant's repositories and nothing
//! else.
//!
//! The renderer grants no per-tenant accounts: tenants never reach the registry, only the
//! operator's push account and the gateway's read-only account do. So the tenant properties
//! are that no other user, and no tenant id used as a user name, gets any action on any
//! tenant's repository, and that retention patterns of the form `{tenant}/**` select exactly
//! their tenant's repositories, even where one tenant id is a prefix of another (`a`, `ab`).

use std::collections::BTreeSet;

use artifact_operator::{
    crd::ZotSpec,
    registry::{
        validation::{self, ObservedState},
        zot::{self, GATEWAY_USERNAME, OPERATOR_USERNAME, RenderInputs},
    },
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::corpus;

const TARGET: &str = "zot";
/// Top-level keys of Zot's configuration file that the renderer may write.
const TOP_LEVEL_KEYS: [&str; 6] = [
    "distSpecVersion",
    "storage",
    "http",
    "log",
    "extensions",
    "cluster",
];

/// A `spec.zot` and the tenants whose artifacts the registry holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ZotCase {
    spec: Value,
    /// Tenant ids; each has the repositories `{tenant}/{app}` for every app.
    tenants: Vec<String>,
    apps: Vec<String>,
}

proptest! {
    #![proptest_config(corpus::config(TARGET))]

    #[test]
    fn config_grants_only_the_operator_accounts(case in zot_case()) {
        check(&case)?;
    }
}

#[test]
fn seeds_hold_the_properties() {
    for (file, case) in corpus::seeds::<ZotCase>(TARGET) {
        check(&case).unwrap_or_else(|error| panic!("seed {file}: {error}"));
    }
}

// === Cases ===

fn zot_case() -> impl Strategy<Value = ZotCase> {
    let tenants =
        prop::collection::btree_set("[a-z]{1,3}(-[a-z0-9]{1,2})?", 1..5).prop_map(|tenants| {
            // Every case has a tenant id that extends another one.
            let mut tenants: Vec<String> = tenants.into_iter().collect();
            tenants.push(format!("{}b", tenants[0]));
            tenants.dedup();
            tenants
        });
    let apps = prop::collection::btree_set("[a-z]{1,4}", 1..3);
    (tenants, apps)
        .prop_flat_map(|(tenants, apps)| {
            let spec = spec(tenants.clone());
            (Just(tenants), Just(apps.into_iter().collect()), spec)
        })
        .prop_map(|(tenants, apps, spec)| ZotCase {
            spec,
            tenants,
            apps,
        })
}

/// Generates a `spec.zot` whose retention, when present, selects a subset of `tenants`.
fn spec(tenants: Vec<String>) -> impl Strategy<Value = Value> {
    let duration = || prop::sample::select(vec!["30s", "1h", "2h30m", "24h"]);
    let storage = (
        any::<bool>(),
        prop::option::of((any::<bool>(), prop::option::of("https?://s3\\.test:9000"))),
    )
        .prop_map(|(dedupe, s3)| {
            let mut storage = json!({ "size": "10Gi", "dedupe": dedupe });
            if let Some((cache, endpoint)) = s3 {
                let mut s3 = json!({ "bucket": "jars", "region": "eu-1" });
                if let Some(endpoint) = endpoint {
                    s3["endpoint"] = json!(endpoint);
                }
                if cache {
                    s3["cacheDriver"] = json!({
                        "endpoint": "http://dynamo.test",
                        "region": "eu-1",
                        "tablePrefix": "zot",
                    });
                }
                storage["s3"] = s3;
            }
            storage
        });
    let retention = (
        1i32..20,
        prop::sample::subsequence(tenants.clone(), 0..=tenants.len()),
    )
        .prop_map(|(keep, selected)| {
            let patterns: Vec<String> = selected
                .iter()
                .map(|tenant| format!("{tenant}/**"))
                .collect();
            json!({ "keepVersions": keep, "patterns": patterns })
        });
    let toggle =
        || prop::option::of(any::<bool>().prop_map(|enabled| json!({ "enabled": enabled })));
    // One replica needs no shared store, so it passes validation most often.
    let replicas = prop_oneof![3 => Just(1i32), 2 => 2i32..=4];
    (
        (
            replicas,
            storage,
            prop::option::of((duration(), duration())),
        ),
        (prop::option::of(retention), toggle(), toggle(), toggle()),
        (
            prop::option::of((any::<bool>(), prop::option::of(duration()))),
            prop::option::of((any::<bool>(), prop::option::of(duration()))),
            prop::option::of((duration(), duration())),
            prop::sample::select(vec!["debug", "info", "warn", "error"]),
        ),
    )
        .prop_map(
            |(
                (replicas, storage, gc),
                (retention, metrics, ui, cluster),
                (scanning, scrub, timeouts, level),
            )| {
                let mut spec =
                    json!({ "replicas": replicas, "storage": storage, "logLevel": level });
                if let Some((delay, interval)) = gc {
                    spec["gc"] = json!({ "delay": delay, "interval": interval });
                }
                if let Some(retention) = retention {
                    spec["retention"] = retention;
                }
                for (key, toggle) in [("metrics", metrics), ("ui", ui), ("cluster", cluster)] {
                    if let Some(toggle) = toggle {
                        spec[key] = toggle;
                    }
                }
                if let Some((enabled, interval)) = scanning {
                    spec["scanning"] = json!({ "enabled": enabled, "updateInterval": interval });
                }
                if let Some((enabled, interval)) = scrub {
                    spec["scrub"] = json!({ "enabled": enabled, "interval": interval });
                }
                if let Some((read, write)) = timeouts {
                    spec["httpTimeouts"] = json!({ "read": read, "write": write });
                }
                spec
            },
        )
}

// === Properties ===

fn check(case: &ZotCase) -> Result<(), TestCaseError> {
    let spec: ZotSpec = serde_json::from_value(case.spec.clone())
        .map_err(|error| TestCaseError::fail(format!("spec does not parse: {error}")))?;
    if let Err(problems) = validation::validate(&spec, &ObservedState::default()) {
        prop_assert!(!problems.is_empty());
        for problem in problems {
            prop_assert!(problem.field.starts_with("spec.zot."), "{}", problem);
        }
        return Ok(());
    }
    let inputs = RenderInputs {
        name: "main",
        namespace: "artifacts",
        cluster_hash_key: "0123456789abcdef",
    };
    let text = zot::to_json(&zot::render(&spec, &inputs));
    prop_assert_eq!(
        &text,
        &zot::to_json(&zot::render(&spec, &inputs)),
        "rendering varies"
    );
    let config: Value = serde_json::from_str(&text)
        .map_err(|error| TestCaseError::fail(format!("{error}: {text}")))?;

    check_structure(&spec, &config)?;
    check_access(case, &config)?;
    check_retention(case, &spec, &config)
}

/// Checks that the config has only keys that Zot reads, listens on every address, and contains
/// none of the combinations that Zot rejects at start-up.
fn check_structure(spec: &ZotSpec, config: &Value) -> Result<(), TestCaseError> {
    let keys: BTreeSet<&str> = config
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    prop_assert!(
        keys.iter().all(|key| TOP_LEVEL_KEYS.contains(key)),
        "{:?}",
        keys
    );
    prop_assert_eq!(&config["http"]["address"], "0.0.0.0");
    prop_assert_eq!(&config["http"]["port"], "5000");
    for timeout in ["readTimeout", "writeTimeout"] {
        prop_assert!(
            config["http"][timeout]
                .as_str()
                .is_some_and(|value| !value.is_empty())
        );
    }

    let storage = &config["storage"];
    let s3 = storage.get("storageDriver").is_some();
    let cache = storage.get("cacheDriver").is_some();
    prop_assert_eq!(&storage["remoteCache"], &json!(cache));
    prop_assert!(
        !(s3 && storage["dedupe"] == true && !cache),
        "S3 dedupe without a cache"
    );
    let cve = config["extensions"]["search"].get("cve").is_some();
    prop_assert!(!(cve && s3), "CVE scanning on S3");
    if config["extensions"]["ui"]["enable"] == true {
        prop_assert_eq!(&config["extensions"]["search"]["enable"], &json!(true));
    }

    let members = config["cluster"]["members"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if config.get("cluster").is_some() {
        prop_assert_eq!(members.len(), spec.replicas as usize);
        let distinct: BTreeSet<&str> = members.iter().filter_map(Value::as_str).collect();
        prop_assert_eq!(distinct.len(), members.len());
        prop_assert_eq!(
            config["cluster"]["hashKey"].as_str().map(str::len),
            Some(16)
        );
    } else {
        prop_assert!(
            spec.replicas == 1 || s3,
            "{} replicas share nothing",
            spec.replicas
        );
    }
    Ok(())
}

/// Checks that on every tenant repository the operator may read, create and delete, the gateway
/// may only read, and every other user, named or anonymous, may do nothing. No user gets
/// `update`, so no tag can be overwritten.
fn check_access(case: &ZotCase, config: &Value) -> Result<(), TestCaseError> {
    let access = &config["http"]["accessControl"];
    prop_assert_eq!(
        &access["adminPolicy"],
        &json!({ "users": [], "actions": [] })
    );
    let others = case
        .tenants
        .iter()
        .map(|tenant| Some(tenant.as_str()))
        .chain([Some("admin"), None]);
    for repository in repositories(case) {
        let allowed = |user| actions(access, &repository, user);
        prop_assert_eq!(
            allowed(Some(OPERATOR_USERNAME)),
            set(&["read", "create", "delete"]),
            "{}",
            repository
        );
        prop_assert_eq!(
            allowed(Some(GATEWAY_USERNAME)),
            set(&["read"]),
            "{}",
            repository
        );
        for user in others.clone() {
            prop_assert_eq!(allowed(user), set(&[]), "{:?} on {}", user, repository);
        }
    }
    Ok(())
}

/// Checks that the retention policy applies to exactly the repositories of the tenants its patterns
/// name, or to all repositories when it names none.
fn check_retention(case: &ZotCase, spec: &ZotSpec, config: &Value) -> Result<(), TestCaseError> {
    let Some(retention) = &spec.retention else {
        prop_assert!(config["storage"].get("retention").is_none());
        return Ok(());
    };
    let policies = config["storage"]["retention"]["policies"]
        .as_array()
        .unwrap();
    prop_assert_eq!(policies.len(), 1);
    let globs: Vec<&str> = policies[0]["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for tenant in &case.tenants {
        let selected =
            retention.patterns.is_empty() || retention.patterns.contains(&format!("{tenant}/**"));
        for app in &case.apps {
            let repository = format!("{tenant}/{app}");
            let matched = globs.iter().any(|glob| glob_matches(glob, &repository));
            prop_assert_eq!(matched, selected, "{} against {:?}", repository, globs);
        }
    }
    prop_assert_eq!(
        &policies[0]["keepTags"][0]["mostRecentlyPushedCount"],
        &json!(retention.keep_versions)
    );
    Ok(())
}

// === Zot's access-control rules ===

/// Returns the actions that `user` (`None` for anonymous) may take on `repository`: the policy
/// group of the longest matching repository glob decides, a listed user gets its policy's
/// actions, other users the default policy, and anonymous requests the anonymous policy.
fn actions(access: &Value, repository: &str, user: Option<&str>) -> BTreeSet<String> {
    let groups = access["repositories"].as_object().unwrap();
    let Some((_, group)) = groups
        .iter()
        .filter(|(glob, _)| glob_matches(glob, repository))
        .max_by_key(|(glob, _)| glob.len())
    else {
        return BTreeSet::new();
    };
    let listed = |policy: &&Value| {
        user.is_some_and(|user| {
            policy["users"]
                .as_array()
                .unwrap()
                .iter()
                .any(|u| u == user)
        })
    };
    let granted = match (
        user,
        group["policies"].as_array().unwrap().iter().find(listed),
    ) {
        (_, Some(policy)) => &policy["actions"],
        (Some(_), None) => &group["defaultPolicy"],
        (None, None) => &group["anonymousPolicy"],
    };
    granted
        .as_array()
        .unwrap()
        .iter()
        .map(|action| action.as_str().unwrap().to_owned())
        .collect()
}

/// Matches a repository glob as Zot does: `**` spans any number of path components, `*` any
/// run of characters within one component.
fn glob_matches(glob: &str, name: &str) -> bool {
    let glob: Vec<&str> = glob.split('/').collect();
    let name: Vec<&str> = name.split('/').collect();
    components_match(&glob, &name)
}

fn components_match(glob: &[&str], name: &[&str]) -> bool {
    match glob.split_first() {
        None => name.is_empty(),
        Some((&"**", rest)) => (0..=name.len()).any(|skip| components_match(rest, &name[skip..])),
        Some((first, rest)) => name.split_first().is_some_and(|(component, others)| {
            component_matches(first, component) && components_match(rest, others)
        }),
    }
}

fn component_matches(glob: &str, component: &str) -> bool {
    match glob.split_once('*') {
        None => glob == component,
        Some((prefix, rest)) => component.strip_prefix(prefix).is_some_and(|tail| {
            (0..=tail.len()).any(|skip| component_matches(rest, &tail[skip..]))
        }),
    }
}

// === Helpers ===

fn repositories(case: &ZotCase) -> Vec<String> {
    case.tenants
        .iter()
        .flat_map(|tenant| case.apps.iter().map(move |app| format!("{tenant}/{app}")))
        .collect()
}

fn set(actions: &[&str]) -> BTreeSet<String> {
    actions.iter().map(|action| (*action).to_owned()).collect()
}

#[test]
fn glob_matching_follows_zot() {
    assert!(glob_matches("**", "a/b"));
    assert!(glob_matches("a/**", "a/b"));
    assert!(!glob_matches("a/**", "ab/b"));
    assert!(glob_matches("a*/**", "ab/b"));
    assert!(glob_matches("a/*", "a/b"));
    assert!(!glob_matches("a/*", "a/b/c"));
}
