//! The OCI image manifest (image-spec v1.1) of a JAR artifact: types, the pure builder and the
//! check that a fetched manifest contains exactly one JAR.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::digest::{ContentSummary, Digest};

/// Media type of an OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Artifact type that marks a manifest as one application JAR.
pub const JAR_ARTIFACT_TYPE: &str = "application/vnd.cameleer.app.jar.v1";
/// Media type of the JAR layer.
pub const JAR_MEDIA_TYPE: &str = "application/java-archive";
/// Media type of the empty config blob that image-spec v1.1 prescribes for artifacts.
pub const EMPTY_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// Content of the empty config blob.
pub const EMPTY_CONFIG_CONTENT: &[u8] = b"{}";

/// Annotation keys from the OCI image-spec's pre-defined annotations.
pub mod annotation {
    pub const CREATED: &str = "org.opencontainers.image.created";
    pub const VERSION: &str = "org.opencontainers.image.version";
    pub const SOURCE: &str = "org.opencontainers.image.source";
    pub const TITLE: &str = "org.opencontainers.image.title";
}

/// Maximum length of a JAR file name, in bytes: the usual file system limit for one name.
pub const MAX_FILE_NAME_LEN: usize = 255;

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// Returns the descriptor of the empty config blob `{}`.
    pub fn empty_config() -> Self {
        Self {
            media_type: EMPTY_CONFIG_MEDIA_TYPE.to_owned(),
            digest: Digest::of(EMPTY_CONFIG_CONTENT),
            size: EMPTY_CONFIG_CONTENT.len() as u64,
            annotations: BTreeMap::new(),
        }
    }

    /// Returns the file name from the `org.opencontainers.image.title` annotation, if any.
    pub fn title(&self) -> Option<&str> {
        self.annotations.get(annotation::TITLE).map(String::as_str)
    }
}

/// An OCI image manifest. Fields this crate does not use, such as `subject`, are dropped when
/// parsing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A manifest that is not a single-JAR artifact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAJarArtifact {
    #[error("media type is {0:?}, expected {MANIFEST_MEDIA_TYPE:?}")]
    MediaType(Option<String>),
    #[error("artifact type is {0:?}, expected {JAR_ARTIFACT_TYPE:?}")]
    ArtifactType(Option<String>),
    #[error("it has {0} layers, expected exactly one")]
    LayerCount(usize),
    #[error("its layer has media type {0:?}, expected {JAR_MEDIA_TYPE:?}")]
    LayerMediaType(String),
}

impl ImageManifest {
    /// Returns the JAR layer after checking that this manifest is a JAR artifact: artifact type
    /// [`JAR_ARTIFACT_TYPE`] and exactly one [`JAR_MEDIA_TYPE`] layer.
    ///
    /// # Errors
    ///
    /// [`NotAJarArtifact`] naming the first property that differs.
    pub fn jar_layer(&self) -> Result<&Descriptor, NotAJarArtifact> {
        if let Some(media_type) = &self.media_type
            && media_type != MANIFEST_MEDIA_TYPE
        {
            return Err(NotAJarArtifact::MediaType(self.media_type.clone()));
        }
        if self.artifact_type.as_deref() != Some(JAR_ARTIFACT_TYPE) {
            return Err(NotAJarArtifact::ArtifactType(self.artifact_type.clone()));
        }
        let [layer] = self.layers.as_slice() else {
            return Err(NotAJarArtifact::LayerCount(self.layers.len()));
        };
        if layer.media_type != JAR_MEDIA_TYPE {
            return Err(NotAJarArtifact::LayerMediaType(layer.media_type.clone()));
        }
        Ok(layer)
    }
}

/// Metadata recorded in the manifest of a pushed JAR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JarManifestInput {
    /// File name for the layer's title annotation, which `oras pull` uses as the output file.
    pub file_name: String,
    /// Version for the version annotation, without the tag's `v` prefix.
    pub version: String,
    /// Source URL, already passed through [`sanitize_source_url`].
    pub source_url: Option<String>,
    /// Creation time for the created annotation.
    pub created: jiff::Timestamp,
}

