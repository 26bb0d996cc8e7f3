"""Importers: image folders with a CSV manifest, PASCAL VOC annotations, zip uploads.

Each reader turns its input into ``ImageRecord`` objects that name their source (file and row);
``image_set_import`` validates every record first and then writes all of them in one
transaction, so bad input gets one clear error that lists each problem, and nothing is
half-imported (files written before a failure are deleted again).

Manifest CSV columns: ``file`` (path relative to the folder), ``categories`` (names separated
by ``;``), ``boxes`` (optional, ``category:x0,y0,x1,y1`` separated by ``;``, pixel corners with
``0 <= x0 < x1 <= width`` and ``0 <= y0 < y1 <= height``; quote the cell, as CSV requires for a
value with commas: ``"cat:0,0,32,32;dog:32,0,64,32"``).
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from xml.etree import ElementTree

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from studies.models import Image, ImageSet
from studies.services.images import ImageInfo, ImageRejected, image_validate

VOC_CATEGORIES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip
MAX_PROBLEMS_LISTED = 50
MAX_XML_BYTES = 1_000_000


class ImportRejected(ValueError):
    """The input cannot be imported; ``problems`` lists each one with its file and row."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        shown = self.problems[:MAX_PROBLEMS_LISTED]
        more = len(self.problems) - len(shown)
        text = "; ".join(shown) + (f"; and {more} more" if more else "")
        super().__init__(f"import rejected, nothing was imported: {text}")


@dataclass(frozen=True)
class Box:
    """A ground-truth box in pixel corners."""

    category: str
    x0: float
    y0: float
    x1: float
    y1: float

    def as_json(self) -> dict[str, float | str]:
        return {"category": self.category, "x0": self.x0, "y0": self.y0, "x1": self.x1, "y1": self.y1}


@dataclass
class ImageRecord:
    """One image to import, with where it came from (for error messages)."""

    name: str
    data: bytes
    categories: list[str]
    boxes: list[Box] = field(default_factory=list)
    source: str = ""
    mask: bytes | None = None


def _problem(record: ImageRecord, message: str) -> str:
    return f"{record.source or record.name}: {message}"


