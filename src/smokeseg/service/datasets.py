"""Dataset import: fetch a source into the work folder, unpack it safely, find its dataset section, check it.

Sources are a registry of URL scheme -> fetcher (a server path, ``https://``, ``s3://``); an upload is a
zip already on disk. Whatever arrives, a single ``.zip`` is unpacked with limits (member count, total
size, no member outside the folder, no links), and the dataset section comes from a Hydrogen Torch
YAML inside it when there is one, else from the folder itself (``images/`` + ``masks/``, or one table
and its images). Credentials are used for the download only: never stored, never logged.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import yaml
from pydantic import BaseModel, Field, SecretStr

from smokeseg.config.load import PATH_KEYS, config_from_dict, load_config
from smokeseg.config.schema import DatasetConfig
from smokeseg.data.check import DatasetReport, check_dataset
from smokeseg.data.formats import safe_relative_name
from smokeseg.errors import ConfigError, DataError, SmokesegError
from smokeseg.layout import CONFIG_NAME
from smokeseg.service.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    TooLargeError,
    UnsupportedError,
    megabytes,
)
from smokeseg.service.registry import Registry, datasets, experiments, new_id, now

logger = logging.getLogger(__name__)

DATASETS_FOLDER = "datasets"
_YAML_SUFFIXES = (".yaml", ".yml")
_COPY_CHUNK = 1 << 20
_SIZES_SHOWN = 5
_PROBLEMS_KEPT = 50
SMOKE_SHARE_BINS = 10


@dataclass(frozen=True)
class ImportLimits:
    """Bounds on what one import may bring in; an archive is measured member by member as it unpacks."""

    max_bytes: int = 4 << 30
    max_members: int = 200_000
    allowed_roots: tuple[Path, ...] | None = None  # None: any server path (the shell's own user)


class S3Options(BaseModel):
    """Per-import S3 settings; unset ones come from the usual AWS_* variables."""

    endpoint_url: str | None = Field(None, description="an S3-compatible server, e.g. http://127.0.0.1:9000")
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    region: str | None = None


@dataclass
class FetchContext:
    target: Path
    limits: ImportLimits
    s3: S3Options = field(default_factory=S3Options)


Fetcher = Callable[[str, FetchContext], None]


def redact(source: str) -> str:
    """The source without a ``user:password@`` part, for the database and messages."""
    parts = urlsplit(source)
    if parts.password is None and parts.username is None:
        return source
    return parts._replace(netloc=(parts.hostname or "") + (f":{parts.port}" if parts.port else "")).geturl()


def _fetch_path(source: str, context: FetchContext) -> None:
    """A folder or a zip on the server, only inside the allowed roots (symbolic links are skipped)."""
    path = Path(urlsplit(source).path if source.startswith("file://") else source).expanduser().resolve()
    roots = context.limits.allowed_roots
    if roots is not None and not any(path.is_relative_to(root.resolve()) for root in roots):
        allowed = ", ".join(map(str, roots)) or "none (start the server with --allow-root DIR)"
        raise ForbiddenError(f"{source} is outside the folders this server may import from: {allowed}.")
    if path.is_dir():
        files = [item for item in path.rglob("*") if item.is_file() and not item.is_symlink()]
        if len(files) > context.limits.max_members:
            raise TooLargeError(
                f"{source} holds {len(files)} files; the limit is {context.limits.max_members}."
            )
        _check_size(sum(item.stat().st_size for item in files), source, context.limits)
        shutil.copytree(path, context.target, ignore=_links, dirs_exist_ok=True)
    elif path.is_file():
        _check_size(path.stat().st_size, source, context.limits)
        shutil.copy2(path, context.target / path.name)
    else:
        raise DataError(f"{source} does not exist on the server (or is not a folder or a file).")


def _links(folder: str, names: list[str]) -> list[str]:
    return [name for name in names if os.path.islink(os.path.join(folder, name))]


def _fetch_https(source: str, context: FetchContext) -> None:
    """One archive over HTTPS (or plain HTTP), streamed to disk and cut off at the size limit."""
    import httpx

    name = Path(urlsplit(source).path).name or "download.zip"
    written = 0
    with httpx.stream("GET", source, follow_redirects=True, timeout=60) as response:
        if response.status_code >= 400:
            raise DataError(f"{redact(source)} answered HTTP {response.status_code}.")
        with open(context.target / safe_relative_name(name, "the download"), "wb") as out:
            for chunk in response.iter_bytes(_COPY_CHUNK):
                written += len(chunk)
                _check_size(written, redact(source), context.limits)
                out.write(chunk)


def s3_filesystem(options: S3Options) -> Any:
    """An s3fs filesystem from the per-import options, falling back to the AWS_* environment."""
    import s3fs

    endpoint = (
        options.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    )
    secret = options.secret_access_key.get_secret_value() if options.secret_access_key else None
    client_kwargs = {"region_name": options.region} if options.region else {}
    return s3fs.S3FileSystem(
        key=options.access_key_id, secret=secret, endpoint_url=endpoint, client_kwargs=client_kwargs
    )


def _fetch_s3(source: str, context: FetchContext) -> None:
    """An object (a zip) or a whole prefix (a dataset folder) from S3 or an S3-compatible server."""
    fs = s3_filesystem(context.s3)
    path = source.removeprefix("s3://").rstrip("/")
    if not fs.exists(path):
        raise DataError(f"{source} does not exist (or these credentials cannot see it).")
    if fs.isdir(path):
        sizes = fs.du(path, total=False)
        if len(sizes) > context.limits.max_members:
            raise TooLargeError(
                f"{source} holds {len(sizes)} objects; the limit is {context.limits.max_members}."
            )
        _check_size(sum(sizes.values()), source, context.limits)
        fs.get(path + "/", str(context.target) + "/", recursive=True)
    else:
        _check_size(fs.size(path), source, context.limits)
        fs.get(path, str(context.target / Path(path).name))


# URL scheme -> fetcher; a source without a scheme is a server path.
FETCHERS: dict[str, Fetcher] = {
    "": _fetch_path,
    "file": _fetch_path,
    "https": _fetch_https,
    "http": _fetch_https,
    "s3": _fetch_s3,
}


def _check_size(size: int, source: str, limits: ImportLimits) -> None:
    if size > limits.max_bytes:
        raise TooLargeError(f"{source} is over the import limit of {megabytes(limits.max_bytes)}.")


def extract_zip(archive: Path, target: Path, limits: ImportLimits) -> None:
    """Unpack ``archive`` into ``target``; members may not leave it, be links, or outgrow the limits.

    Sizes are counted as bytes are written, not taken from the headers, which a zip bomb can fake.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [info for info in zf.infolist() if not info.is_dir()]
            if len(members) > limits.max_members:
                raise TooLargeError(
                    f"{archive.name} holds {len(members)} files; the limit is {limits.max_members}."
                )
            written = 0
            for info in members:
                name = safe_relative_name(info.filename, f"archive {archive.name}")
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise DataError(
                        f"{archive.name}: member {name} is a symbolic link; archives may hold files only."
                    )
                if name.startswith("__MACOSX/"):
                    continue
                destination = target / name
                destination.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as source, open(destination, "wb") as out:
                    while chunk := source.read(_COPY_CHUNK):
                        written += len(chunk)
                        if written > limits.max_bytes:
                            raise TooLargeError(
                                f"{archive.name} unpacks to more than {megabytes(limits.max_bytes)} "
                                "(the import limit)."
                            )
                        out.write(chunk)
    except (zipfile.BadZipFile, EOFError, NotImplementedError) as error:
        raise DataError(f"{archive.name} is not a readable zip archive ({error}).") from None