/// Builds the manifest of a JAR artifact whose layer content is `layer`.
pub fn build_jar_manifest(layer: ContentSummary, input: &JarManifestInput) -> ImageManifest {
    let layer = Descriptor {
        media_type: JAR_MEDIA_TYPE.to_owned(),
        digest: layer.digest,
        size: layer.size,
        annotations: BTreeMap::from([(annotation::TITLE.to_owned(), input.file_name.clone())]),
    };
    let mut annotations = BTreeMap::from([
        (
            annotation::CREATED.to_owned(),
            input.created.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        ),
        (annotation::VERSION.to_owned(), input.version.clone()),
    ]);
    if let Some(source_url) = &input.source_url {
        annotations.insert(annotation::SOURCE.to_owned(), source_url.clone());
    }
    ImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.to_owned()),
        artifact_type: Some(JAR_ARTIFACT_TYPE.to_owned()),
        config: Descriptor::empty_config(),
        layers: vec![layer],
        annotations,
    }
}

/// A file name that cannot be a layer title.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid JAR file name {value:?}: must be 1 to {MAX_FILE_NAME_LEN} bytes without '/', '\\' \
     or control characters, and not '.' or '..'"
)]
pub struct InvalidFileName {
    pub value: String,
}

/// Checks that `file_name` is a plain file name, because `oras pull` and other clients write the
/// layer to a path built from its title.
///
/// # Errors
///
/// [`InvalidFileName`] when the name is empty, too long, `.` or `..`, or contains a path
/// separator or a control character.
pub fn validate_file_name(file_name: &str) -> Result<(), InvalidFileName> {
    let valid = !file_name.is_empty()
        && file_name.len() <= MAX_FILE_NAME_LEN
        && file_name != "."
        && file_name != ".."
        && !file_name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control());
    if valid {
        Ok(())
    } else {
        Err(InvalidFileName {
            value: file_name.to_owned(),
        })
    }
}

/// A source that is not an absolute URL. The value is left out of the message because it may
/// contain credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid source URL: {reason}; the value is not shown because it may contain credentials")]
pub struct InvalidSourceUrl {
    pub reason: String,
}

