//! JARs stored in a key of a ConfigMap or Secret.
//!
//! The caller reads the object from the API server, and these functions only pick the key, so
//! they stay pure and testable without a cluster.

use std::collections::BTreeMap;

use bytes::Bytes;
use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::error::SourceError;

/// Returns the JAR stored under `key` in the ConfigMap's `binaryData`.
///
/// A key found only in `data` fails with [`SourceError::KeyInTextData`], because `data`
/// contains UTF-8 text and a JAR is binary.
pub fn config_map_key(config_map: &ConfigMap, key: &str) -> Result<Bytes, SourceError> {
    let (namespace, name) = namespace_and_name(&config_map.metadata);
    if let Some(value) = config_map
        .binary_data
        .as_ref()
        .and_then(|data| data.get(key))
    {
        return Ok(Bytes::copy_from_slice(&value.0));
    }

    let text_data = config_map.data.as_ref();
    if text_data.is_some_and(|data| data.contains_key(key)) {
        return Err(SourceError::KeyInTextData {
            namespace,
            name,
            key: key.to_owned(),
        });
    }

    let mut present = keys_of(config_map.binary_data.as_ref());
    present.extend(text_data.into_iter().flat_map(|data| data.keys().cloned()));
    present.sort();
    Err(SourceError::KeyNotFound {
        kind: "ConfigMap",
        namespace,
        name,
        key: key.to_owned(),
        present,
    })
}

/// Returns the JAR stored under `key` in the Secret's `data`.
///
/// `stringData` is not read, because the API server merges it into `data` on write and never
/// returns it.
pub fn secret_key(secret: &Secret, key: &str) -> Result<Bytes, SourceError> {
    if let Some(value) = secret.data.as_ref().and_then(|data| data.get(key)) {
        return Ok(Bytes::copy_from_slice(&value.0));
    }

    let (namespace, name) = namespace_and_name(&secret.metadata);
    Err(SourceError::KeyNotFound {
        kind: "Secret",
        namespace,
        name,
        key: key.to_owned(),
        present: keys_of(secret.data.as_ref()),
    })
}

fn namespace_and_name(metadata: &ObjectMeta) -> (String, String) {
    (
        metadata.namespace.clone().unwrap_or_default(),
        metadata.name.clone().unwrap_or_default(),
    )
}

/// Returns the key names, which are safe to show even for a Secret, unlike the values.
fn keys_of(data: Option<&BTreeMap<String, ByteString>>) -> Vec<String> {
    data.map(|data| data.keys().cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAR: &[u8] = b"PK\x03\x04jar";

    fn metadata() -> ObjectMeta {
        ObjectMeta {
            namespace: Some("team-a".to_owned()),
            name: Some("app".to_owned()),
            ..ObjectMeta::default()
        }
    }

    fn binary(entries: &[(&str, &[u8])]) -> BTreeMap<String, ByteString> {
        entries
            .iter()
            .map(|(key, value)| ((*key).to_owned(), ByteString(value.to_vec())))
            .collect()
    }

    #[test]
    fn config_map_binary_data_returned() {
        let config_map = ConfigMap {
            metadata: metadata(),
            binary_data: Some(binary(&[("app.jar", JAR)])),
            ..ConfigMap::default()
        };
        assert_eq!(config_map_key(&config_map, "app.jar").unwrap(), JAR);
    }

    #[test]
    fn config_map_text_key_rejected() {
        let config_map = ConfigMap {
            metadata: metadata(),
            data: Some(BTreeMap::from([("app.jar".to_owned(), "text".to_owned())])),
            ..ConfigMap::default()
        };
        let error = config_map_key(&config_map, "app.jar").unwrap_err();
        assert!(
            matches!(&error, SourceError::KeyInTextData { namespace, name, key }
                if namespace == "team-a" && name == "app" && key == "app.jar"),
            "{error:?}"
        );
    }

    #[test]
    fn config_map_missing_key_lists_keys() {
        let config_map = ConfigMap {
            metadata: metadata(),
            binary_data: Some(binary(&[("b.jar", JAR)])),
            data: Some(BTreeMap::from([("a.txt".to_owned(), "text".to_owned())])),
            ..ConfigMap::default()
        };
        let error = config_map_key(&config_map, "app.jar").unwrap_err();
        assert_eq!(
            error.to_string(),
            "ConfigMap team-a/app has no key \"app.jar\" (keys present: a.txt, b.jar). \
             Set the key to one of them or add the JAR under \"app.jar\""
        );
    }

    #[test]
    fn secret_data_returned() {
        let secret = Secret {
            metadata: metadata(),
            data: Some(binary(&[("app.jar", JAR)])),
            ..Secret::default()
        };
        assert_eq!(secret_key(&secret, "app.jar").unwrap(), JAR);
    }

    #[test]
    fn secret_missing_key_names_object() {
        let secret = Secret {
            metadata: metadata(),
            ..Secret::default()
        };
        let error = secret_key(&secret, "app.jar").unwrap_err();
        assert_eq!(
            error.to_string(),
            "Secret team-a/app has no key \"app.jar\" (keys present: none). \
             Set the key to one of them or add the JAR under \"app.jar\""
        );
    }
}