def _unpack_single_archive(folder: Path, limits: ImportLimits) -> None:
    entries = list(folder.iterdir())
    if len(entries) == 1 and entries[0].is_file() and zipfile.is_zipfile(entries[0]):
        archive = entries[0]
        extract_zip(archive, folder, limits)
        archive.unlink()


def find_dataset_section(folder: Path) -> DatasetConfig:
    """The dataset section of the shallowest Hydrogen Torch YAML in ``folder``, else the folder itself.

    Every path the section names must lie inside ``folder``: an uploaded config may not point training
    at other files on the server.
    """
    for path in sorted(_yaml_files(folder), key=lambda p: (len(p.parts), p.name)):
        if _has_dataset_section(path):
            dataset = load_config(path).dataset
            _require_inside(dataset, folder, path)
            return dataset
    root = _single_subfolder(folder)
    return DatasetConfig(train_dataframe=root, data_folder=root)


def _yaml_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.suffix.lower() in _YAML_SUFFIXES and path.is_file()]


def _has_dataset_section(path: Path) -> bool:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and isinstance(data.get("dataset"), dict) and path.name != CONFIG_NAME


def _single_subfolder(folder: Path) -> Path:
    """Zipping a folder wraps everything in it: look inside when that is all there is."""
    entries = [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in {"images", "masks"}:
        return entries[0]
    return folder


def _require_inside(dataset: DatasetConfig, folder: Path, config_path: Path) -> None:
    root = folder.resolve()
    for key in PATH_KEYS:
        value = getattr(dataset, key)
        if value is not None and not Path(value).resolve().is_relative_to(root):
            raise ConfigError(
                f"{config_path.name}: dataset.{key} = {value} lies outside the imported dataset; "
                "use paths relative to the config, inside the archive or folder."
            )


def smoke_share_histogram(fractions: Sequence[float]) -> list[int]:
    """Images per tenth of smoke share (0-10%, ..., 90-100%): the dataset page's histogram."""
    counts, _ = np.histogram(fractions, bins=SMOKE_SHARE_BINS, range=(0.0, 1.0))
    return [int(count) for count in counts]


def summarize(report: DatasetReport) -> dict[str, Any]:
    """The `data check` report as JSON: per split counts, sizes and smoke share, then the problems.
    The import has every mask's smoke share at hand, so it keeps their histogram: no page decodes again."""
    splits = [
        {
            "name": split.name,
            "images": split.images,
            "with_masks": split.labelled,
            "empty_masks": split.empty_masks,
            "mean_smoke_fraction": split.mean_smoke_fraction,
            "smoke_share_histogram": smoke_share_histogram(split.smoke_fractions),
            "common_sizes": [
                {"width": width, "height": height, "images": count}
                for (width, height), count in split.sizes.most_common(_SIZES_SHOWN)
            ],
            "problems": len(split.problems),
        }
        for split in report.splits
    ]
    return {"splits": splits, "problems": report.problems[:_PROBLEMS_KEPT], "notes": report.notes}


def dataset_folder(workdir: Path, dataset_id: str) -> Path:
    return workdir / DATASETS_FOLDER / dataset_id


def import_dataset(
    registry: Registry,
    workdir: Path,
    source: str,
    name: str,
    limits: ImportLimits,
    s3: S3Options | None = None,
    fetched: Path | None = None,
) -> dict[str, Any]:
    """Fetch ``source`` (or take the already ``fetched`` upload), unpack, check and register it.

    A failed import leaves nothing behind: the files are written to a hidden folder renamed at the end.
    """
    if registry.find(datasets, name=name):
        raise ConflictError(f"A dataset named {name!r} exists already; delete it or choose another name.")
    dataset_id = new_id()
    final = dataset_folder(workdir, dataset_id)
    staging = final.with_name(f".{dataset_id}.partial")
    staging.mkdir(parents=True)
    try:
        if fetched is not None:
            shutil.move(fetched, staging / fetched.name)
        else:
            _fetch(source, FetchContext(staging, limits, s3 or S3Options()))
        _unpack_single_archive(staging, limits)
        staging.rename(final)
        section = find_dataset_section(final)
        report = check_dataset(config_from_dict({"dataset": section.model_dump(mode="json")}))
        if not report.splits[0].images:
            raise DataError(f"{redact(source)} holds no usable training image: {'; '.join(report.problems)}")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        raise
    logger.info("Imported dataset %s (%s) from %s", name, dataset_id, redact(source))
    return registry.insert(
        datasets,
        id=dataset_id,
        name=name,
        source=redact(source),
        path=str(final),
        dataset_config=section.model_dump(mode="json"),
        summary=summarize(report),
        created_at=now(),
    )


def _fetch(source: str, context: FetchContext) -> None:
    """Run the scheme's fetcher; a download that fails for any reason (refused connection, denied
    credentials, a bucket that is not there) is a problem with the source, answered as a DataError."""
    scheme = urlsplit(source).scheme.lower()
    if len(scheme) == 1:  # a Windows drive letter, not a scheme
        scheme = ""
    if scheme not in FETCHERS:
        choices = ", ".join(f"{s}://" for s in sorted(FETCHERS) if s) + ", or a server path"
        raise UnsupportedError(f"Cannot import from {redact(source)}: the source must be {choices}.")
    try:
        FETCHERS[scheme](source, context)
    except SmokesegError:
        raise
    except Exception as error:  # each library has its own errors; the user needs the reason, not a 500
        reason = str(error).replace(source, redact(source))
        raise DataError(f"Could not fetch {redact(source)}: {type(error).__name__}: {reason}") from None


def delete_dataset(registry: Registry, dataset_id: str) -> None:
    row = registry.get(datasets, dataset_id)
    if row is None:
        raise NotFoundError(f"No dataset with id {dataset_id}.")
    users = registry.find(experiments, dataset_id=dataset_id)
    if users:
        raise ConflictError(
            f"Dataset {dataset_id} is used by experiment(s) {', '.join(row['id'] for row in users)}; "
            "delete them first."
        )
    registry.delete(datasets, dataset_id)
    shutil.rmtree(row["path"], ignore_errors=True)
