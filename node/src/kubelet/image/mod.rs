//! Images: pulled from OCI registries into a content store, unpacked once per image.
//!
//! [`ImageStore::ensure`] is what the kubelet calls before creating a container: it applies
//! the container's [`PullPolicy`], pulls what is missing and returns an [`Image`] whose
//! `rootfs` is a complete, read-only directory tree (an overlayfs lowerdir). Like a much
//! smaller containerd: a content store of verified blobs, refs from names to manifests,
//! and one unpacked root filesystem per image config (see `store.rs` for the layout).
//!
//! - `reference.rs`: image names and pull policy defaulting;
//! - `registry.rs`: manifests and blobs from registries (via `oci-client`);
//! - `unpack.rs`: applying layer tars with OCI whiteouts, refusing path escapes;
//! - `store.rs`: the on-disk layout, atomic writes;
//! - `error.rs`: [`ImageError`] and the kubelet's waiting reasons.
//!
//! Only anonymous pulls; layers are tar or tar+gzip (zstd is refused as unsupported).

mod error;
mod reference;
mod registry;
mod store;
mod unpack;

use std::collections::HashMap;
use std::fs;
use std::io::BufReader;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use oci_client::manifest::{
    OciDescriptor, IMAGE_CONFIG_MEDIA_TYPE, IMAGE_DOCKER_CONFIG_MEDIA_TYPE, IMAGE_DOCKER_LAYER_GZIP_MEDIA_TYPE,
    IMAGE_DOCKER_LAYER_TAR_MEDIA_TYPE, IMAGE_LAYER_GZIP_MEDIA_TYPE, IMAGE_LAYER_MEDIA_TYPE,
    IMAGE_LAYER_NONDISTRIBUTABLE_GZIP_MEDIA_TYPE, IMAGE_LAYER_NONDISTRIBUTABLE_MEDIA_TYPE,
};
use oci_client::Reference;
use oci_spec::image::ImageConfiguration;

pub use error::ImageError;
pub use reference::{normalize, PullPolicy};
pub use unpack::UnpackError;

use registry::Registry;
use store::{sha256_hex, Layout, RefRecord, TempPath};

/// An image available on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The normalized reference, e.g. `127.0.0.1:5000/busybox:latest`.
    pub reference: String,
    /// The image ID: the config digest, `sha256:<hex>` (what `crictl images` shows).
    pub id: String,
    /// `<registry>/<repository>@<digest of what the reference points at>`, the kubelet's
    /// `imageID` in container statuses.
    pub repo_digest: String,
    /// The unpacked layers; never modify it (use it as an overlayfs lowerdir).
    pub rootfs: PathBuf,
    /// What a container runs by default.
    pub config: ImageConfig,
}

/// The parts of an image config a container's process is built from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, `NAME=value`.
    pub env: Vec<String>,
    /// `WorkingDir`, if set and not empty.
    pub working_dir: Option<String>,
    /// `User` (`uid`, `user`, `uid:gid`, …), if set and not empty.
    pub user: Option<String>,
}

impl ImageConfig {
    fn from_oci(config: &ImageConfiguration) -> ImageConfig {
        let Some(c) = config.config() else {
            return ImageConfig::default();
        };
        let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        ImageConfig {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: non_empty(c.working_dir()),
            user: non_empty(c.user()),
        }
    }
}

/// The node's images: a content store plus unpacked root filesystems. Cheap to clone;
/// clones share the store and its locks.
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

struct Inner {
    layout: Layout,
    registry: Registry,
    /// One lock per normalized reference, so concurrent `ensure`s of an image pull once.
    pulls: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore").field("root", &self.inner.layout.root()).finish_non_exhaustive()
    }
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy)]
enum Compression {
    None,
    Gzip,
}

/// A layer to apply: where its blob is and what it must decompress to.
struct LayerPlan {
    digest: String,
    blob: PathBuf,
    compression: Compression,
    diff_id: String,
}

impl ImageStore {
    /// Opens (creating if needed) the store under `root`. `insecure_registries` are
    /// `host:port` names spoken to in plain HTTP; every other registry needs HTTPS.
    ///
    /// # Errors
    /// [`ImageError::Io`] if the directories cannot be created; [`ImageError::Client`]
    /// if the HTTP client cannot be built.
    pub fn new(root: PathBuf, insecure_registries: Vec<String>) -> Result<ImageStore, ImageError> {
        let layout = Layout::open(root.clone()).map_err(ImageError::io("cannot open", root))?;
        let registry = Registry::new(insecure_registries)?;
        Ok(ImageStore { inner: Arc::new(Inner { layout, registry, pulls: Mutex::new(HashMap::new()) }) })
    }