/// Removes user name, password, query and fragment from a source URL before it is published in
/// an annotation. Each of them may carry a credential: a password, an access token in the query,
/// or an OAuth token in the fragment.
///
/// # Errors
///
/// [`InvalidSourceUrl`] when `raw` is not an absolute URL.
pub fn sanitize_source_url(raw: &str) -> Result<String, InvalidSourceUrl> {
    let mut url = url::Url::parse(raw).map_err(|error| InvalidSourceUrl {
        reason: error.to_string(),
    })?;
    // Both setters fail only for URLs that cannot have credentials (such as `mailto:`), which
    // then carry none.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    Ok(url.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_input() -> JarManifestInput {
        JarManifestInput {
            file_name: "billing.jar".to_owned(),
            version: "1.2.3".to_owned(),
            source_url: Some("https://git.example.com/acme/billing".to_owned()),
            created: "2025-03-04T05:06:07Z".parse().unwrap(),
        }
    }

    #[test]
    fn jar_manifest_exact_json() {
        let layer = ContentSummary {
            digest: Digest::of(b"jar"),
            size: 3,
        };
        let manifest = build_jar_manifest(layer, &sample_input());
        let expected = concat!(
            r#"{"schemaVersion":2,"#,
            r#""mediaType":"application/vnd.oci.image.manifest.v1+json","#,
            r#""artifactType":"application/vnd.cameleer.app.jar.v1","#,
            r#""config":{"mediaType":"application/vnd.oci.empty.v1+json","#,
            r#""digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","#,
            r#""size":2},"#,
            r#""layers":[{"mediaType":"application/java-archive","#,
            r#""digest":"sha256:0163f1eea7894350060624d315234d40c508ab251ba121714e234503045faadd","#,
            r#""size":3,"#,
            r#""annotations":{"org.opencontainers.image.title":"billing.jar"}}],"#,
            r#""annotations":{"org.opencontainers.image.created":"2025-03-04T05:06:07Z","#,
            r#""org.opencontainers.image.source":"https://git.example.com/acme/billing","#,
            r#""org.opencontainers.image.version":"1.2.3"}}"#,
        );
        assert_eq!(serde_json::to_string(&manifest).unwrap(), expected);
    }

    #[test]
    fn jar_manifest_omits_missing_source() {
        let input = JarManifestInput {
            source_url: None,
            ..sample_input()
        };
        let layer = ContentSummary {
            digest: Digest::of(b""),
            size: 0,
        };
        let manifest = build_jar_manifest(layer, &input);
        assert!(!manifest.annotations.contains_key(annotation::SOURCE));
        assert_eq!(manifest.annotations.len(), 2);
    }

    #[test]
    fn jar_layer_accepts_built_manifest() {
        let layer = ContentSummary {
            digest: Digest::of(b"jar"),
            size: 3,
        };
        let manifest = build_jar_manifest(layer, &sample_input());
        let jar = manifest.jar_layer().unwrap();
        assert_eq!(jar.digest, layer.digest);
        assert_eq!(jar.title(), Some("billing.jar"));
    }

    #[test]
    fn jar_layer_rejects_other_artifacts() {
        let layer = ContentSummary {
            digest: Digest::of(b"jar"),
            size: 3,
        };
        let valid = build_jar_manifest(layer, &sample_input());

        let mut image = valid.clone();
        image.artifact_type = None;
        assert_eq!(image.jar_layer(), Err(NotAJarArtifact::ArtifactType(None)));

        let mut two_layers = valid.clone();
        two_layers.layers.push(two_layers.layers[0].clone());
        assert_eq!(two_layers.jar_layer(), Err(NotAJarArtifact::LayerCount(2)));

        let mut tar = valid.clone();
        tar.layers[0].media_type = "application/vnd.oci.image.layer.v1.tar".to_owned();
        assert!(matches!(
            tar.jar_layer(),
            Err(NotAJarArtifact::LayerMediaType(_))
        ));

        let mut index = valid;
        index.media_type = Some("application/vnd.oci.image.index.v1+json".to_owned());
        assert!(matches!(
            index.jar_layer(),
            Err(NotAJarArtifact::MediaType(_))
        ));
    }

    #[test]
    fn manifest_parse_ignores_unknown_fields() {
        let json = r#"{"schemaVersion":2,"artifactType":"application/vnd.cameleer.app.jar.v1",
            "config":{"mediaType":"application/vnd.oci.empty.v1+json",
              "digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
              "size":2,"data":"e30="},
            "layers":[{"mediaType":"application/java-archive",
              "digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
              "size":2}],
            "subject":{"mediaType":"x","digest":"sha256:0","size":1}}"#;
        let manifest: ImageManifest = serde_json::from_str(json).unwrap();
        assert_eq!(manifest.jar_layer().unwrap().size, 2);
    }

    #[test]
    fn source_url_sanitising_table() {
        let cases = [
            (
                "https://user:secret@git.example.com/acme/app.git?token=abc#frag",
                "https://git.example.com/acme/app.git",
            ),
            (
                "https://token@git.example.com/acme/app",
                "https://git.example.com/acme/app",
            ),
            (
                "https://git.example.com/acme/app",
                "https://git.example.com/acme/app",
            ),
            (
                "ssh://git@git.example.com:2222/acme/app.git",
                "ssh://git.example.com:2222/acme/app.git",
            ),
        ];
        for (raw, expected) in cases {
            assert_eq!(sanitize_source_url(raw).unwrap(), expected, "{raw}");
        }
    }

    #[test]
    fn source_url_error_hides_value() {
        let error = sanitize_source_url("not a url with secret-token").unwrap_err();
        assert!(!error.to_string().contains("secret-token"), "{error}");
    }

    #[test]
    fn file_name_validation_table() {
        let long = "a".repeat(MAX_FILE_NAME_LEN + 1);
        let cases = [
            ("app.jar", true),
            ("camel-core 4.14.jar", true),
            ("", false),
            (".", false),
            ("..", false),
            ("../app.jar", false),
            ("dir/app.jar", false),
            ("dir\\app.jar", false),
            ("app\n.jar", false),
            (long.as_str(), false),
        ];
        for (name, valid) in cases {
            assert_eq!(validate_file_name(name).is_ok(), valid, "{name:?}");
        }
    }
}
