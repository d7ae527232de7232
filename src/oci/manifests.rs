//! Manifest and tag endpoints: fetch, resolve, push, delete and list.

use bytes::Bytes;
use reqwest::{
    Method, Response, StatusCode,
    header::{self, HeaderMap, HeaderValue},
};
use serde::Deserialize;
use tracing::{debug, instrument};

use super::{
    OciError, RegistryClient,
    auth::Access,
    blobs::resolve_against,
    client::{RegistryRequest, RequestBody, read_limited},
    digest::Digest,
    error::RegistryObject,
    manifest::{ImageManifest, MANIFEST_MEDIA_TYPE},
    pagination::next_link,
};

/// Maximum manifest size this client reads, in bytes. The CNCF distribution registry accepts
/// no larger manifest either (`maxManifestBodySize = 4 << 20` in its manifest handler).
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

/// Maximum number of tag list pages followed, which stops a registry that keeps sending a
/// `Link` to another page.
const MAX_TAG_PAGES: usize = 10_000;

const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

/// A manifest with its digest, which is the SHA-256 of the exact bytes the registry returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedManifest {
    pub digest: Digest,
    pub manifest: ImageManifest,
}

impl RegistryClient {
    /// Fetches and parses the OCI image manifest at `reference` (a tag or a digest).
    ///
    /// # Errors
    ///
    /// [`OciError::NotFound`] when the tag or manifest does not exist,
    /// [`OciError::ContentMismatch`] when `reference` is a digest that the returned bytes do not
    /// have, and [`OciError::InvalidResponse`] for a body that is not an OCI image manifest.
    #[instrument(skip(self), fields(registry = %self.registry()))]
    pub async fn fetch_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<FetchedManifest, OciError> {
        let object = self.object(repository, reference);
        let response = self
            .manifest_request(Method::GET, &object, Access::Pull)
            .await?;
        if response.status() != StatusCode::OK {
            return Err(self
                .error_for_response(response, &object, Method::GET, "manifest")
                .await);
        }
        let bytes = read_limited(response, MAX_MANIFEST_SIZE + 1)
            .await
            .map_err(|source| OciError::transport(object.clone(), Method::GET, source))?;
        let invalid = |reason: String| OciError::InvalidResponse {
            object: Box::new(object.clone()),
            method: Method::GET,
            reason,
        };
        if bytes.len() > MAX_MANIFEST_SIZE {
            return Err(invalid(format!(
                "manifest larger than {MAX_MANIFEST_SIZE} bytes"
            )));
        }
        let digest = Digest::of(&bytes);
        if let Ok(expected) = reference.parse::<Digest>()
            && expected != digest
        {
            return Err(OciError::ContentMismatch {
                object: Box::new(object.clone()),
                expected,
                expected_size: bytes.len() as u64,
                actual: digest,
                actual_size: bytes.len() as u64,
            });
        }
        let manifest = serde_json::from_slice(&bytes)
            .map_err(|error| invalid(format!("not an OCI image manifest: {error}")))?;
        Ok(FetchedManifest { digest, manifest })
    }

    /// Resolves a tag to the digest of its manifest: the `Docker-Content-Digest` header of a
    /// `HEAD`, or the hash of a `GET` when a registry omits that header.
    ///
    /// # Errors
    ///
    /// [`OciError::NotFound`] when the tag does not exist.
    #[instrument(skip(self), fields(registry = %self.registry()))]
    pub async fn resolve_digest(&self, repository: &str, tag: &str) -> Result<Digest, OciError> {
        let object = self.object(repository, tag);
        let response = self
            .manifest_request(Method::HEAD, &object, Access::Pull)
            .await?;
        if response.status() != StatusCode::OK {
            return Err(self
                .error_for_response(response, &object, Method::HEAD, "manifest")
                .await);
        }
        match content_digest_header(&response, &object)? {
            Some(digest) => Ok(digest),
            None => {
                debug!("no Docker-Content-Digest header, hashing the manifest");
                Ok(self.fetch_manifest(repository, tag).await?.digest)
            }
        }
    }