    /// Makes `image` available according to `policy`, pulling and unpacking it if needed.
    ///
    /// # Errors
    /// See [`ImageError`]; [`ImageError::reason`] gives the kubelet's waiting reason.
    pub async fn ensure(&self, image: &str, policy: PullPolicy) -> Result<Image, ImageError> {
        self.ensure_noting_pull(image, policy, || {}).await
    }

    /// [`ImageStore::ensure`], calling `on_pull` just before a pull starts (not when the
    /// image is already here), so the caller knows which it was without looking twice.
    #[tracing::instrument(
        target = "keelson::trace",
        name = "image.ensure",
        skip(self, on_pull),
        fields(otel.name = "image pull", container.image.name = image, root = %self.inner.layout.root().display())
    )]
    pub async fn ensure_noting_pull(
        &self,
        image: &str,
        policy: PullPolicy,
        on_pull: impl FnOnce() + Send,
    ) -> Result<Image, ImageError> {
        let reference = reference::parse(image)?;
        let name = reference.whole();
        let lock = self.pull_lock(&name);
        let _guard = lock.lock().await;
        if policy != PullPolicy::Always {
            if let Some(found) = self.lookup(&reference) {
                tracing::debug!(image = %name, "image present; not pulling");
                return Ok(found);
            }
        }
        if policy == PullPolicy::Never {
            return Err(ImageError::NotPresent { image: name });
        }
        on_pull();
        self.pull(&reference).await
    }

    /// The image if it is on this node (pulled and unpacked); never contacts a registry.
    #[must_use]
    pub fn present(&self, image: &str) -> Option<Image> {
        self.lookup(&reference::parse(image).ok()?)
    }

    fn pull_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut pulls = self.inner.pulls.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget locks nobody holds or waits for, so the map stays as small as the set
        // of images being pulled.
        pulls.retain(|_, lock| Arc::strong_count(lock) > 1);
        Arc::clone(pulls.entry(name.to_owned()).or_default())
    }

    fn lookup(&self, reference: &Reference) -> Option<Image> {
        let layout = &self.inner.layout;
        let name = reference.whole();
        let record = layout.read_ref(&name)?;
        let config_hex = sha256_hex(&record.config_digest)?;
        let rootfs = layout.rootfs(config_hex);
        if !rootfs.is_dir() {
            return None;
        }
        let config = match read_config(&layout.blob(config_hex)) {
            Ok(config) => config,
            Err(e) => {
                tracing::warn!(image = %name, error = %e, "stored image config unreadable; will pull again");
                return None;
            }
        };
        Some(image_from(reference, &record, rootfs, &config))
    }

    async fn pull(&self, reference: &Reference) -> Result<Image, ImageError> {
        let layout = &self.inner.layout;
        let registry = &self.inner.registry;
        let image = reference.whole();
        tracing::info!(image = %image, "pulling image");

        let resolved = registry.resolve(reference).await?;
        for (digest, bytes) in &resolved.raw {
            let hex = digest_hex(&image, "manifest", digest)?;
            let path = layout.blob(hex);
            if !path.exists() {
                layout
                    .write_atomic(&path, bytes)
                    .map_err(ImageError::io(format!("storing the manifest of {image:?} at"), &path))?;
            }
        }
        let manifest = &resolved.manifest;

        // Refuse what cannot be unpacked before downloading anything big.
        let config_desc = &manifest.config;
        if ![IMAGE_CONFIG_MEDIA_TYPE, IMAGE_DOCKER_CONFIG_MEDIA_TYPE].contains(&config_desc.media_type.as_str()) {
            return Err(ImageError::Unsupported {
                image,
                detail: format!(
                    "config media type {} (not a container image; an OCI artifact?)",
                    config_desc.media_type
                ),
            });
        }
        let compressions = manifest
            .layers
            .iter()
            .map(|layer| layer_compression(&image, &layer.media_type))
            .collect::<Result<Vec<_>, _>>()?;

        let config_hex = digest_hex(&image, "config", &config_desc.digest)?;
        let config_path = self.fetch_blob(reference, "config", config_desc).await?;
        let config = read_config(&config_path)?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::Registry {
                image,
                detail: format!(
                    "the manifest lists {} layers but the config {} lists {} diff IDs",
                    manifest.layers.len(),
                    config_desc.digest,
                    diff_ids.len()
                ),
            });
        }

        let mut plan = Vec::with_capacity(manifest.layers.len());
        for ((layer, compression), diff_id) in manifest.layers.iter().zip(compressions).zip(diff_ids) {
            let blob = self.fetch_blob(reference, "layer", layer).await?;
            plan.push(LayerPlan { digest: layer.digest.clone(), blob, compression, diff_id: diff_id.clone() });
        }

        let rootfs = layout.rootfs(config_hex);
        if !rootfs.is_dir() {
            let store = self.clone();
            let (image, config_hex) = (image.clone(), config_hex.to_owned());
            tokio::task::spawn_blocking(move || store.unpack(&image, &config_hex, &plan)).await.map_err(|e| {
                ImageError::Registry { image: reference.whole(), detail: format!("the unpack task failed: {e}") }
            })??;
        }

        let record = RefRecord {
            reference: image.clone(),
            manifest_digest: resolved.top_digest,
            image_manifest_digest: resolved.manifest_digest,
            config_digest: config_desc.digest.clone(),
        };
        layout
            .write_ref(&record)
            .map_err(ImageError::io(format!("recording {image:?} at"), layout.ref_file(&image)))?;
        tracing::info!(image = %image, id = %record.config_digest, "image ready");
        Ok(image_from(reference, &record, rootfs, &config))
    }

    /// The blob `desc` describes, downloading it unless it is already stored.
    async fn fetch_blob(&self, reference: &Reference, what: &str, desc: &OciDescriptor) -> Result<PathBuf, ImageError> {
        let layout = &self.inner.layout;
        let image = reference.whole();
        let hex = digest_hex(&image, what, &desc.digest)?;
        let path = layout.blob(hex);
        if path.exists() {
            return Ok(path);
        }
        tracing::debug!(image = %image, digest = %desc.digest, size = desc.size, "downloading {what}");
        let tmp = TempPath::new(layout.tmp_path("blob"));
        self.inner.registry.fetch_blob(reference, what, desc, tmp.path()).await?;
        tokio::fs::rename(tmp.path(), &path)
            .await
            .map_err(ImageError::io(format!("storing {what} of {image:?} at"), &path))?;
        tmp.keep();
        Ok(path)
    }

    /// Builds `rootfs/<config_hex>` from the layers, in `tmp/` first, then renamed into
    /// place. Blocking.
    fn unpack(&self, image: &str, config_hex: &str, plan: &[LayerPlan]) -> Result<(), ImageError> {
        let layout = &self.inner.layout;
        let dest = layout.rootfs(config_hex);
        let tmp = TempPath::new(layout.tmp_path("rootfs"));
        fs::create_dir(tmp.path()).map_err(ImageError::io(format!("unpacking {image:?} into"), tmp.path()))?;
        // "/" of a container must be traversable by any user, whatever our umask.
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
            .map_err(ImageError::io(format!("unpacking {image:?} into"), tmp.path()))?;
        for layer in plan {
            tracing::debug!(image, layer = %layer.digest, "applying layer");
            let file = fs::File::open(&layer.blob)
                .map_err(ImageError::io(format!("reading a layer of {image:?} from"), &layer.blob))?;
            let reader = BufReader::new(file);
            let applied = match layer.compression {
                Compression::None => unpack::apply_layer(tmp.path(), reader),
                Compression::Gzip => unpack::apply_layer(tmp.path(), flate2::read::MultiGzDecoder::new(reader)),
            };
            let diff_id = applied.map_err(|source| ImageError::Unpack {
                image: image.to_owned(),
                layer: layer.digest.clone(),
                source,
            })?;
            if diff_id != layer.diff_id {
                return Err(ImageError::DigestMismatch {
                    image: image.to_owned(),
                    what: format!("the uncompressed content of layer {}", layer.digest),
                    expected: layer.diff_id.clone(),
                    actual: diff_id,
                });
            }
        }
        match fs::rename(tmp.path(), &dest) {
            Ok(()) => {
                tmp.keep();
                Ok(())
            }
            // Another reference to the same image finished first; theirs is identical.
            Err(_) if dest.is_dir() => Ok(()),
            Err(e) => Err(ImageError::Io { what: format!("moving the unpacked {image:?} to"), path: dest, source: e }),
        }
    }
}