def _check_record(record: ImageRecord, allowed: set[str] | None) -> tuple[ImageInfo | None, list[str]]:
    problems: list[str] = []
    try:
        info: ImageInfo | None = image_validate(data=record.data, name=record.name)
    except ImageRejected as exc:
        return None, [_problem(record, f"{record.name}: {exc}")]
    if not record.categories:
        problems.append(_problem(record, "no categories given"))
    for text in (record.name, *record.categories, *(b.category for b in record.boxes)):
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
            # NUL and other control characters: no name has them, and PostgreSQL refuses NUL.
            problems.append(_problem(record, f"{text!r} contains a control character (NUL, tab, newline ...)"))
    if allowed is not None:
        unknown = sorted({c for c in record.categories if c not in allowed} | {b.category for b in record.boxes if b.category not in allowed})
        if unknown:
            problems.append(_problem(record, f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {unknown}"))
    for box in record.boxes:
        if box.category not in record.categories:
            problems.append(_problem(record, f"box category {box.category!r} is not among the image's categories"))
        inside = 0 <= box.x0 < box.x1 <= info.width and 0 <= box.y0 < box.y1 <= info.height
        if not inside:
            problems.append(
                _problem(
                    record,
                    f"box {box.category}:{box.x0:g},{box.y0:g},{box.x1:g},{box.y1:g} lies outside the "
                    f"{info.width}x{info.height} image",
                )
            )
    return info, problems


def _stored_name(prefix: str, sha256: str, extension: str) -> str:
    return f"{prefix}/{sha256[:2]}/{sha256}{extension}"


def image_set_import(
    *,
    name: str,
    records: Iterable[ImageRecord],
    source: str = ImageSet.Source.MANIFEST,
    categories: Sequence[str] | None = None,
    description: str = "",
    require_categories: int | None = None,
) -> ImageSet:
    """Validate every record, then create the image set and its images in one transaction.

    Args:
        name: slug of the new image set (must not exist yet).
        records: the images to import.
        source: where they come from (``ImageSet.Source``).
        categories: the allowed category names; ``None`` derives them from the records.
        description: free text for the admin.
        require_categories: keep only images with exactly this many distinct categories
            (the discrimination study needs 2); the others are skipped, not errors.

    Raises:
        ImportRejected: listing every problem; the database and storage are unchanged.
    """
    records = list(records)
    if ImageSet.objects.filter(name=name).exists():
        raise ImportRejected([f"an image set named {name!r} already exists"])
    if require_categories is not None:
        records = [r for r in records if len(set(r.categories)) == require_categories]
    allowed = set(categories) if categories is not None else None
    problems: list[str] = []
    infos: list[ImageInfo] = []
    seen_names: set[str] = set()
    for record in records:
        if record.name in seen_names:
            problems.append(_problem(record, f"duplicate file {record.name!r}"))
        seen_names.add(record.name)
        info, record_problems = _check_record(record, allowed)
        problems.extend(record_problems)
        if info is not None:
            infos.append(info)
    if not records and not problems:
        problems.append("no images to import" + (f" with exactly {require_categories} categories" if require_categories else ""))
    if problems:
        raise ImportRejected(problems)
    category_list = list(categories) if categories is not None else sorted({c for r in records for c in r.categories})
    written: list[str] = []
    try:
        with transaction.atomic():
            image_set = ImageSet.objects.create(
                name=name, source=source, categories=category_list, description=description
            )
            for record, info in zip(records, infos, strict=True):
                stored = _stored_name("images", info.sha256, info.extension)
                if not default_storage.exists(stored):
                    written.append(default_storage.save(stored, ContentFile(record.data)))
                mask_name = ""
                if record.mask is not None:
                    mask_sha = info.sha256 + "-mask"
                    mask_name = _stored_name("masks", mask_sha, ".png")
                    if not default_storage.exists(mask_name):
                        written.append(default_storage.save(mask_name, ContentFile(record.mask)))
                Image.objects.create(
                    image_set=image_set,
                    file=stored,
                    original_name=record.name,
                    sha256=info.sha256,
                    width=info.width,
                    height=info.height,
                    categories=list(dict.fromkeys(record.categories)),
                    boxes=[box.as_json() for box in record.boxes],
                    mask=mask_name,
                )
    except BaseException:
        for stored in written:
            default_storage.delete(stored)
        raise
    return image_set


# --- readers -------------------------------------------------------------------------------


def _parse_boxes(text: str, where: str) -> tuple[list[Box], list[str]]:
    boxes: list[Box] = []
    problems: list[str] = []
    for chunk in filter(None, (part.strip() for part in text.split(";"))):
        category, sep, coords = chunk.rpartition(":")
        numbers = coords.split(",")
        if not sep or len(numbers) != 4:
            problems.append(f"{where}: box {chunk!r} is not 'category:x0,y0,x1,y1'")
            continue
        try:
            x0, y0, x1, y1 = (float(n) for n in numbers)
        except ValueError:
            problems.append(f"{where}: box {chunk!r} has a coordinate that is not a number")
            continue
        boxes.append(Box(category.strip(), x0, y0, x1, y1))
    return boxes, problems


def _safe_relative(path_text: str) -> PurePosixPath | None:
    path = PurePosixPath(path_text.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return None
    return path


def records_from_manifest(*, folder: Path, manifest: str = "manifest.csv") -> list[ImageRecord]:
    """Read ``folder/manifest`` (see the module docstring for the columns) into records."""
    manifest_path = folder / manifest
    if not manifest_path.is_file():
        raise ImportRejected([f"{manifest}: manifest not found in {folder}"])
    try:
        text = manifest_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportRejected([f"{manifest}: not UTF-8 text ({exc})"]) from exc
    reader = csv.DictReader(io.StringIO(text))
    columns = set(reader.fieldnames or [])
    if not {"file", "categories"} <= columns:
        raise ImportRejected([f"{manifest}: needs the columns 'file' and 'categories' (found {sorted(columns)})"])
    records: list[ImageRecord] = []
    problems: list[str] = []
    for row_number, row in enumerate(reader, start=2):
        where = f"{manifest} row {row_number}"
        relative = _safe_relative((row.get("file") or "").strip())
        if relative is None:
            problems.append(f"{where}: file {row.get('file')!r} is not a relative path inside the folder")
            continue
        image_path = folder / relative
        if not image_path.is_file():
            problems.append(f"{where}: file {relative} not found")
            continue
        if image_path.stat().st_size > settings.XAISTUDY_MAX_IMAGE_BYTES:
            problems.append(
                f"{where}: {relative}: file is {image_path.stat().st_size:,} bytes, over the limit of "
                f"{settings.XAISTUDY_MAX_IMAGE_BYTES:,} bytes"
            )
            continue
        categories = [c.strip() for c in (row.get("categories") or "").split(";") if c.strip()]
        boxes, box_problems = _parse_boxes(row.get("boxes") or "", where)
        problems.extend(box_problems)
        records.append(
            ImageRecord(
                name=str(relative), data=image_path.read_bytes(), categories=categories, boxes=boxes, source=where
            )
        )
    if problems:
        raise ImportRejected(problems)
    return records


def _voc_text(node: ElementTree.Element, tag: str, where: str) -> str:
    found = node.find(tag)
    if found is None or found.text is None:
        raise ImportRejected([f"{where}: missing <{tag}>"])
    return found.text.strip()


def records_from_voc(*, folder: Path, image_dir: str = "JPEGImages", annotation_dir: str = "Annotations") -> list[ImageRecord]:
    """Read PASCAL VOC XML annotations (``Annotations/*.xml``) and their images into records.

    Each ``<object>`` contributes its ``<name>`` to the image's categories and its
    ``<bndbox>`` (VOC's 1-based inclusive corners, converted to 0-based half-open) to the boxes.
    Objects marked ``<difficult>1</difficult>`` are kept (the boxes are still ground truth).
    """
    annotations = sorted((folder / annotation_dir).glob("*.xml"))
    if not annotations:
        raise ImportRejected([f"{annotation_dir}/: no .xml annotations found in {folder}"])
    records: list[ImageRecord] = []
    problems: list[str] = []
    for xml_path in annotations:
        where = f"{annotation_dir}/{xml_path.name}"
        if xml_path.stat().st_size > MAX_XML_BYTES:
            problems.append(f"{where}: annotation is over {MAX_XML_BYTES:,} bytes")
            continue
        try:
            root = ElementTree.fromstring(xml_path.read_bytes())
            filename = _voc_text(root, "filename", where)
            categories: list[str] = []
            boxes: list[Box] = []
            for obj in root.findall("object"):
                category = _voc_text(obj, "name", where)
                categories.append(category)
                bndbox = obj.find("bndbox")
                if bndbox is not None:
                    x0, y0, x1, y1 = (float(_voc_text(bndbox, tag, where)) for tag in ("xmin", "ymin", "xmax", "ymax"))
                    boxes.append(Box(category, x0 - 1, y0 - 1, x1, y1))
        except ElementTree.ParseError as exc:
            problems.append(f"{where}: not well-formed XML ({exc})")
            continue
        except ImportRejected as exc:
            problems.extend(exc.problems)
            continue
        except ValueError as exc:
            problems.append(f"{where}: a box coordinate is not a number ({exc})")
            continue
        relative = _safe_relative(filename)
        image_path = folder / image_dir / relative if relative else None
        if image_path is None or not image_path.is_file():
            problems.append(f"{where}: image {image_dir}/{filename} not found")
            continue
        records.append(
            ImageRecord(
                name=str(relative),
                data=image_path.read_bytes(),
                categories=list(dict.fromkeys(categories)),
                boxes=boxes,
                source=where,
            )
        )
    if problems:
        raise ImportRejected(problems)
    return records


def zip_extract(*, data: bytes, destination: Path) -> Path:
    """Unpack an uploaded zip safely into ``destination`` and return the folder holding it.

    Rejects archives over ``XAISTUDY_MAX_UPLOAD_BYTES`` (compressed or uncompressed), entries that
    escape the destination (absolute paths, ``..``), and anything that is not a zip file.
    """
    limit = settings.XAISTUDY_MAX_UPLOAD_BYTES
    if len(data) > limit:
        raise ImportRejected([f"upload is {len(data):,} bytes, over the limit of {limit:,} bytes"])
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ImportRejected([f"upload is not a zip archive ({exc})"]) from exc
    with archive:
        members = archive.infolist()
        total = sum(member.file_size for member in members)
        if total > limit:
            raise ImportRejected([f"archive unpacks to {total:,} bytes, over the limit of {limit:,} bytes"])
        for member in members:
            relative = _safe_relative(member.filename)
            if relative is None:
                raise ImportRejected([f"archive entry {member.filename!r} escapes the archive folder"])
            target = destination / relative
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, target.open("wb") as sink:
                remaining = member.file_size + 1
                while chunk := source.read(min(1 << 20, remaining)):
                    remaining -= len(chunk)
                    if remaining <= 0:
                        raise ImportRejected([f"archive entry {member.filename!r} is larger than it declares"])
                    sink.write(chunk)
    entries = [p for p in destination.iterdir() if not p.name.startswith(("__MACOSX", "."))]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return destination


def records_from_folder(*, folder: Path) -> tuple[list[ImageRecord], str]:
    """Detect the layout of ``folder`` (VOC or manifest) and read it; returns records and source."""
    if (folder / "Annotations").is_dir():
        return records_from_voc(folder=folder), ImageSet.Source.VOC
    return records_from_manifest(folder=folder), ImageSet.Source.MANIFEST