    /// Returns whether a tag or manifest digest exists in the repository.
    pub async fn manifest_exists(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<bool, OciError> {
        match self.resolve_digest(repository, reference).await {
            Ok(_) => Ok(true),
            Err(error) if error.is_not_found() => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Pushes `manifest` under `tag` and returns its digest.
    ///
    /// The registry must already contain the config and layer blobs.
    #[instrument(skip(self, manifest), fields(registry = %self.registry()))]
    pub async fn push_manifest(
        &self,
        repository: &str,
        tag: &str,
        manifest: &ImageManifest,
    ) -> Result<Digest, OciError> {
        let object = self.object(repository, tag);
        let bytes = Bytes::from(
            serde_json::to_vec(manifest).expect("a manifest always serializes to JSON"),
        );
        let digest = Digest::of(&bytes);
        let response = self
            .send(RegistryRequest {
                method: Method::PUT,
                url: self.v2_url(&format!("{repository}/manifests/{tag}")),
                object: &object,
                access: Access::Push,
                headers: HeaderMap::from_iter([(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(MANIFEST_MEDIA_TYPE),
                )]),
                body: RequestBody::Bytes(bytes),
            })
            .await?;
        let response = self
            .expect_status(
                response,
                StatusCode::CREATED,
                &object,
                Method::PUT,
                "repository",
            )
            .await?;
        if let Some(returned) = content_digest_header(&response, &object)?
            && returned != digest
        {
            return Err(OciError::UploadDigestMismatch {
                object: Box::new(object),
                expected: digest,
                actual: returned,
            });
        }
        Ok(digest)
    }

    /// Deletes the manifest with `digest`, and with it every tag that points to it on registries
    /// that index tags by manifest (see [`Self::delete_tag`] for the exception).
    ///
    /// # Errors
    ///
    /// [`OciError::NotFound`] when the manifest does not exist, and
    /// [`OciError::UnexpectedStatus`] with status 405 when the registry does not allow deletion
    /// (the distribution registry without `storage.delete.enabled`, for example).
    #[instrument(skip(self), fields(registry = %self.registry(), %digest))]
    pub async fn delete_manifest(&self, repository: &str, digest: &Digest) -> Result<(), OciError> {
        self.delete_reference(repository, &digest.to_string()).await
    }

    async fn delete_reference(&self, repository: &str, reference: &str) -> Result<(), OciError> {
        let object = self.object(repository, reference);
        let response = self
            .manifest_request(Method::DELETE, &object, Access::Delete)
            .await?;
        if !response.status().is_success() {
            return Err(self
                .error_for_response(response, &object, Method::DELETE, "manifest")
                .await);
        }
        Ok(())
    }

    /// Deletes a tag by resolving it and deleting its manifest, and returns the deleted
    /// manifest's digest.
    ///
    /// The distribution specification defines deletion by digest and makes deletion of a tag by
    /// name optional. Deleting the manifest removes its other tags too, but manifests of
    /// [`super::jar`] artifacts carry their version in an annotation, so no two versions share
    /// one. Some registries keep the tag as a separate
    /// entry after its manifest is deleted (the registry of `crane registry serve`, v0.22), so a
    /// tag that still resolves to the deleted digest is then deleted by name as well.
    ///
    /// # Errors
    ///
    /// [`OciError::NotFound`] when the tag does not exist, and the errors of
    /// [`Self::delete_manifest`].
    pub async fn delete_tag(&self, repository: &str, tag: &str) -> Result<Digest, OciError> {
        let digest = self.resolve_digest(repository, tag).await?;
        self.delete_manifest(repository, &digest).await?;
        match self.resolve_digest(repository, tag).await {
            Ok(remaining) if remaining == digest => {
                debug!(
                    tag,
                    "tag survived the manifest deletion, deleting it by name"
                );
                self.delete_reference(repository, tag).await?;
            }
            Ok(_) => {}
            Err(error) if error.is_not_found() => {}
            Err(error) => return Err(error),
        }
        Ok(digest)
    }

    /// Lists the repository's tags, following `Link` pagination.
    ///
    /// A registry that truncates a page to the requested size without sending a `Link` (the
    /// registry of `crane registry serve`, v0.22) is asked for the next page with `last`, as the
    /// distribution specification describes.
    ///
    /// # Errors
    ///
    /// [`OciError::NotFound`] when the repository does not exist. Registries differ here: some
    /// return an empty list instead.
    #[instrument(skip(self), fields(registry = %self.registry()))]
    pub async fn list_tags(&self, repository: &str) -> Result<Vec<String>, OciError> {
        let object = self.object(repository, "");
        let page_size = self.tag_page_size();
        let mut url = self.tag_list_url(repository, None);
        let mut tags: Vec<String> = Vec::new();
        for _ in 0..MAX_TAG_PAGES {
            let page = self.fetch_tag_page(&object, url.clone()).await?;
            let page_len = page.tags.len();
            tags.extend(page.tags);
            let next = match page.next {
                Some(next) => next,
                None if page_len > 0 && page_len >= page_size as usize => {
                    self.tag_list_url(repository, tags.last().map(String::as_str))
                }
                None => return Ok(tags),
            };
            if next == url {
                return Ok(tags);
            }
            url = next;
        }
        Err(OciError::InvalidResponse {
            object: Box::new(object),
            method: Method::GET,
            reason: format!("tag list has more than {MAX_TAG_PAGES} pages"),
        })
    }

    fn tag_list_url(&self, repository: &str, last: Option<&str>) -> url::Url {
        let mut url = self.v2_url(&format!("{repository}/tags/list"));
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("n", &self.tag_page_size().to_string());
            if let Some(last) = last {
                query.append_pair("last", last);
            }
        }
        url
    }

    async fn fetch_tag_page(
        &self,
        object: &RegistryObject,
        url: url::Url,
    ) -> Result<TagPage, OciError> {
        #[derive(Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }

        let response = self
            .send(RegistryRequest {
                method: Method::GET,
                url,
                object,
                access: Access::Pull,
                headers: HeaderMap::new(),
                body: RequestBody::Empty,
            })
            .await?;
        if response.status() != StatusCode::OK {
            return Err(self
                .error_for_response(response, object, Method::GET, "repository")
                .await);
        }
        let next = next_page(&response, object)?;
        let list: TagList = response
            .json()
            .await
            .map_err(|error| OciError::InvalidResponse {
                object: Box::new(object.clone()),
                method: Method::GET,
                reason: format!("invalid tag list: {error}"),
            })?;
        Ok(TagPage {
            tags: list.tags.unwrap_or_default(),
            next,
        })
    }

    async fn manifest_request(
        &self,
        method: Method,
        object: &RegistryObject,
        access: Access,
    ) -> Result<Response, OciError> {
        self.send(RegistryRequest {
            method,
            url: self.v2_url(&format!(
                "{}/manifests/{}",
                object.repository, object.reference
            )),
            object,
            access,
            headers: HeaderMap::from_iter([(
                header::ACCEPT,
                HeaderValue::from_static(MANIFEST_MEDIA_TYPE),
            )]),
            body: RequestBody::Empty,
        })
        .await
    }
}

/// One page of a tag list and the URL of the next page, if the registry linked one.
struct TagPage {
    tags: Vec<String>,
    next: Option<url::Url>,
}

fn next_page(response: &Response, object: &RegistryObject) -> Result<Option<url::Url>, OciError> {
    let Some(link) = response
        .headers()
        .get(header::LINK)
        .and_then(|value| value.to_str().ok())
        .and_then(next_link)
    else {
        return Ok(None);
    };
    resolve_against(response, link, object, &Method::GET).map(Some)
}

fn content_digest_header(
    response: &Response,
    object: &RegistryObject,
) -> Result<Option<Digest>, OciError> {
    let Some(value) = response.headers().get(DOCKER_CONTENT_DIGEST) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    text.parse()
        .map(Some)
        .map_err(|source| OciError::InvalidDigest {
            registry: object.registry.clone(),
            source,
        })
}