fn image_from(reference: &Reference, record: &RefRecord, rootfs: PathBuf, config: &ImageConfiguration) -> Image {
    Image {
        reference: record.reference.clone(),
        id: record.config_digest.clone(),
        repo_digest: format!("{}/{}@{}", reference.registry(), reference.repository(), record.manifest_digest),
        rootfs,
        config: ImageConfig::from_oci(config),
    }
}

fn read_config(path: &Path) -> Result<ImageConfiguration, ImageError> {
    let bytes = fs::read(path).map_err(ImageError::io("reading the image config", path))?;
    serde_json::from_slice(&bytes).map_err(|e| ImageError::Io {
        what: "parsing the image config".to_owned(),
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// The hex of a digest that will become a path; only well-formed sha256 digests qualify.
fn digest_hex<'a>(image: &str, what: &str, digest: &'a str) -> Result<&'a str, ImageError> {
    sha256_hex(digest).ok_or_else(|| ImageError::Unsupported {
        image: image.to_owned(),
        detail: format!("{what} digest {digest:?} (only sha256 digests are supported)"),
    })
}

fn layer_compression(image: &str, media_type: &str) -> Result<Compression, ImageError> {
    match media_type {
        IMAGE_LAYER_MEDIA_TYPE | IMAGE_DOCKER_LAYER_TAR_MEDIA_TYPE | IMAGE_LAYER_NONDISTRIBUTABLE_MEDIA_TYPE => {
            Ok(Compression::None)
        }
        IMAGE_LAYER_GZIP_MEDIA_TYPE
        | IMAGE_DOCKER_LAYER_GZIP_MEDIA_TYPE
        | IMAGE_LAYER_NONDISTRIBUTABLE_GZIP_MEDIA_TYPE
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
        other if other.ends_with("+zstd") => Err(ImageError::Unsupported {
            image: image.to_owned(),
            detail: format!("zstd-compressed layers ({other}); keelson unpacks tar and tar+gzip layers"),
        }),
        other => Err(ImageError::Unsupported {
            image: image.to_owned(),
            detail: format!("layer media type {other}; keelson unpacks tar and tar+gzip layers"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_and_images_can_be_shared_across_tasks() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<ImageStore>();
        shareable::<Image>();
        shareable::<ImageError>();
    }

    #[test]
    fn layer_media_types() {
        let image = "r.io/x:latest";
        assert!(matches!(
            layer_compression(image, "application/vnd.oci.image.layer.v1.tar+gzip"),
            Ok(Compression::Gzip)
        ));
        assert!(matches!(
            layer_compression(image, "application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Ok(Compression::Gzip)
        ));
        assert!(matches!(layer_compression(image, "application/vnd.oci.image.layer.v1.tar"), Ok(Compression::None)));
        let zstd = layer_compression(image, "application/vnd.oci.image.layer.v1.tar+zstd").expect_err("zstd");
        assert!(matches!(zstd, ImageError::Unsupported { .. }), "{zstd:?}");
        assert!(zstd.to_string().contains("zstd") && zstd.to_string().contains(image), "{zstd}");
        assert_eq!(zstd.reason(), "ErrImagePull");
        let wasm = layer_compression(image, "application/vnd.wasm.content.layer.v1+wasm").expect_err("wasm");
        assert!(matches!(wasm, ImageError::Unsupported { .. }), "{wasm:?}");
    }

    #[test]
    fn config_fields_map_from_the_oci_config() {
        let config: ImageConfiguration = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux",
                "config":{"Entrypoint":["/bin/app"],"Cmd":null,"Env":["PATH=/bin"],"WorkingDir":"","User":"1000:1000"},
                "rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .expect("parse config");
        assert_eq!(
            ImageConfig::from_oci(&config),
            ImageConfig {
                entrypoint: vec!["/bin/app".to_owned()],
                cmd: vec![],
                env: vec!["PATH=/bin".to_owned()],
                working_dir: None,
                user: Some("1000:1000".to_owned()),
            }
        );
    }

    #[tokio::test]
    async fn never_policy_and_present_do_not_touch_the_network() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::new(dir.path().join("images"), vec![]).expect("open store");
        assert_eq!(store.present("127.0.0.1:1/nothing:latest"), None);
        assert_eq!(store.present("Not Valid"), None);
        let err = store.ensure("127.0.0.1:1/nothing:latest", PullPolicy::Never).await.expect_err("absent with Never");
        assert!(matches!(err, ImageError::NotPresent { .. }), "{err:?}");
        assert_eq!(err.reason(), "ErrImageNeverPull");
        assert!(err.to_string().contains("127.0.0.1:1/nothing:latest"), "{err}");
        let err = store.ensure("127.0.0.1:1/Upper-Case", PullPolicy::IfNotPresent).await.expect_err("invalid name");
        assert_eq!(err.reason(), "InvalidImageName");
    }
}
