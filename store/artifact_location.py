"""Choosing the artifact store a location names: a folder or an object store bucket.

A plain path or a ``file://`` URL is a folder (``FolderArtifactStore``);
``s3://``, ``gs://`` and ``az://`` URLs are buckets (``FsspecArtifactStore``)
whose storage options (an endpoint, a region) come from the
``LIFECYCLE_ARTIFACTS_OPTIONS`` environment variable as a JSON object, and
whose credentials come from the backend's own usual places (for S3:
``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``, ``~/.aws``, an instance
role). Other fsspec protocols are refused: they do not all make a file
visible only once it is whole, which the store relies on.
"""

from __future__ import annotations

import json
import os
from urllib.parse import unquote, urlsplit

import fsspec

from lifecycle.store.artifacts import ArtifactStore, FolderArtifactStore
from lifecycle.store.errors import BadArtifactsLocation
from lifecycle.store.object_artifacts import FsspecArtifactStore

OPTIONS_ENV = "LIFECYCLE_ARTIFACTS_OPTIONS"
# the object stores supported, and the package that gives fsspec each one
BACKENDS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
            "abfss": "adlfs"}


def open_artifact_store(location: str | os.PathLike, storage_options: dict | None = None) -> ArtifactStore:
    """The store at ``location``; ``storage_options`` default to ``LIFECYCLE_ARTIFACTS_OPTIONS``."""
    if isinstance(location, os.PathLike) or "://" not in location:
        return FolderArtifactStore(location)
    scheme = location.split("://", 1)[0].lower()
    if scheme == "file":
        return FolderArtifactStore(_file_url_path(location))
    if scheme not in BACKENDS:
        raise BadArtifactsLocation(f"artifacts cannot live at {location}: {scheme}:// is not a folder nor an "
                                   f"object store this code supports (a path, file://, s3://, gs:// or az://)")
    options = storage_options if storage_options is not None else options_from_env()
    try:
        # every worker writes the bucket: a cached listing would hide the others' artifacts; and each
        # store gets a client of its own, configured from the environment as it is now
        fs, root = fsspec.core.url_to_fs(location, **{**options, "use_listings_cache": False,
                                                      "skip_instance_cache": True})
    except ImportError:
        raise BadArtifactsLocation(f"artifacts at {scheme}:// need the package {BACKENDS[scheme]}, which is not "
                                   f"installed: pip install {BACKENDS[scheme]}") from None
    except (TypeError, ValueError) as exc:
        raise BadArtifactsLocation(f"cannot open the artifacts at {location}: {exc}") from None
    root = root.rstrip("/")
    if not root:
        raise BadArtifactsLocation(f"the artifacts location {location} names no bucket: give "
                                   f"{scheme}://BUCKET/PREFIX")
    return FsspecArtifactStore(fs, root)


def options_from_env() -> dict:
    """The storage options in ``LIFECYCLE_ARTIFACTS_OPTIONS`` (a JSON object), none when unset."""
    text = os.environ.get(OPTIONS_ENV, "").strip()
    if not text:
        return {}
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadArtifactsLocation(f"{OPTIONS_ENV} is not JSON ({exc}); give an object such as "
                                   '{"endpoint_url": "https://storage.example.com"}') from None
    if not isinstance(options, dict):
        raise BadArtifactsLocation(f"{OPTIONS_ENV} must be a JSON object of storage options, not "
                                   f"{type(options).__name__}")
    return options


def _file_url_path(url: str) -> str:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise BadArtifactsLocation(f"{url} is not a local file URL; write file:///absolute/path")
    if not parts.path:
        raise BadArtifactsLocation(f"{url} names no folder; write file:///absolute/path")
    return unquote(parts.path)
